import json

import pytest

from lakeio.errors import CommitConflictError, FormatError, LakeNotFoundError
from lakeio.format.location import Location
from lakeio.format.manifest import (
    FieldInfo,
    Manifest,
    SegmentEntry,
    commit_manifest,
    manifest_key,
    manifest_versions,
    read_manifest,
)

FIELDS = {
    "images": FieldInfo("uint8", (4, 4, 3), "lz4:5"),
    "labels": FieldInfo("int64", (), "lz4:5"),
}


def _unsigned(doc: dict) -> dict:
    """A hand-edited manifest drops its checksum line, or the checksum would refuse it first;
    without one it is read (and validated field by field) as manifests before checksums were."""
    return {k: v for k, v in doc.items() if k != "crc32c"}


def _manifest(*segments, format_version: int = 1):
    """A manifest of 3-sample segments. Version 1 by default: the document checks below edit a
    version-1 manifest, which lakeio still reads (tests/format/test_fragments.py: version 2)."""
    entries = tuple(SegmentEntry(s, 3, (1, 2)) for s in segments)
    return Manifest(FIELDS, ("a", "b"), 8, entries, format_version=format_version)


both_formats = pytest.mark.parametrize("format_version", [1, 2])


@both_formats
def test_commits_number_versions_and_keep_snapshots(tmp_path, format_version):
    loc = Location.of(tmp_path)
    first = commit_manifest(loc, _manifest("s1", format_version=format_version))
    second = commit_manifest(
        loc, first.with_segments([*first.segments, SegmentEntry("s2", 5)], {"op": "t"})
    )
    assert (first.version, second.version) == (1, 2)
    assert manifest_versions(loc) == [1, 2]
    assert read_manifest(loc).samples == 8
    assert [s.id for s in read_manifest(loc, 1).segments] == ["s1"]


@both_formats
def test_second_writer_from_the_same_parent_loses_instead_of_overwriting(tmp_path, format_version):
    loc = Location.of(tmp_path)
    base = commit_manifest(loc, _manifest("s1", format_version=format_version))
    commit_manifest(loc, base.with_segments([SegmentEntry("mine", 1)], {}))
    with pytest.raises(CommitConflictError, match="moved from version 1 to 2"):
        commit_manifest(loc, base.with_segments([SegmentEntry("theirs", 1)], {}))
    assert [s.id for s in read_manifest(loc).segments] == ["mine"]


def test_exclusive_create_refuses_an_existing_version(tmp_path):
    loc = Location.of(tmp_path)
    loc.create_exclusive("x.json", b"1")
    with pytest.raises(FileExistsError):
        loc.create_exclusive("x.json", b"2")
    assert (tmp_path / "x.json").read_bytes() == b"1"
    assert not list(tmp_path.glob("*.partial"))


def test_missing_lake_says_how_to_make_one(tmp_path):
    with pytest.raises(LakeNotFoundError, match="lakeio ingest SRC DEST"):
        read_manifest(Location.of(tmp_path))


def test_future_format_version_is_refused_by_name(tmp_path):
    loc = Location.of(tmp_path)
    doc = json.loads(_manifest("s1").to_json())
    doc["format_version"] = 99
    doc["version"] = 1
    path = tmp_path / manifest_key(1)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_unsigned(doc)))
    with pytest.raises(FormatError, match=r"v00000001\.json: format_version 99 is not supported"):
        read_manifest(loc)


def test_garbage_manifest_names_the_file(tmp_path):
    path = tmp_path / manifest_key(1)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{not json")
    with pytest.raises(FormatError, match=r"v00000001\.json: manifest is not valid JSON"):
        read_manifest(Location.of(tmp_path))


def test_negative_sample_count_is_rejected_before_use(tmp_path):
    doc = json.loads(_manifest("s1").to_json())
    doc["version"] = 1
    doc["segments"][0]["samples"] = -5
    path = tmp_path / manifest_key(1)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_unsigned(doc)))
    with pytest.raises(FormatError, match=r"segments\[0\]\.samples must be >= 0"):
        read_manifest(Location.of(tmp_path))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["segments"][0].update(id="../../etc"), "is not a plain folder name"),
        (lambda d: d["fields"]["images"].update(shape=[-4, 4, 3]), "dimensions must be >= 1"),
        (lambda d: d["fields"].pop("labels"), r"fields \['labels'\] are missing"),
        (
            lambda d: d["segments"][0].update(class_counts=[1, 2, 3]),
            "counts 3 classes, the lake has 2",
        ),
    ],
)
def test_manifest_values_are_validated_before_use(tmp_path, edit, message):
    _refused_after(edit, tmp_path, message)


def _refused_after(edit, tmp_path, message: str) -> None:
    """A valid manifest changed by ``edit`` (checksum dropped, as by hand) is refused."""
    doc = json.loads(_manifest("s1").to_json())
    doc["version"] = 1
    edit(doc)
    path = tmp_path / manifest_key(1)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_unsigned(doc)))
    with pytest.raises(FormatError, match=message):
        read_manifest(Location.of(tmp_path))


def test_a_manifest_that_is_not_an_object_is_a_format_error(tmp_path):
    path = tmp_path / manifest_key(1)
    path.parent.mkdir(parents=True)
    path.write_text("[1, 2]")
    with pytest.raises(FormatError, match="a manifest is a JSON object, found list"):
        read_manifest(Location.of(tmp_path))


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([1, True], r"class_counts\[1\] must be an integer"),
        ([4, -1], r"class_counts\[1\] must be >= 0"),
        ([1.5, 1.5], r"class_counts\[0\] must be an integer"),
        ([10**13, 0], r"class_counts\[0\] must be <="),
    ],
)
def test_a_bad_class_count_is_named_by_its_place(tmp_path, counts, message):
    """Counts are checked all at once (fast); a bad one is still named where it is."""
    _refused_after(lambda d: d["segments"][0].update(class_counts=counts), tmp_path, message)


def test_manifest_bytes_are_as_the_format_says(tmp_path):
    """Written without dataclasses.asdict (it deep-copied every count), the document is the
    same JSON, key for key, as the dataclasses describe it."""
    from dataclasses import asdict

    from lakeio.format.manifest_model import with_checksum

    m = _manifest("s1", "s2")
    doc = json.loads(m.to_json())
    expected = {
        "format": doc["format"], "format_version": doc["format_version"], "version": 0,
        "created": m.created, "samples": 6, "chunk_samples": 8, "classes": ["a", "b"],
        "fields": {k: {**asdict(v), "shape": list(v.shape)} for k, v in FIELDS.items()},
        "segments": [{**asdict(s), "class_counts": list(s.class_counts)} for s in m.segments],
        "history": [], "stats": {},
    }  # fmt: skip
    assert m.to_json() == with_checksum(json.dumps(expected, indent=1, ensure_ascii=False).encode())
