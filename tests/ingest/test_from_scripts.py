"""`lakeio.ingest` called from a script file, with and without `if __name__ == "__main__":`."""

import subprocess
import sys
import textwrap

import numpy as np

import lakeio
from lakeio.cluster.connect import unguarded_script_line


def _run_script(tmp_path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "train_prep.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


def test_an_unguarded_array_ingest_runs_without_worker_processes(tmp_path):
    run = _run_script(
        tmp_path,
        """
        import numpy as np
        import lakeio

        images = np.arange(50 * 8 * 8 * 3, dtype=np.uint8).reshape(50, 8, 8, 3)
        lakeio.ingest(images, "lake", labels=np.arange(50) % 5, progress=False, echo=None)
        print("done")
        """,
    )
    assert run.returncode == 0, run.stderr
    assert "Nanny failed" not in run.stderr
    ds = lakeio.open_dataset(tmp_path / "lake")
    expected = np.arange(50 * 8 * 8 * 3, dtype=np.uint8).reshape(50, 8, 8, 3)
    np.testing.assert_array_equal(ds.to_dask()["images"].compute(), expected)


def test_an_unguarded_folder_ingest_says_in_one_line_what_to_change(tmp_path, png_folder):
    run = _run_script(
        tmp_path,
        f"""
        import dask.config
        import lakeio

        dask.config.set({{"lakeio.ingest.in-process-below": 100}})  # the folder has 120 files
        lakeio.ingest({str(png_folder[0])!r}, "lake", workers=2, progress=False, echo=None)
        """,
    )
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert "train_prep.py:6" in last and 'if __name__ == "__main__":' in last, run.stderr
    assert "Nanny failed" not in run.stderr  # refused before any worker process started
    assert not (tmp_path / "lake").exists()


def test_an_unguarded_small_folder_ingest_runs_on_threads(tmp_path, png_folder):
    """Below lakeio.ingest.in-process-below files no worker process starts, so no guard is needed."""
    root, written = png_folder
    run = _run_script(
        tmp_path,
        f"""
        import lakeio

        lakeio.ingest({str(root)!r}, "lake", workers=2, progress=False)
        """,
    )
    assert run.returncode == 0, run.stderr
    assert "worker threads in this process" in run.stdout
    ds = lakeio.open_dataset(tmp_path / "lake")
    pixels = {rel: image for rel, image, _ in written}
    assert len(ds) == len(written) == 120
    for i in range(0, 120, 7):
        np.testing.assert_array_equal(ds[i][0], pixels[ds.sample(i, ("paths",))["paths"]])


def test_guarded_calls_and_calls_from_functions_under_the_guard_are_not_flagged(tmp_path):
    body = """
        import sys
        from lakeio.cluster.connect import unguarded_script_line

        def build():
            return unguarded_script_line()

        top = unguarded_script_line()
        if __name__ == "__main__":
            print(repr(top), repr(build()), repr(unguarded_script_line()), end=" ")
        try:
            if "run" in sys.argv[0] or __name__ == "__main__" and len(sys.argv) == 1:
                print(repr(unguarded_script_line()))
        finally:
            pass
        """
    run = _run_script(tmp_path, body)
    assert run.returncode == 0, run.stderr
    top, in_function, guarded, in_try = run.stdout.split()
    assert top.endswith(":8'") and in_function == "None" and guarded == "None"
    assert in_try == "None"  # a guard combined with other tests, inside a try block
    assert unguarded_script_line() is None  # pytest's own __main__ is not a script calling us
