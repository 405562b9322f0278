"""An ingest whose workers are "on other machines": each worker process sees its own empty
tmpfs at the destination (a mount namespace of its own), as a remote worker sees its own disk."""

import subprocess
import sys
from pathlib import Path

import pytest

import lakeio
from lakeio.errors import LakeNotFoundError
from lakeio.testing.cluster import process_cluster

LAKEIO = str(Path(sys.executable).with_name("lakeio"))


@pytest.fixture(scope="module")
def remote_workers(tmp_path_factory):
    """Two worker processes, each with a private /…/dest: (scheduler address, dest folder)."""
    dest = tmp_path_factory.mktemp("dest")
    with process_cluster(n_workers=2, private_dirs=(str(dest),)) as address:
        yield address, dest


def _ingest(src, dest, address):
    return subprocess.run(
        [LAKEIO, "ingest", str(src), str(dest), "--scheduler", address],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_local_destination_the_client_cannot_see_is_refused_before_commit(
    png_folder, remote_workers
):
    address, dest = remote_workers
    run = _ingest(png_folder[0], dest / "lake", address)
    assert run.returncode != 0, run.stdout
    message = run.stderr.strip().splitlines()[-1]
    assert "not visible from this machine" in message and "nothing was committed" in message
    assert "share" in message and "s3://" in message
    with pytest.raises(LakeNotFoundError):
        lakeio.open_dataset(dest / "lake")


def test_the_same_workers_ingest_into_a_destination_everyone_sees(
    png_folder, remote_workers, tmp_path
):
    address, _ = remote_workers
    run = _ingest(png_folder[0], tmp_path / "lake", address)
    assert run.returncode == 0, run.stderr
    assert len(lakeio.open_dataset(tmp_path / "lake")) == len(png_folder[1])
