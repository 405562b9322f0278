"""--on-error fail: whatever is wrong with a file, the ingest stops naming it and commits nothing."""

import os

import dask.config
import pytest
from distributed import Client

import lakeio
from lakeio.errors import IngestError, LakeNotFoundError
from lakeio.testing.faults import FAULTS
from lakeio.testing.images import write_image_folder


@pytest.fixture(scope="module")
def threads():
    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def _spoil(root, kind: str) -> str:
    """Make one file of the folder bad in the way ``kind`` says; returns its name as shown."""
    good = root / "coffee" / "000001.png"
    if kind == "corrupt":
        good.write_bytes(good.read_bytes()[:60])
        return "coffee/000001.png"
    if kind == "odd-name-and-corrupt":
        os.rename(os.fsencode(good), os.fsencode(root / "coffee") + b"/bad\xff\xfe.png")
        with open(os.fsencode(root / "coffee") + b"/bad\xff\xfe.png", "r+b") as fh:
            fh.truncate(60)
        return "coffee/bad\\xff\\xfe.png"
    FAULTS.arm("coffee/000001.png", times=10**9)  # "unreadable": the network stays down
    return "coffee/000001.png"


@pytest.mark.parametrize("kind", ["corrupt", "odd-name-and-corrupt", "unreadable"])
def test_on_error_fail_stops_naming_the_file_and_commits_nothing(kind, tmp_path, threads):
    write_image_folder(tmp_path / "src", 24, size=(16, 16), fmt="png", seed=9)
    shown = _spoil(tmp_path / "src", kind)
    try:
        with dask.config.set({"lakeio.read.deadline": 0.2}), pytest.raises(IngestError) as err:
            lakeio.ingest(
                f"faulty://{tmp_path / 'src'}", tmp_path / "lake", cluster=threads,
                on_error="fail", chunk_samples=4, progress=False, echo=None,
            )  # fmt: skip
    finally:
        FAULTS.reset()
    message = str(err.value)
    assert message.startswith(shown + ":"), message
    assert "nothing was committed" in message.lower()
    with pytest.raises(LakeNotFoundError):
        lakeio.open_dataset(tmp_path / "lake")
