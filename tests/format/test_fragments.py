"""Format version 2: a commit writes its own fragment and a small manifest; readers check both."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lakeio
from lakeio.errors import FormatError
from lakeio.format.location import Location
from lakeio.format.manifest import (
    FRAGMENT_DIR,
    FieldInfo,
    Manifest,
    SegmentEntry,
    commit_manifest,
    manifest_key,
    read_manifest,
)
from lakeio.stats import compute_stats
from lakeio.testing.lakes import ingest_arrays, labelled_arrays

FIELDS = {
    "images": FieldInfo("uint8", (4, 4, 3), "lz4:5"),
    "labels": FieldInfo("int64", (), "lz4:5"),
}


def _fragment_files(lake) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (lake / FRAGMENT_DIR).glob("*.json")}


def _manifest_doc(lake, version: int) -> dict:
    return json.loads((lake / manifest_key(version)).read_bytes())


def test_an_append_writes_its_own_fragment_and_shares_the_earlier_ones(tmp_path, client):
    lake = tmp_path / "lake"
    first, second = labelled_arrays(50, 1), labelled_arrays(30, 2)
    ingest_arrays(first, lake, client)
    before = _fragment_files(lake)
    ingest_arrays(second, lake, client, mode="append")
    after = _fragment_files(lake)
    assert len(before) == 1 and len(after) == 2
    assert all(after[name] == data for name, data in before.items())  # never rewritten
    doc = _manifest_doc(lake, 2)
    assert doc["format_version"] == 2 and "segments" not in doc["history"][-1]
    assert f"{doc['fragments'][0]['id']}.json" in before
    assert doc["history"][-1]["fragment"] == doc["fragments"][-1]["id"]
    ds = lakeio.open_dataset(lake)
    images = np.concatenate([first[0], second[0]])
    assert len(ds) == 80 and doc["samples"] == 80 and doc["segments"] == len(ds.manifest.segments)
    np.testing.assert_array_equal(ds.to_dask()["images"].compute(), images)
    labels = np.concatenate([first[1], second[1]])
    assert doc["class_counts"] == np.bincount(labels, minlength=3).tolist()
    v1 = lakeio.open_dataset(lake, version=1).manifest.segments
    assert len(v1) == doc["fragments"][0]["segments"] and v1 == ds.manifest.segments[: len(v1)]


def test_a_commit_without_new_segments_writes_no_fragment(tmp_path, client):
    lake = tmp_path / "lake"
    ingest_arrays(labelled_arrays(40, 3), lake, client)
    before = _fragment_files(lake)
    compute_stats(lake, cluster=client, echo=None)
    assert _fragment_files(lake) == before
    doc = _manifest_doc(lake, 2)
    assert doc["history"][-1]["op"] == "stats" and len(doc["fragments"]) == 1
    assert lakeio.open_dataset(lake).manifest.stats["samples"] == 40


def test_an_overwrite_names_only_its_own_fragment_and_the_old_version_still_reads(tmp_path, client):
    lake = tmp_path / "lake"
    old, new = labelled_arrays(40, 4), labelled_arrays(24, 5, classes=2)
    ingest_arrays(old, lake, client)
    ingest_arrays(new, lake, client, mode="overwrite")
    doc = _manifest_doc(lake, 2)
    assert len(doc["fragments"]) == 1 and doc["samples"] == 24
    assert doc["class_counts"] == np.bincount(new[1], minlength=2).tolist()
    np.testing.assert_array_equal(
        lakeio.open_dataset(lake, version=1).to_dask()["images"].compute(), old[0]
    )
    np.testing.assert_array_equal(lakeio.open_dataset(lake).to_dask()["images"].compute(), new[0])


def test_info_counts_classes_from_the_manifest_alone(tmp_path, client):
    from lakeio.info import lake_info

    lake = tmp_path / "lake"
    data = labelled_arrays(60, 6, classes=4)
    ingest_arrays(data, lake, client, classes=["a", "b", "c", "d"])
    for segment in (lake / "segments").glob("s*"):  # info must not need any segment
        (segment / "zarr.json").rename(segment / "gone.json")
    info = lake_info(lakeio.open_dataset(lake))
    assert list(info["classes"].values()) == np.bincount(data[1], minlength=4).tolist()
    assert info["format_version"] == 2


# -- what readers refuse ------------------------------------------------------------------


@pytest.fixture
def two_fragment_lake(tmp_path):
    loc = Location.of(tmp_path)
    first = commit_manifest(loc, Manifest(FIELDS, ("a", "b"), 8, (SegmentEntry("s1", 3, (1, 2)),)))
    commit_manifest(loc, first.with_segments((*first.segments, SegmentEntry("s2", 4, (4, 0))), {}))
    return tmp_path, loc


def _fragment_path(root, index: int, version: int = 2):
    return root / FRAGMENT_DIR / f"{_manifest_doc(root, version)['fragments'][index]['id']}.json"


def test_a_changed_fragment_is_refused_naming_it_and_its_manifest(two_fragment_lake):
    root, loc = two_fragment_lake
    path = _fragment_path(root, 1)
    data = bytearray(path.read_bytes())
    data[data.index(b'"samples":4') + 10] = ord("5")
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=rf"{path.name}: .*v00000002\.json recorded"):
        read_manifest(loc)
    assert read_manifest(loc, 1).samples == 3  # version 1 does not name that fragment


def test_a_missing_fragment_is_refused_by_name(two_fragment_lake):
    root, loc = two_fragment_lake
    path = _fragment_path(root, 0)
    path.unlink()
    with pytest.raises(FormatError, match=rf"fragment {path.stem} is missing, but .*v00000002"):
        read_manifest(loc)


def test_a_fragment_swapped_for_another_is_refused(two_fragment_lake):
    root, loc = two_fragment_lake
    _fragment_path(root, 0).write_bytes(_fragment_path(root, 1).read_bytes())
    with pytest.raises(FormatError, match="the file changed after it was written"):
        read_manifest(loc)


def _edited(root, edit) -> None:
    """Manifest version 2 changed by ``edit``, its checksum line dropped (as by hand)."""
    doc = _manifest_doc(root, 2)
    doc.pop("crc32c")
    edit(doc)
    (root / manifest_key(2)).write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["fragments"][0].update(samples=9) or d.update(samples=13),
            r"holds 1 segments of 3 samples, but .*v00000002\.json says 1 of 9",
        ),
        (lambda d: d["fragments"][1].update(crc32c="xyz"), r"fragments\[1\]\.crc32c must be 8"),
        (lambda d: d["fragments"][1].update(id="../x"), "is not a plain folder name"),
        (lambda d: d.update(class_counts=[5, True]), r"class_counts\[1\] must be an integer"),
        (lambda d: d.update(class_counts=[5, 1]), "class_counts add up to 6, but .* 7 samples"),
        (lambda d: d.update(class_counts=[1, 1, 5]), "class_counts has 3 entries, the lake 2"),
        (lambda d: d.update(samples=8), "samples is 8, the fragments hold 7"),
        (lambda d: d.update(segments=[]), "segments must be an integer"),
        (lambda d: d.update(extra=1), r"unknown manifest keys \['extra'\]"),
        (lambda d: d.update(format_version=3), "format_version 3 is not supported"),
    ],
)
def test_manifest_values_are_checked_before_use(two_fragment_lake, edit, message):
    root, loc = two_fragment_lake
    _edited(root, edit)
    with pytest.raises(FormatError, match=message):
        read_manifest(loc)


# -- any sequence of commits ------------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.integers(0, 9), min_size=1, max_size=4)),
        st.tuples(st.just("overwrite"), st.lists(st.integers(0, 9), min_size=0, max_size=3)),
        st.tuples(st.just("stats"), st.just([])),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_every_version_of_any_commit_sequence_reads_back_as_committed(tmp_path_factory, ops):
    """Appends, overwrites and stats commits in any order: each version reads back with the
    segments and class counts it was committed with, and only commits that add segments add
    fragment files."""
    loc = Location.of(tmp_path_factory.mktemp("lake"))
    current = Manifest(FIELDS, ("a", "b", "c"), 4)
    expected: dict[int, tuple] = {}
    made = 0
    for op, sizes in ops:
        base = len(current.segments) + made
        new = tuple(
            SegmentEntry(f"s{base + i}", n, (n, 0, 0) if i % 2 else (0, n // 2, n - n // 2))
            for i, n in enumerate(sizes)
        )
        made += len(new)
        segments = (*current.segments, *new) if op == "append" else new
        if op == "stats":
            segments = current.segments
        current = commit_manifest(loc, current.with_segments(segments, {"op": op}))
        expected[current.version] = tuple((s.id, s.samples) for s in current.segments)
        totals = np.zeros(3, dtype=int)
        for s in segments:
            totals += s.class_counts
        assert current.lake_class_counts() == tuple(totals.tolist())
    for version, segments in expected.items():
        read = read_manifest(loc, version)
        assert tuple((s.id, s.samples) for s in read.segments) == segments
        assert sum(read.lake_class_counts()) == read.samples
    adding = sum(1 for op, sizes in ops if op != "stats" and sizes)
    assert len(list(loc.list(FRAGMENT_DIR))) <= adding


def _edited_fragment(root, edit) -> None:
    """The second fragment changed by ``edit``; the manifest records its new checksum (as a
    writer that made it so would), so only the fragment's own checks stand in the way."""
    from lakeio.format.chunks import crc32c_hex

    path = _fragment_path(root, 1)
    doc = json.loads(path.read_bytes())
    doc.pop("crc32c")
    edit(doc)
    path.write_text(json.dumps(doc))
    _edited(root, lambda d: d["fragments"][1].update(crc32c=crc32c_hex(path.read_bytes())))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(id="f-000"), "fragment says it is 'f-000', the manifest names 'f-"),
        (lambda d: d.update(note=1), r"fragment has unknown keys \['note'\]"),
        (
            lambda d: d["segments"][0].update(class_counts=[4, 0]),
            r"segments\[0\] has unknown keys \['class_counts'\]",
        ),
        (lambda d: d["segments"][0].update(samples=-1), r"segments\[0\]\.samples must be >= 0"),
        (lambda d: d.update(format_version=1), "not a lakeio fragment"),
    ],
)
def test_fragment_content_is_checked_before_use(two_fragment_lake, edit, message):
    root, loc = two_fragment_lake
    _edited_fragment(root, edit)
    with pytest.raises(FormatError, match=message):
        read_manifest(loc)


def test_info_says_unknown_where_the_lake_does_not_know_its_class_counts(tmp_path):
    from lakeio.info import format_info, lake_info

    loc = Location.of(tmp_path)
    commit_manifest(loc, Manifest(FIELDS, ("a", "b"), 8, (SegmentEntry("s1", 3),)))  # no counts
    assert _manifest_doc(tmp_path, 1)["class_counts"] == []
    info = lake_info(lakeio.open_dataset(tmp_path))
    assert info["classes"] == {"a": None, "b": None}
    assert "a                    unknown" in format_info(info)
