"""The `lakeio` command as users run it: real processes, real local clusters."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lakeio
from lakeio.cli import build_parser
from lakeio.testing.images import write_image_folder

LAKEIO = [str(Path(sys.executable).with_name("lakeio"))]
FORCE_PROCESSES = {"DASK_LAKEIO__INGEST__IN_PROCESS_BELOW": "0"}


def _cli(*args, env=None):
    env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*LAKEIO, *map(str, args)], capture_output=True, text=True, timeout=180, env=env
    )


@pytest.fixture(scope="module")
def cli_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_image_folder(
        root / "src", 60, size=(40, 48), fmt="jpg", seed=4, photos=("coffee", "rocket", "chelsea")
    )
    (root / "src" / "rocket" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    run = _cli(
        "ingest",
        root / "src",
        root / "lake",
        "--workers",
        "2",
        "--size",
        "32x32",
        "--codec",
        "blosc-zstd:5:bitshuffle",
        "--chunk-samples",
        "16",
        env=FORCE_PROCESSES,  # 61 files would run on threads; this is the worker-process path
    )
    return root, run


def test_ingest_prints_dashboard_progress_and_summary(cli_lake):
    _, run = cli_lake
    assert run.returncode == 0, run.stderr
    assert "Dask dashboard: http://" in run.stdout
    assert "lakeio ingest" in run.stderr and "img" in run.stderr  # the progress bar
    for figure in (
        "images written   60",
        "images rejected  1",
        "bytes in",
        "bytes stored",
        "compression",
        "images/s",
    ):
        assert figure in run.stdout


def test_a_small_folder_ingests_on_threads_in_the_cli_process_without_a_dashboard(tmp_path):
    written = write_image_folder(tmp_path / "src", 12, size=(16, 16), fmt="png", seed=7)
    run = _cli("ingest", tmp_path / "src", tmp_path / "lake", "--workers", "2", "--quiet")
    assert run.returncode == 0, run.stderr
    assert "Dask: 2 worker threads in this process (a small job: no dashboard)" in run.stdout
    assert "dashboard:" not in run.stdout and "images written   12" in run.stdout
    ds = lakeio.open_dataset(tmp_path / "lake")
    pixels = {rel: image for rel, image, _ in written}
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds[i][0], pixels[ds.sample(i, ("paths",))["paths"]])
    assert len(ds) == 12


def test_info_lists_fields_codec_classes_and_ratio(cli_lake):
    root, _ = cli_lake
    info = json.loads(_cli("info", root / "lake", "--json").stdout)
    assert info["samples"] == 60
    assert info["fields"]["images"] == {
        "dtype": "uint8",
        "shape": [60, 32, 32, 3],
        "chunks": [16, 32, 32, 3],
        "codec": "blosc-zstd:5:bitshuffle",
    }
    assert info["classes"] == {"chelsea": 20, "coffee": 20, "rocket": 20}
    assert info["ratio"] > 1.0
    text = _cli("info", root / "lake").stdout
    assert "images   uint8" in text and "rocket" in text and "ratio" in text


def test_verify_passes_then_names_the_corrupted_chunk(cli_lake, tmp_path):
    root, _ = cli_lake
    ok = _cli("verify", root / "lake", "--quiet")
    assert ok.returncode == 0 and "OK" in ok.stdout
    import shutil

    lake = tmp_path / "lake"
    shutil.copytree(root / "lake", lake)
    segment = sorted((lake / "segments").iterdir())[0]
    chunk = segment / "images" / "c.0.0.0.0"
    data = bytearray(chunk.read_bytes())
    data[20] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (segment / "labels" / "c.0").unlink()
    bad = _cli("verify", lake, "--quiet")
    assert bad.returncode == 1
    assert f"BAD segments/{segment.name}/images/c.0.0.0.0: checksum mismatch" in bad.stdout
    assert f"BAD segments/{segment.name}/labels/c.0: missing from the store" in bad.stdout
    assert "2 problems" in bad.stdout


def test_bad_codec_is_one_clear_line_listing_valid_codecs(tmp_path):
    run = _cli("ingest", tmp_path, tmp_path / "lake", "--codec", "brotli")
    assert run.returncode == 1
    assert run.stderr.strip().startswith("lakeio: error: unknown codec 'brotli'; valid: none, lz4")
    assert "Traceback" not in run.stderr


def test_codecs_command_lists_every_spec():
    out = _cli("codecs").stdout
    for syntax in (
        "none",
        "lz4[:LEVEL]",
        "zstd[:LEVEL]",
        "blosc-lz4[:LEVEL[:SHUFFLE]]",
        "blosc-zstd[:LEVEL[:SHUFFLE]]",
    ):
        assert syntax in out


def test_missing_lake_is_a_clear_error(tmp_path):
    run = _cli("info", tmp_path / "nothing")
    assert run.returncode == 1 and "no lake here" in run.stderr and "Traceback" not in run.stderr


def test_every_option_has_help_text():
    parser = build_parser()
    subparsers = next(
        a
        for a in parser._actions
        if a.dest == "==SUPPRESS==" or a.__class__.__name__ == "_SubParsersAction"
    )
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"lakeio {name} {action.option_strings[0]} has no help"


def test_ingest_on_an_existing_cluster_with_scheduler(cluster_address, tmp_path):
    write_image_folder(
        tmp_path / "src", 30, size=(16, 16), fmt="png", seed=8, photos=("coffee", "rocket")
    )
    run = _cli(
        "ingest", tmp_path / "src", tmp_path / "lake", "--scheduler", cluster_address, "--quiet"
    )
    assert run.returncode == 0, run.stderr
    assert "(2 workers)" in run.stdout and "images written   30" in run.stdout
    info = json.loads(_cli("info", tmp_path / "lake", "--json").stdout)
    assert info["classes"] == {"coffee": 15, "rocket": 15}


def test_errors_from_anywhere_are_one_line(tmp_path):
    import numpy as np

    np.savez(tmp_path / "flat.npz", images=np.zeros((4, 8), np.uint8), labels=np.zeros(4, np.int64))
    for args, text in [
        (("info", tmp_path / "flat.npz"), "no lake here"),
        (("ingest", tmp_path / "flat.npz", tmp_path / "lake"), "expected (N, H, W)"),
        (("ingest", tmp_path / "x.npy", tmp_path / "lake2"), "file not found"),
    ]:
        run = _cli(*args)
        assert run.returncode == 1, run.stderr
        assert text in run.stderr and "Traceback" not in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_bad_option_values_are_refused_up_front(tmp_path):
    (tmp_path / "src" / "cls").mkdir(parents=True)
    workers = _cli("ingest", tmp_path / "src", tmp_path / "lake", "--workers", "-3")
    assert workers.returncode == 2 and "--workers: must be at least 1" in workers.stderr
    pixels = _cli("ingest", tmp_path / "src", tmp_path / "lake", "--max-pixels", "0")
    assert pixels.returncode == 1 and "max_pixels must be >= 1" in pixels.stderr
    labels = _cli("ingest", tmp_path / "src", tmp_path / "lake", "--labels", "y.npy")
    assert labels.returncode == 1 and "--labels applies to a .npy source only" in labels.stderr
    assert not (tmp_path / "lake").exists()


def test_unreachable_scheduler_is_one_line():
    quick = {"DASK_LAKEIO__CONNECT_TIMEOUT": "2s"}  # lakeio's connect timeout lives in dask.config
    run = _cli("ingest", ".", "/tmp/never", "--scheduler", "tcp://127.0.0.1:1", env=quick)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert (
        run.stderr.strip().startswith("lakeio: error:")
        and len(run.stderr.strip().splitlines()) == 1
    )
