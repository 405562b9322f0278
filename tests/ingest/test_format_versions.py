"""Appends and format versions: a lake keeps its version, a race with `lakeio upgrade` or with
the same append leaves one readable lake, and a rerun after an upgrade changes nothing."""

import json

import numpy as np
import pytest

import lakeio
from lakeio.errors import IngestError
from lakeio.format.location import Location
from lakeio.format.manifest import manifest_key, manifest_versions, read_manifest
from lakeio.format.segment import write_segment
from lakeio.ingest.commit import publish
from lakeio.ingest.decode import DecodeOptions
from lakeio.ingest.layout import Layout
from lakeio.testing.lakes import labelled_arrays


def _lake(path, data, **kw):
    images, labels = data
    lakeio.ingest(images, path, labels=labels, chunk_samples=8, progress=False, echo=None, **kw)
    return Location.of(path)


def _written_segment(loc: Location, base, data, segment_id: str) -> dict:
    """A segment written into the lake as an ingest task writes it: its result for the commit."""
    images, labels = data
    columns = {
        "images": images,
        "labels": labels,
        "paths": np.array([f"x/{i}" for i in range(len(labels))], dtype=object),
    }
    counts = np.bincount(labels, minlength=len(base.classes)).tolist()
    facts = {"class_counts": counts, "source_bytes": 0, "decoded_bytes": int(images.nbytes)}
    stored = write_segment(loc, segment_id, columns, base.fields, base.chunk_samples, facts)
    return {**facts, "segment_id": segment_id, "samples": len(labels), "stored_bytes": stored}


class _Task:
    def __init__(self, segment_id: str) -> None:
        self.segment_id = segment_id


def _append_from(loc: Location, base, results: list[dict], format_version: int):
    """Commit ``results`` as an append planned against ``base`` (as `lakeio.ingest` does)."""
    layout = Layout(base.fields, base.classes, base.chunk_samples, DecodeOptions(), format_version)
    tasks = [_Task(r["segment_id"]) for r in results]
    return publish(loc, base, layout, tasks, results, "append", {"op": "ingest", "mode": "append"})


def test_an_append_that_loses_the_race_to_an_upgrade_commits_version_2(tmp_path):
    first, extra = labelled_arrays(40, 1), labelled_arrays(12, 2)
    loc = _lake(tmp_path / "lake", first, format_version=1)
    base = read_manifest(loc)  # the append plans against version 1 ...
    result = _written_segment(loc, base, extra, "s900000-extra")
    lakeio.upgrade(tmp_path / "lake")  # ... and an upgrade commits version 2 first
    committed = _append_from(loc, base, [result], format_version=1)
    assert committed.version == 3 and committed.format_version == 2
    doc = json.loads((tmp_path / "lake" / manifest_key(3)).read_bytes())
    assert doc["format_version"] == 2 and len(doc["fragments"]) == 2
    labels = np.concatenate([first[1], extra[1]])
    assert doc["class_counts"] == np.bincount(labels, minlength=3).tolist()
    ds = lakeio.open_dataset(tmp_path / "lake")
    np.testing.assert_array_equal(ds.to_dask()["labels"].compute(), labels)


def test_the_same_append_committed_twice_at_once_lands_once(tmp_path):
    loc = _lake(tmp_path / "lake", labelled_arrays(40, 3))
    base = read_manifest(loc)
    result = _written_segment(loc, base, labelled_arrays(12, 4), "s900000-same")
    first = _append_from(loc, base, [result], format_version=2)
    second = _append_from(loc, base, [result], format_version=2)  # conflicts, finds it there
    assert first.version == second.version == 2 and manifest_versions(loc) == [1, 2]
    assert read_manifest(loc).samples == 52
    other = _written_segment(loc, base, labelled_arrays(8, 5), "s900001-other")
    with pytest.raises(IngestError, match="already holds 1 of its 2 segments; nothing of this"):
        _append_from(loc, base, [result, other], format_version=2)
    assert manifest_versions(loc) == [1, 2]


def test_an_append_keeps_the_lakes_format_version(tmp_path):
    _lake(tmp_path / "lake", labelled_arrays(20, 6))
    with pytest.raises(IngestError, match="lake of format version 2; an append keeps it"):
        _lake(tmp_path / "lake", labelled_arrays(8, 7), mode="append", format_version=1)
    assert manifest_versions(Location.of(tmp_path / "lake")) == [1]


def test_rerunning_an_ingest_after_an_upgrade_changes_nothing(tmp_path):
    """600 chunks: version 1 cuts segments of 8 chunks, version 2 of 10. The rerun of the
    ingest made before the upgrade finds its version-1 segments."""
    data = labelled_arrays(600, 8, shape=(2, 2, 3))

    def ingest(**kw):
        images, labels = data
        return lakeio.ingest(images, tmp_path / "lake", labels=labels, chunk_samples=1,
                             progress=False, echo=None, **kw)  # fmt: skip

    ingest(format_version=1)
    lakeio.upgrade(tmp_path / "lake")
    again = ingest(mode="append")
    assert again.up_to_date and again.lake_samples == 600
    assert manifest_versions(Location.of(tmp_path / "lake")) == [1, 2]
