"""A real `lakeio ingest` process killed with SIGKILL mid-run, then rerun."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import lakeio
from lakeio.format.location import Location
from lakeio.format.segment import read_segment_summary
from lakeio.testing.images import write_image_folder

LAKEIO = [str(Path(sys.executable).with_name("lakeio"))]


def _cli(*args, **kw):
    return subprocess.run(
        [*LAKEIO, *map(str, args)], capture_output=True, text=True, timeout=120, **kw
    )


def _complete_segments(lake: Path) -> int:
    seg_dir = lake / "segments"
    if not seg_dir.is_dir():
        return 0
    loc = Location.of(lake)
    return sum(1 for d in seg_dir.iterdir() if d.is_dir() and read_segment_summary(loc, d.name))


def _columns(lake):
    ds = lakeio.open_dataset(lake)
    arrays = ds.to_dask()
    return {k: v.compute() for k, v in arrays.items()}, [s.id for s in ds.manifest.segments]


def test_killed_ingest_leaves_old_lake_and_resumes_to_identical_lake(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    write_image_folder(first, 40, size=(32, 32), fmt="png", seed=1, photos=("coffee", "rocket"))
    write_image_folder(second, 600, size=(32, 32), fmt="jpg", seed=2, photos=("chelsea", "coffee"))
    # A named pipe sorts last: the final segment blocks reading it, so the run is certain to be
    # killed after the other segments are written and before any commit (no timing race).
    blocker = second / "coffee" / "zzzz.jpg"
    os.mkfifo(blocker)
    lake, reference = tmp_path / "lake", tmp_path / "reference"
    common = ["--workers", "1", "--chunk-samples", "4", "--size", "32x32", "--quiet"]
    assert _cli("ingest", first, lake, *common).returncode == 0
    manifest_before = (lake / "_lakeio/manifests/v00000001.json").read_bytes()
    before, _ = _columns(lake)

    proc = subprocess.Popen(
        [*LAKEIO, "ingest", str(second), str(lake), "--append", *common],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        done, stable_since, deadline = 0, time.monotonic(), time.monotonic() + 90
        while time.monotonic() < deadline:  # wait until the writers are stuck on the pipe
            assert proc.poll() is None, proc.stderr.read().decode()
            now = _complete_segments(lake)
            if now != done:
                done, stable_since = now, time.monotonic()
            elif done >= 10 + 2 and time.monotonic() - stable_since > 1.5:
                break
            time.sleep(0.05)
        assert done >= 12, f"only {done - 10} segments were written before the run stalled"
    finally:  # the CLI, its cluster and its workers, all at once; also if anything above failed
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    assert sorted(p.name for p in (lake / "_lakeio/manifests").glob("v*.json")) == [
        "v00000001.json"
    ]
    assert (lake / "_lakeio/manifests/v00000001.json").read_bytes() == manifest_before
    after_kill, _ = _columns(lake)
    for name in before:
        np.testing.assert_array_equal(after_kill[name], before[name])

    blocker.unlink()
    shutil.copy(second / "coffee" / "000001.jpg", blocker)  # the file is there now
    resumed = _cli("ingest", second, lake, "--append", *common)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({done - 10} of 19 segments resumed from an earlier run)" in resumed.stdout
    assert _cli("ingest", first, reference, *common).returncode == 0
    assert _cli("ingest", second, reference, "--append", *common).returncode == 0
    got, got_ids = _columns(lake)
    want, want_ids = _columns(reference)
    assert got_ids == want_ids
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    assert len(got["labels"]) == 641
