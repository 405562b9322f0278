"""A lake is one Zarr v3 hierarchy that plain zarr-python walks and reads, as docs/format.md says."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.errors import ZarrUserWarning

import lakeio
from lakeio.format.location import Location
from lakeio.format.manifest import manifest_key
from lakeio.format.root import ensure_root_group
from lakeio.stats import compute_stats

DOC = Path(__file__).resolve().parents[2] / "docs" / "format.md"


def _ingest(data, dest, client, **kw):
    images, labels = data
    return lakeio.ingest(
        images,
        dest,
        labels=labels,
        cluster=client,
        chunk_samples=8,
        progress=False,
        echo=None,
        **kw,
    )


def _samples(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8), rng.integers(0, 3, n)


def _array_names(group):
    return {name for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)}


def _expected_arrays(ds, prefix=""):
    return {
        f"{prefix}{s.id}/{f}" for s in ds.manifest.segments for f in ("images", "labels", "paths")
    }


def _doc_blocks(section: str) -> list[str]:
    """The ```python blocks of one ``## section`` of docs/format.md, in order."""
    text = DOC.read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_segments_walk_finds_every_segments_arrays_without_a_warning(tmp_path, client):
    _ingest(_samples(40, 0), tmp_path / "lake", client)
    ds = lakeio.open_dataset(tmp_path / "lake")
    root = zarr.open_group(tmp_path / "lake", mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = _array_names(root["segments"])
    assert found == _expected_arrays(ds) and len(ds.manifest.segments) == 5


def test_root_walk_finds_every_array_and_warns_only_about_lakeio(tmp_path, client):
    _ingest(_samples(24, 1), tmp_path / "lake", client)
    ds = lakeio.open_dataset(tmp_path / "lake")
    root = zarr.open_group(tmp_path / "lake", mode="r")
    with pytest.warns(ZarrUserWarning) as caught:
        found = _array_names(root)
    assert found == _expected_arrays(ds, prefix="segments/")
    assert {str(w.message) for w in caught} == {
        "Object at _lakeio is not recognized as a component of a Zarr hierarchy."
    }


def test_segments_group_is_created_once_and_never_rewritten(tmp_path):
    loc = Location.of(tmp_path / "lake")
    ensure_root_group(loc)
    marker = tmp_path / "lake" / "segments" / "zarr.json"
    assert zarr.open_group(tmp_path / "lake", path="segments", mode="r").attrs.asdict() == {}
    marker.write_text('{"zarr_format": 3, "node_type": "group", "attributes": {"mine": 1}}')
    before = marker.stat()
    ensure_root_group(loc)
    after = marker.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert zarr.open_group(tmp_path / "lake", path="segments", mode="r").attrs["mine"] == 1


@pytest.mark.parametrize("commit", ["append", "stats"])
def test_a_lake_from_older_code_becomes_a_hierarchy_at_its_next_commit(tmp_path, client, commit):
    lake = tmp_path / "lake"
    _ingest(_samples(16, 2), lake, client)
    (lake / "segments" / "zarr.json").unlink(missing_ok=True)  # as lakes from older code
    if commit == "append":
        _ingest(_samples(16, 3), lake, client, mode="append")
    else:
        compute_stats(lake, cluster=client, echo=None)
    ds = lakeio.open_dataset(lake)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = _array_names(zarr.open_group(lake, mode="r")["segments"])
    assert found == _expected_arrays(ds)


def test_segments_group_exists_on_an_object_store(client, s3_options):
    url = "s3://lakeio-test/hierarchy.lake"
    _ingest(_samples(16, 4), url, client, storage_options=s3_options)
    loc = Location.of(url, s3_options)
    assert loc.exists("segments/zarr.json")
    ds = lakeio.open_dataset(url, storage_options=s3_options)
    root = zarr.open_group(loc.zarr_store(), mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _array_names(root["segments"]) == _expected_arrays(ds)


def test_docs_snippets_read_the_whole_lake_in_manifest_order(tmp_path, client, monkeypatch):
    first, second = _samples(50, 5), _samples(30, 6)
    _ingest(first, tmp_path / "photos.lake", client)
    _ingest(second, tmp_path / "photos.lake", client, mode="append")
    ds = lakeio.open_dataset(tmp_path / "photos.lake")
    blocks = _doc_blocks("Reading without lakeio")
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)  # the snippet opens "photos.lake"
    scope: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), scope)
    # in this process: the session's cluster workers run in another folder than "photos.lake"
    images = scope["images"].compute(scheduler="sync")
    np.testing.assert_array_equal(images, np.concatenate([first[0], second[0]]))
    np.testing.assert_array_equal(scope["labels"], np.concatenate([first[1], second[1]]))
    assert list(scope["paths"]) == [ds.sample(i, ("paths",))["paths"] for i in range(len(ds))]
    assert scope["keys"] == [s.key for s in ds.manifest.segments]
    assert scope["summary"]["manifest"] == manifest_key(ds.version)
    assert scope["manifest"]["classes"] == list(ds.classes)
    assert set(scope["arrays"]) == _expected_arrays(ds)
