"""A destination that fails at the commit, or just after it: one clear outcome each."""

import errno

import numpy as np
import pytest

import lakeio
from lakeio.errors import IngestError, LakeNotFoundError, LakeWarning
from lakeio.testing.faults import FAULTS

IMAGES = np.random.default_rng(0).integers(0, 255, (30, 8, 8, 3), dtype=np.uint8)
LABELS = np.arange(30) % 3


@pytest.fixture(autouse=True)
def _no_faults_left():
    FAULTS.reset()
    yield
    FAULTS.reset()


def _no_space(path: str) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", path)


def _ingest(url, **kw):
    return lakeio.ingest(IMAGES, url, labels=LABELS, chunk_samples=10, progress=False,
                         echo=None, **kw)  # fmt: skip


def test_a_destination_full_at_the_commit_says_so_and_the_rerun_commits(tmp_path):
    url = f"faulty://{tmp_path}/lake"
    FAULTS.arm("_lakeio/manifests/", times=1, error=_no_space, on="write")
    with pytest.raises(IngestError) as err:
        _ingest(url)
    message = str(err.value)
    assert "the destination is full" in message and "Nothing was committed" in message
    assert "v00000001.json" in message
    with pytest.raises(LakeNotFoundError):
        lakeio.open_dataset(url)
    summary = _ingest(url)  # space freed: the same command resumes and commits
    assert summary.reused_segments == summary.segments > 0
    np.testing.assert_array_equal(
        lakeio.open_dataset(url).to_dask()["images"].compute(scheduler="sync"), IMAGES
    )


def test_a_failure_just_after_the_commit_is_a_warning_not_an_error(tmp_path):
    url = f"faulty://{tmp_path}/lake"
    _ingest(url)
    FAULTS.arm(f"{tmp_path}/lake/zarr.json", times=1, error=_no_space, on="write")
    with pytest.warns(LakeWarning, match="version 2 is committed"):
        summary = lakeio.ingest(255 - IMAGES, url, labels=LABELS, mode="append",
                                progress=False, echo=None)  # fmt: skip
    assert summary.version == 2 and FAULTS.injected == 1
    assert len(lakeio.open_dataset(url)) == 60


def test_a_damaged_root_group_after_the_commit_is_a_warning(tmp_path):
    lake = tmp_path / "lake"
    _ingest(lake)
    (lake / "zarr.json").write_text("{not json")  # the convenience copy only
    with pytest.warns(LakeWarning, match="version 2 is committed.*root summary"):
        summary = lakeio.ingest(255 - IMAGES, lake, labels=LABELS, mode="append",
                                progress=False, echo=None)  # fmt: skip
    assert summary.version == 2 and len(lakeio.open_dataset(lake)) == 60


def test_an_append_overtaken_by_an_overwrite_with_another_layout_is_refused(tmp_path, monkeypatch):
    from lakeio.ingest import commit

    lake, real = tmp_path / "lake", commit.commit_manifest
    _ingest(lake)
    bigger = np.zeros((10, 16, 16, 3), np.uint8)

    def overwrite_lands_first(dest, candidate):
        monkeypatch.setattr(commit, "commit_manifest", real)
        lakeio.ingest(bigger, lake, labels=np.zeros(10, int), mode="overwrite",
                      progress=False, echo=None)  # fmt: skip
        return real(dest, candidate)  # a conflict now: the append re-reads version 2

    monkeypatch.setattr(commit, "commit_manifest", overwrite_lands_first)
    with pytest.raises(IngestError, match="another layout"):
        lakeio.ingest(255 - IMAGES, lake, labels=LABELS, mode="append", progress=False, echo=None)
    ds = lakeio.open_dataset(lake)
    assert ds.manifest.version == 2 and ds.manifest.fields["images"].shape == (16, 16, 3)
