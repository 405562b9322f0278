"""Version-1 lakes: still read, still written as version 1, and upgraded by metadata alone."""

import json

import numpy as np

import lakeio
from lakeio.cli import main
from lakeio.format.manifest import FRAGMENT_DIR, manifest_key
from lakeio.testing.lakes import ingest_arrays, labelled_arrays


def _doc(lake, version: int) -> dict:
    return json.loads((lake / manifest_key(version)).read_bytes())


def _segment_files(lake) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in (lake / "segments").rglob("*") if p.is_file()}


def test_a_version_1_lake_stays_version_1_until_upgraded_then_every_version_reads(tmp_path, client):
    lake = tmp_path / "lake"
    first, second, third = (
        labelled_arrays(40, 1),
        labelled_arrays(24, 2),
        labelled_arrays(16, 3, classes=4),
    )
    ingest_arrays(first, lake, client, format_version=1)
    ingest_arrays(second, lake, client, mode="append")  # a lake keeps its format
    assert [_doc(lake, v)["format_version"] for v in (1, 2)] == [1, 1]
    assert [len(s["class_counts"]) for s in _doc(lake, 2)["segments"]] == [3] * 8
    segments_before = _segment_files(lake)

    result = lakeio.upgrade(lake)

    assert (result.from_version, result.from_format, result.version) == (2, 1, 3)
    assert _segment_files(lake) == segments_before  # metadata only
    doc = _doc(lake, 3)
    assert doc["format_version"] == 2 and len(doc["fragments"]) == 1
    assert doc["history"][-1]["op"] == "upgrade" and doc["history"][-1]["from_format_version"] == 1
    labels = np.concatenate([first[1], second[1]])
    assert doc["class_counts"] == np.bincount(labels, minlength=3).tolist()
    assert result.manifest_bytes_after < result.manifest_bytes_before
    upgraded = lakeio.open_dataset(lake)
    old = lakeio.open_dataset(lake, version=2)
    assert upgraded.manifest.segments == tuple(
        s.__class__(s.id, s.samples, (), s.source_bytes, s.decoded_bytes, s.stored_bytes)
        for s in old.manifest.segments
    )
    both = np.concatenate([first[0], second[0]])
    np.testing.assert_array_equal(upgraded.to_dask()["images"].compute(), both)
    np.testing.assert_array_equal(old.to_dask()["images"].compute(), both)
    np.testing.assert_array_equal(
        lakeio.open_dataset(lake, version=1).to_dask()["images"].compute(), first[0]
    )

    ingest_arrays(third, lake, client, mode="append", classes=["0", "1", "2", "3"])
    doc = _doc(lake, 4)
    assert doc["format_version"] == 2 and len(doc["fragments"]) == 2
    assert len(list((lake / FRAGMENT_DIR).glob("*.json"))) == 2
    labels = np.concatenate([labels, third[1]])
    assert doc["class_counts"] == np.bincount(labels, minlength=4).tolist()
    np.testing.assert_array_equal(lakeio.open_dataset(lake).to_dask()["labels"].compute(), labels)
    assert lakeio.upgrade(lake).version is None  # already the newest: nothing committed
    assert not (lake / manifest_key(5)).exists()


def test_lakeio_upgrade_on_the_command_line(tmp_path, client, capsys):
    lake = tmp_path / "lake"
    ingest_arrays(labelled_arrays(30, 4), lake, client, format_version=1)
    assert main(["upgrade", str(lake)]) == 0
    out = capsys.readouterr().out
    assert "version 1 (format 1) upgraded to format 2 as version 2" in out
    assert main(["info", str(lake)]) == 0
    assert "format 2" in capsys.readouterr().out
    assert main(["upgrade", str(lake)]) == 0
    assert "already format version 2 (version 2); nothing to do" in capsys.readouterr().out
    assert main(["verify", str(lake), "--quiet"]) == 0
