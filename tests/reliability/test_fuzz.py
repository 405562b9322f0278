"""Fuzz (issue 9): whatever text, JSON or image bytes arrive, lakeio answers with a value or its
own error naming the input: never another exception, an allocation sized by the input, or a
hang. Every hypothesis test is derandomized and bounded, so CI runs the same examples."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import time
import tracemalloc

import numpy as np
import pytest
from distributed import Client
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import lakeio
from lakeio.errors import CodecError, FormatError, SourceError
from lakeio.format.chunks import crc32c_hex
from lakeio.format.codecs import CODECS, SHUFFLES, parse_codec
from lakeio.format.fragments import fragment_bytes, parse_fragment
from lakeio.format.location import Location
from lakeio.format.manifest import (
    FieldInfo,
    FragmentRef,
    Manifest,
    SegmentEntry,
    commit_manifest,
    manifest_key,
)
from lakeio.format.manifest_checks import MAX_CHUNK_BYTES, MAX_SAMPLES, manifest_from_json
from lakeio.format.segment import SUMMARY_ATTR, read_segment_summary, write_segment
from lakeio.ingest.decode import DecodeOptions
from lakeio.ingest.options import parse_size as parse_hw
from lakeio.sizes import MAX_SIZE, parse_size
from lakeio.testing.fuzzing import (
    KINDS,
    apply_all,
    decode_outcome,
    mutate,
    run_decode_fuzz,
    seed_files,
    write_mutated_folder,
)
from lakeio.testing.images import write_image_folder
from lakeio.verify import verify_lake

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SOURCE = "lake/_lakeio/manifests/v00000001.json"
BYTE_CHANGES = st.lists(  # (kind, where, what) for `apply_all`
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "overwrite"]),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
    ),
    min_size=1,
    max_size=4,
)

# -- codec spec strings ----------------------------------------------------------------------

codec_like = st.builds(
    lambda name, args: ":".join([name, *args]),
    st.sampled_from([*CODECS, "LZ4", " zstd ", "blosc", "lz5", ""]),
    st.lists(
        st.one_of(
            st.integers(-3, 30).map(str),
            st.sampled_from([*SHUFFLES, "", " 5", "+5", "٣", "1_0", "9" * 5000]),
            st.text(max_size=4),
        ),
        max_size=3,
    ),
)


def _unsigned(doc: dict) -> dict:
    """A hand-edited manifest drops its checksum line, or the checksum would refuse it first;
    without one it is read (and validated field by field) as manifests before checksums were."""
    return {k: v for k, v in doc.items() if k != "crc32c"}


@FUZZ
@given(st.one_of(st.text(max_size=40), codec_like))
@example("blosc-zstd:5:bitshuffle")
@example("zstd:" + "9" * 5000)
def test_codec_spec_text_parses_to_a_canonical_spec_or_a_codec_error(text):
    try:
        spec = parse_codec(text)
    except CodecError as exc:
        assert "codec" in str(exc) and len(str(exc)) < 300  # the input shown cut short
        return
    canonical = str(spec)
    assert spec.name == text.strip().lower().split(":")[0]
    assert parse_codec(canonical) == spec and str(parse_codec(canonical)) == canonical
    low, high = CODECS[spec.name].levels or (None, None)
    assert spec.level is None if low is None else low <= spec.level <= high


def test_codec_levels_are_ascii_digits_only():
    assert str(parse_codec(" ZSTD:03 ")) == "zstd:3"
    for text in ("zstd: 3", "zstd:+3", "zstd:٣", "zstd:1_0"):
        with pytest.raises(CodecError, match=r"is not an integer \(ASCII digits\)"):
            parse_codec(text)


# -- size strings ----------------------------------------------------------------------------

hw_like = st.builds(
    lambda a, sep, b: f"{a}{sep}{b}",
    st.one_of(st.integers(-2, 10**10).map(str), st.sampled_from(["", " 7", "2_4", "٣"])),
    st.sampled_from(["x", "X", "×", " x ", "", "*", "xx"]),
    st.one_of(st.integers(-2, 10**10).map(str), st.just("")),
)


@FUZZ
@given(st.one_of(st.text(max_size=30), hw_like))
@example("224x224")
@example("0x5")
def test_size_text_parses_to_height_and_width_or_a_value_error(text):
    try:
        height, width = parse_hw(text)
    except ValueError as exc:
        assert str(exc).startswith("size ")
        return
    assert 1 <= height < 10**9 and 1 <= width < 10**9
    assert parse_hw(f"{height}x{width}") == (height, width)
    assert all(c.isspace() or c in "0123456789xX×" for c in text)  # no "2_4", "+5" or "٣"
    assert [int(p) for p in text.lower().replace("×", "x").split("x")] in (
        [height, width],
        [height],
    )


def test_a_lake_size_larger_than_max_pixels_is_refused_before_any_task():
    from lakeio.ingest.options import IngestOptions

    with pytest.raises(ValueError, match="size 100000x100000 is 10,000,000,000 pixels per image"):
        IngestOptions(size=parse_hw("100000x100000"))
    assert IngestOptions(size=parse_hw("100000x100000"), max_pixels=10**10).size == (10**5,) * 2


byte_size_like = st.builds(
    lambda number, unit: f"{number}{unit}",
    st.one_of(st.integers(0, 10**25).map(str), st.floats(0, 1e6).map(str), st.just("9" * 400)),
    st.sampled_from(["", "b", "KB", "MiB", " gib", "g", "TB", "tib", "PB", "x"]),
)


@FUZZ
@given(
    st.one_of(
        st.text(max_size=30),
        byte_size_like,
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**70), 2**70),
        st.booleans(),
    )
)
@example("9" * 400)
@example(float("inf"))
def test_byte_size_parses_to_bytes_or_a_value_error_naming_the_setting(value):
    try:
        size = parse_size(value, "Cache(memory=...)")
    except ValueError as exc:
        assert str(exc).startswith("Cache(memory=...): ")
        return
    assert isinstance(size, int) and 0 <= size <= MAX_SIZE


def test_cache_refuses_a_size_beyond_any_machine_by_name():
    with pytest.raises(ValueError, match=r"Cache\(memory=...\): size must be within 0\.\."):
        lakeio.Cache(memory="9" * 25 + "TB")
    assert lakeio.Cache(memory=" 512 MiB ").memory == 512 * 2**20


# -- manifests -------------------------------------------------------------------------------

FIELDS = {
    "images": FieldInfo("uint8", (32, 32, 3), "lz4:5"),
    "labels": FieldInfo("int64", (), "lz4:5"),
    "paths": FieldInfo("str", (), "lz4:5"),
}
SEGMENTS = (SegmentEntry("s000000-0a1b2c", 20, (12, 8), 900, 800, 700), SegmentEntry("s1", 3))
STATS = {"samples": 23, "images": {"mean": [1.5, 2, 3], "std": [4, 5, 6]}}
GOOD = json.loads(  # format version 1: every segment in the manifest (still read)
    Manifest(
        FIELDS, ("cat", "dog"), 8, SEGMENTS, 1, "t", ({"op": "ingest"},), STATS, format_version=1
    ).to_json()
)
FRAGMENT_ID, FRAGMENT = fragment_bytes(SEGMENTS)
GOOD_V2 = json.loads(  # format version 2: the manifest names a fragment listing the segments
    Manifest(
        FIELDS, ("cat", "dog"), 8, (), 1, "t", ({"op": "ingest"},), STATS,
        fragments=(FragmentRef(FRAGMENT_ID, 2, 23, crc32c_hex(FRAGMENT)),), class_counts=(12, 11),
    ).to_json()
)  # fmt: skip


def _paths(doc, prefix=()):
    """Every place in the document a value sits, as key/index tuples."""
    yield prefix
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in items:
        yield from _paths(value, (*prefix, key))


PLACES = list(_paths(GOOD))[1:]
PLACES_V2 = list(_paths(GOOD_V2))[1:]
absurd = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([-1, 0, 10**12, 2**40 + 1, 2**63, 10**30, -(2**70), 1.5, 8.0]),
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    st.integers(),
    st.text(max_size=8),
    st.sampled_from(["8", "uint8", "x" * 20_000, "../../etc", "s3://b/k", "lzma:9"]),
    st.sampled_from([[10**12, 10**12, 3], [0, 4, 3], [2**31, 1, 1], [1] * 50, [[None]], [None]]),
    st.sampled_from([{}, {"a": None}, {"dtype": None}, [], [[[]]]]),
)


def _edit(doc: dict, place: tuple, value) -> None:
    target = doc
    for key in place[:-1]:
        target = target[key]
    if value is _DELETE and isinstance(target, dict):
        del target[place[-1]]
    elif value is not _DELETE:
        target[place[-1]] = copy.deepcopy(value)  # sampled values are shared between examples


_DELETE = object()


def _parse_with_peak(data: bytes):
    """(result or exception, peak bytes allocated while parsing)."""
    tracemalloc.start()
    try:
        return manifest_from_json(data, SOURCE), tracemalloc.get_traced_memory()[1]
    except FormatError as exc:
        return exc, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@FUZZ
@given(
    st.lists(st.tuples(st.sampled_from(PLACES), st.one_of(absurd, st.just(_DELETE))), max_size=3)
)
def test_mutated_manifests_are_format_errors_or_sound_manifests(edits):
    _edited_is_refused_or_sound(GOOD, edits)


def _edited_is_refused_or_sound(good: dict, edits) -> None:
    doc = copy.deepcopy(good)
    for place, value in edits:
        with contextlib.suppress(KeyError, IndexError, TypeError):  # container replaced before
            _edit(doc, place, value)
    data = json.dumps(doc).encode()  # NaN and Infinity are written as JSON does not allow
    outcome, peak = _parse_with_peak(data)
    assert peak < 64 * len(data) + 2**20  # nothing sized by a claimed count or shape
    if isinstance(outcome, FormatError):
        message = str(outcome)
        assert message.startswith(SOURCE + ": ") and len(message) < 600
        return
    _check_sound(outcome)


@FUZZ
@given(BYTE_CHANGES)
def test_manifest_bytes_mutated_are_format_errors_or_sound_manifests(changes):
    _mutated_is_refused_or_sound(json.dumps(GOOD).encode(), changes)


def _mutated_is_refused_or_sound(good: bytes, changes) -> None:
    data = apply_all(good, changes)
    outcome, peak = _parse_with_peak(data)
    assert peak < 64 * len(data) + 2**20
    if isinstance(outcome, FormatError):
        assert str(outcome).startswith(SOURCE + ": ")
    else:
        _check_sound(outcome)


@FUZZ
@given(
    st.lists(st.tuples(st.sampled_from(PLACES_V2), st.one_of(absurd, st.just(_DELETE))), max_size=3)
)
def test_mutated_version_2_manifests_are_format_errors_or_sound_manifests(edits):
    _edited_is_refused_or_sound(GOOD_V2, edits)


@FUZZ
@given(BYTE_CHANGES, st.booleans())
def test_mutated_version_2_manifest_and_fragment_bytes_are_refused_or_sound(changes, fragment):
    """A changed byte of a fragment is refused by its checksum (the manifest records it) or
    parses to sound segments; of a manifest, as for version 1."""
    if not fragment:
        _mutated_is_refused_or_sound(json.dumps(GOOD_V2).encode(), changes)
        return
    data = apply_all(FRAGMENT, changes)
    try:
        segments = parse_fragment(data, SOURCE, 8)
    except FormatError as exc:
        assert str(exc).startswith(SOURCE + ": ") and len(str(exc)) < 600
        return
    for seg in segments:
        assert type(seg.samples) is int and 0 <= seg.samples <= MAX_SAMPLES and "/" not in seg.id
    assert data == FRAGMENT or crc32c_hex(data) != crc32c_hex(FRAGMENT)  # the manifest's check


def _check_sound(m: Manifest) -> None:
    """What a reader may rely on in a manifest that parsed."""
    assert m.chunk_samples >= 1 and 0 <= m.samples <= MAX_SAMPLES
    images = m.fields["images"]
    assert images.dtype == "uint8" and len(images.shape) == 3 and images.shape[-1] in (1, 3)
    assert m.fields["labels"].dtype == "int64" and m.fields["labels"].shape == ()
    for info in m.fields.values():
        assert all(type(d) is int and d >= 1 for d in info.shape)
        assert m.chunk_samples * (info.sample_bytes or 64) <= MAX_CHUNK_BYTES
        parse_codec(info.codec)
    for seg in m.segments:
        assert type(seg.samples) is int and seg.samples >= 0 and "/" not in seg.id
        assert not seg.class_counts or sum(seg.class_counts) == seg.samples
    for ref in m.fragments:
        assert "/" not in ref.id and 0 <= ref.samples <= MAX_SAMPLES and len(ref.crc32c) == 8
    if m.format_version >= 2 and m.class_counts:
        assert sum(m.class_counts) == sum(f.samples for f in m.fragments)
    assert manifest_from_json(m.to_json(), SOURCE) == m


ABSURD = [
    (("fields", "images", "shape"), [10**12, 10**12, 3], "larger than a chunk may be"),
    (("segments", 0, "samples"), 10**13, r"segments\[0\]\.samples must be <= "),
    (("segments", 0, "samples"), 2**63, r"segments\[0\]\.samples must be <= "),
    (("chunk_samples",), True, r"chunk_samples must be an integer, found True \(true or false\)"),
    (("chunk_samples",), float("inf"), r"not valid JSON \(Infinity is not a JSON number\)"),
    (("chunk_samples",), 2**20, "makes a chunk of field 'images' 3,221,225,472 bytes"),
    (("segments", 0, "class_counts"), [10**30, 0], r"class_counts\[0\] must be <= "),
    (("segments", 0, "class_counts"), [1, 1], "add up to 2, but the segment holds 20"),
    (("segments", 1), None, r"segments\[1\] must be an object, found None \(null\)"),
    (("fields",), [1], r"fields must be an object, found \[1\] \(an array\)"),
    (("fields", "images", "dtype"), "x" * 10**6, "has dtype 'xxxxx"),
    (("fields", "images", "codec"), "lzma:9", "codec 'lzma:9' .* is not a codec spec"),
    (("version",), "1", r"version must be an integer, found '1' \(a string\)"),
    (("stats", "images", "mean"), ["a", 1, 2], r"stats\.images\.mean\[0\] must be a number"),
    (("history",), "abc", "history must be an array"),
    (("samples",), 5, "samples is 5, the segments hold 23"),
]


@pytest.mark.parametrize(("place", "value", "message"), ABSURD)
def test_absurd_manifest_values_are_refused_by_field_before_any_allocation(
    tmp_path, place, value, message
):
    doc = copy.deepcopy(GOOD)
    _edit(doc, place, value)
    path = tmp_path / manifest_key(1)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_unsigned(doc)))
    peaks = []
    for _ in range(3):  # tracemalloc counts every thread's allocations: the least of 3 tries
        tracemalloc.start()
        try:
            with pytest.raises(FormatError, match=message) as err:
                lakeio.open_dataset(tmp_path)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        if peaks[-1] < 32 * 2**20:
            break
    assert str(err.value).startswith(f"{tmp_path}/{manifest_key(1)}: ")
    assert len(str(err.value)) < 600 and min(peaks) < 32 * 2**20, peaks


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 100_000, b"\xff\xfe{", b"1" * 5000])
def test_manifest_bytes_that_are_not_json_are_format_errors(raw):
    with pytest.raises(FormatError, match=r"(not valid JSON|nested too deeply)"):
        manifest_from_json(raw, SOURCE)


# -- segment zarr.json -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def segment_lake(tmp_path_factory):
    """A one-segment lake written by `write_segment` and committed: (root, Location)."""
    root = tmp_path_factory.mktemp("segment-lake")
    loc = Location.of(root)
    images = np.arange(5 * 32 * 32 * 3, dtype=np.uint8).reshape(5, 32, 32, 3)
    columns = {
        "images": images,
        "labels": np.array([0, 1, 0, 1, 1]),
        "paths": np.array([f"{i}.png" for i in range(5)], dtype=object),
    }
    summary = {"rejects": [["x.png", "bad"]], "class_counts": [2, 3], "source_bytes": 10}
    write_segment(loc, "s1", columns, FIELDS, 8, {**summary, "decoded_bytes": 20})
    commit_manifest(loc, Manifest(FIELDS, ("cat", "dog"), 8, (SegmentEntry("s1", 5, (2, 3)),)))
    return root, loc


@FUZZ
@given(st.data())
def test_mutated_segment_summaries_read_as_none_or_a_sound_summary(segment_lake, data):
    root, loc = segment_lake
    group = root / "segments" / "s1" / "zarr.json"
    good = group.read_bytes()
    doc = json.loads(good)
    places = list(_paths(doc))[1:]
    for place in data.draw(st.lists(st.sampled_from(places), min_size=1, max_size=2)):
        with contextlib.suppress(KeyError, IndexError, TypeError):
            _edit(doc, place, data.draw(st.one_of(absurd, st.just(_DELETE))))
    group.write_text(json.dumps(doc))
    try:
        summary = read_segment_summary(loc, "s1")
        report = verify_lake(lakeio.open_dataset(root))
    finally:
        group.write_bytes(good)
    if summary is None:
        assert any(key.endswith("s1/zarr.json") for key, _ in report.problems)
        return
    assert summary == doc["attributes"][SUMMARY_ATTR]
    assert type(summary["samples"]) is int and 0 <= summary["samples"] <= MAX_SAMPLES
    assert all(type(c) is int and c >= 0 for c in summary.get("class_counts", []))


@pytest.mark.parametrize("raw", [b"[" * 100_000, b"NaN", b'{"attributes": []}', b"[]", b"\xff"])
def test_a_segment_zarr_json_that_is_not_a_summary_marks_nothing_complete(segment_lake, raw):
    root, loc = segment_lake
    group = root / "segments" / "s1" / "zarr.json"
    good = group.read_bytes()
    group.write_bytes(raw)
    try:
        assert read_segment_summary(loc, "s1") is None
        problems = verify_lake(lakeio.open_dataset(root)).problems
    finally:
        group.write_bytes(good)
    assert [key for key, _ in problems] == ["segments/s1/zarr.json"]
    assert read_segment_summary(loc, "s1")["samples"] == 5


@pytest.fixture(scope="module")
def threads():
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        yield c


@pytest.mark.parametrize(
    "tamper",
    [{"rejects": {"x": 1}}, {"samples": "8"}, {"class_counts": [None]}, {"stored_bytes": -1}],
    ids=["rejects-object", "samples-text", "counts-null", "bytes-negative"],
)
def test_a_resumed_ingest_rewrites_a_segment_whose_summary_is_malformed(tmp_path, threads, tamper):
    write_image_folder(tmp_path / "src", 24, size=(16, 16), fmt="png", seed=5)
    common = {"cluster": threads, "chunk_samples": 8, "progress": False, "echo": None}
    lakeio.ingest(tmp_path / "src", tmp_path / "first", **common)
    # an interrupted run: every segment written, nothing committed, one summary damaged
    shutil.copytree(tmp_path / "first" / "segments", tmp_path / "second" / "segments")
    group = sorted((tmp_path / "second" / "segments").glob("s*/zarr.json"))[0]
    doc = json.loads(group.read_text())
    doc["attributes"][SUMMARY_ATTR].update(tamper)
    group.write_text(json.dumps(doc))
    summary = lakeio.ingest(tmp_path / "src", tmp_path / "second", **common)
    first, second = (lakeio.open_dataset(tmp_path / name) for name in ("first", "second"))
    assert summary.reused_segments == len(second.manifest.segments) - 1 >= 1
    for field in ("images", "labels"):
        got, expected = second.to_dask()[field], first.to_dask()[field]
        np.testing.assert_array_equal(got.compute(), expected.compute())
    assert verify_lake(second).ok


# -- mutated JPEG and PNG files through the decode path --------------------------------------

SEEDS = seed_files()
OPTS = DecodeOptions(size=(32, 32))
mutations = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    min_size=1,
    max_size=3,
)


@settings(FUZZ, max_examples=300)
@given(st.sampled_from(range(len(SEEDS))), mutations)
def test_a_mutated_image_decodes_to_the_lake_size_or_is_a_source_error_naming_it(which, changes):
    name, data = SEEDS[which]
    outcome = decode_outcome(apply_all(data, changes), f"cls/{name}", OPTS, time_limit=2.0)
    assert outcome.kind in ("decoded", "rejected"), outcome.detail
    assert outcome.seconds < 2.0


@pytest.mark.parametrize(
    ("which", "change", "reason"),
    [
        (0, ("dimensions", 65535, 65535), "decompression bomb"),
        (4, ("dimensions", 2**31 - 1, 2**31 - 1), "decompression bomb"),
        (4, ("dimensions", 1, 60000), "aspect ratio"),
        (0, ("truncate", 700, 0), "truncated or corrupt"),
        (4, ("truncate", 100, 0), "truncated or corrupt"),
        (4, ("overwrite", 0, 0), "not a recognised image"),
    ],
)
def test_specific_mutations_are_refused_with_their_reason(which, change, reason):
    name, data = SEEDS[which]
    with pytest.raises(SourceError, match=reason) as err:
        from lakeio.ingest.decode import decode_image

        decode_image(mutate(data, change), f"cls/{name}", OPTS, np.empty((32, 32, 3), np.uint8))
    assert err.value.path == f"cls/{name}"


def test_decode_fuzz_loses_nothing():
    started = time.perf_counter()
    tally = run_decode_fuzz(400, seed=0)
    assert (tally.trials, tally.injected, tally.lost) == (400, 400, 0), tally.notes
    assert tally.recovered == 400 and 40 < tally.detected < 360  # mutations bite, not all fatal
    assert time.perf_counter() - started < 10


def test_a_folder_of_mutated_images_ingests_into_report_lines(tmp_path, threads):
    files = write_mutated_folder(tmp_path / "src", 40, seed=3)
    expected = {rel: decode_outcome(data, rel, OPTS).kind for rel, data in sorted(files.items())}
    assert "lost" not in expected.values() and "rejected" in expected.values()
    summary = lakeio.ingest(
        tmp_path / "src", tmp_path / "lake", cluster=threads, size=(32, 32), channels=3,
        on_error="skip", chunk_samples=8, progress=False, echo=None,
    )  # fmt: skip
    rejected = {rel for rel, kind in expected.items() if kind == "rejected"}
    with open(summary.report, encoding="utf-8") as fh:
        lines = [json.loads(line) for line in fh]
    assert {row["path"] for row in lines if row["kind"] == "rejected"} == rejected
    assert all(row["reason"] for row in lines) and summary.rejected == len(rejected)
    ds = lakeio.open_dataset(tmp_path / "lake")
    paths = [ds.sample(i, ("paths",))["paths"] for i in range(len(ds))]
    assert sorted(paths) == sorted(set(files) - rejected)
    from lakeio.ingest.decode import decode_image

    for i, path in enumerate(paths):
        pixels = decode_image(files[path], path, OPTS, np.empty((32, 32, 3), np.uint8))
        np.testing.assert_array_equal(ds[i][0], pixels)
    assert verify_lake(ds).ok
