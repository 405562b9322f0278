"""Concurrent commits to one lake: every writer's segments land, on disk and in a bucket."""

import dataclasses
import threading
import uuid

import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import register_implementation

import lakeio
from lakeio.errors import CommitConflictError, IngestError, LakeError
from lakeio.format.location import Location
from lakeio.format.manifest import (
    Manifest,
    SegmentEntry,
    commit_manifest,
    manifest_from_json,
    read_manifest,
)

WRITERS = 6


def _empty_lake(loc: Location) -> Manifest:
    from lakeio.format.manifest import FieldInfo

    fields = {
        "images": FieldInfo(dtype="uint8", shape=(2, 2, 3), codec="zstd:3"),
        "labels": FieldInfo(dtype="int64", shape=(), codec="zstd:3"),
    }
    return commit_manifest(loc, Manifest(fields=fields, classes=("a",), chunk_samples=8))


def _append(loc: Location, segment: str, start: threading.Barrier) -> int:
    """Commit one more segment the way an append does: read, build, commit, retry on conflict."""
    start.wait()
    conflicts = 0
    for _ in range(10 * WRITERS):  # each conflict means another writer landed: bounded
        base = read_manifest(loc)
        entry = SegmentEntry(id=segment, samples=1, class_counts=(1,))
        try:
            commit_manifest(loc, base.with_segments((*base.segments, entry), {"op": segment}))
            return conflicts
        except CommitConflictError:
            conflicts += 1
    raise AssertionError(f"{segment}: no commit after {conflicts} conflicts")


def _race(loc: Location) -> tuple[Manifest, int]:
    start = threading.Barrier(WRITERS)
    conflicts = []
    threads = [
        threading.Thread(target=lambda i=i: conflicts.append(_append(loc, f"w{i}", start)))
        for i in range(WRITERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and len(conflicts) == WRITERS
    return read_manifest(loc), sum(conflicts)


@pytest.mark.parametrize("where", ["disk", "s3"])
def test_racing_appends_all_land_each_in_its_own_version(where, tmp_path, s3_options):
    if where == "disk":
        loc = Location.of(tmp_path / "lake")
    else:
        loc = Location.of(f"s3://lakeio-test/race-{tmp_path.name}.lake", s3_options)
    _empty_lake(loc)
    final, conflicts = _race(loc)
    assert sorted(s.id for s in final.segments) == [f"w{i}" for i in range(WRITERS)]
    assert final.version == 1 + WRITERS
    assert conflicts >= 1  # they really raced: at least one lost a version and retried
    ops = [h["op"] for h in final.history]
    assert sorted(ops) == sorted(f"w{i}" for i in range(WRITERS))


def test_two_concurrent_ingest_appends_to_a_bucket_both_land(client, s3_options, tmp_path):
    url = f"s3://lakeio-test/appends-{tmp_path.name}.lake"
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8) for _ in range(3)]
    common = {"cluster": client, "storage_options": s3_options, "progress": False, "echo": None}
    lakeio.ingest(parts[0], url, labels=np.zeros(40, int), **common)
    results, errors = [], []

    def append(images, label):
        try:
            results.append(
                lakeio.ingest(images, url, labels=np.full(40, label), mode="append", **common)
            )
        except Exception as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(parts[i], i)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert sorted(r.version for r in results) == [2, 3]
    ds = lakeio.open_dataset(url, storage_options=s3_options)
    assert len(ds) == 120
    got = ds.to_dask()["images"].compute()
    by_label = {int(label): got[ds.to_dask()["labels"].compute() == label] for label in (1, 2)}
    for label in (1, 2):
        np.testing.assert_array_equal(by_label[label], parts[label])


class _LastWriterWins(MemoryFileSystem):
    """A store like s3fs 2024.6-2024.11: ``mode="create"`` is dropped, the write overwrites,
    and here a rival writer's manifest lands right after each one of ours."""

    protocol = "lastwriterwins"
    rivals = 0

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        super().pipe_file(path, value)
        if "/manifests/" in path and _LastWriterWins.rivals > 0:
            _LastWriterWins.rivals -= 1
            theirs = manifest_from_json(value, path)  # a well-formed manifest of another writer
            rival = dataclasses.replace(theirs, history=(*theirs.history[:-1], {"op": "rival"}))
            super().pipe_file(path, rival.to_json())


register_implementation(_LastWriterWins.protocol, _LastWriterWins, clobber=True)


def test_a_commit_replaced_by_another_writer_is_a_conflict_not_a_success():
    loc = Location.of(f"lastwriterwins://{uuid.uuid4().hex}/lake")  # the store is per process
    base = _empty_lake(loc)
    _LastWriterWins.rivals = 1
    with pytest.raises(CommitConflictError, match="replaced"):
        commit_manifest(loc, base.with_segments(base.segments, {"op": "mine"}))
    assert read_manifest(loc).history[-1]["op"] == "rival"


def test_an_s3fs_that_ignores_exclusive_creates_is_refused(s3_options, monkeypatch):
    import s3fs

    monkeypatch.setattr(s3fs, "__version__", "2024.9.0")
    loc = Location.of("s3://lakeio-test/old-s3fs.lake", s3_options)
    with pytest.raises(LakeError, match=r"s3fs 2024\.9\.0 .*s3fs>=2024\.12"):
        loc.create_exclusive("_lakeio/manifests/v00000001.json", b"{}")
    assert not loc.exists("_lakeio/manifests/v00000001.json")


def test_racing_appends_merge_class_lists_that_extend_each_other_and_refuse_others():
    from lakeio.ingest.commit import _merged_classes

    loc = Location.of("memory://lake")
    assert _merged_classes(loc, ("a", "b", "c"), ("a", "b")) == ("a", "b", "c")
    assert _merged_classes(loc, ("a",), ("a", "d")) == ("a", "d")
    with pytest.raises(IngestError, match=r"other names .*'a', 'd'.* rerun it"):
        _merged_classes(loc, ("a", "b"), ("a", "d"))
