"""Checks of a manifest document, before anything is sized from it: types, ranges, names that
become paths, consistency, and the checksum line. Every failure is a `FormatError` naming the
file, the field (``segments[3].samples``), what was expected and what was found.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from lakeio.errors import CodecError, FormatError, clipped
from lakeio.format.codecs import parse_codec
from lakeio.format.manifest_model import (
    FORMAT_NAME,
    FORMAT_VERSIONS,
    FieldInfo,
    FragmentRef,
    Manifest,
    SegmentEntry,
)

# What a manifest may claim, checked before anything is sized from it (readers allocate per
# sample, per chunk and per chunk byte): far above any lake lakeio writes, far below what would
# exhaust a machine or overflow the int64 arithmetic of the sample index.
MAX_SAMPLES = 2**40  # samples in a lake, and so in one segment
MAX_SEGMENT_CHUNKS = 2**20  # chunks in one segment (an ingest task writes at most 256)
MAX_CHUNK_BYTES = 2**31  # decoded bytes of one chunk of one field (Blosc's own limit)
MAX_FIELD_DIMS = 8  # dimensions of one sample of a field
MAX_BYTE_FIGURE = 2**62  # a segment's source/decoded/stored byte counts
MAX_VERSION = 99_999_999  # manifest files are named v%08d.json
_ITEMSIZE = {"uint8": 1, "bool": 1, "uint16": 2, "int16": 2, "int32": 4, "float32": 4}
_ITEMSIZE |= {"int64": 8, "float64": 8, "str": 64}  # a string counted as Dataset.chunk_nbytes does
_DTYPES = set(_ITEMSIZE)
# Segment ids and field names become path components: one plain name, never "..", "/", "\\",
# ":" (URLs), NUL or a newline. The ids ingest makes (s000000-6f1c…) are of this form.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_REQUIRED = object()
_KINDS = {dict: "an object", list: "an array", str: "a string", int: "an integer"}
_KINDS |= {float: "a number", bool: "true or false", type(None): "null"}


def refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _short(value: Any) -> str:
    """A value for a message, cut short: a manifest's value may be megabytes long."""
    return clipped(repr(value), 60)


def _found(value: Any) -> str:
    """A found value for a message, with its JSON kind: ``'8' (a string)``."""
    return f"{_short(value)} ({_KINDS.get(type(value), type(value).__name__)})"


def _typed(value: Any, kind: type, source: str, path: str) -> Any:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise FormatError(f"{source}: {path} must be {_KINDS[kind]}, found {_found(value)}")
    return value


def _member(doc: dict, key: str, kind: type, source: str, path: str, default: Any = _REQUIRED):
    """``doc[key]`` checked to be a ``kind``; ``default`` when absent, if the key is optional."""
    if key not in doc:
        if default is _REQUIRED:
            raise FormatError(f"{source}: {path} is missing")
        return default
    return _typed(doc[key], kind, source, path)


def _integer(value: Any, source: str, path: str, low: int, high: int) -> int:
    number = _typed(value, int, source, path)
    if number < low:
        raise FormatError(f"{source}: {path} must be >= {low}, found {_found(number)}")
    if number > high:
        raise FormatError(f"{source}: {path} must be <= {high:,}, found {_found(number)}")
    return number


def _count(doc: dict, key: str, source: str, path: str, low: int, high: int, default=_REQUIRED):
    """``doc[key]``, an integer within low..high (``default`` when absent, if optional)."""
    return _integer(_member(doc, key, int, source, path, default), source, path, low, high)


# The first line of a manifest: the crc32c of the document without that line. A reader checks
# it before parsing, so any changed byte is refused, not only those that break the JSON.
_CHECKSUM_LINE = re.compile(rb'\{\n "crc32c": "([0-9a-f]{8})",\n')
_TOP_LEVEL = {"crc32c", "format", "format_version", "version", "created", "samples"}
_TOP_LEVEL |= {"chunk_samples", "classes", "fields", "segments", "history", "stats"}
_TOP_LEVEL_V2 = _TOP_LEVEL | {"class_counts", "fragments"}
_HEX8 = re.compile(r"[0-9a-f]{8}")


def _check_checksum(data: bytes, source: str) -> None:
    """Refuse a manifest whose checksum line does not match the rest (manifests written before
    checksums have no such line and no "crc32c" key at all)."""
    from lakeio.format.chunks import crc32c_hex

    line = _CHECKSUM_LINE.match(data)
    if line is None:
        if b'"crc32c"' in data[:64]:
            raise FormatError(f"{source}: the manifest's checksum line is damaged; {_EARLIER}")
        return
    computed = crc32c_hex(b"{\n" + data[line.end() :])
    if computed != line.group(1).decode():
        raise FormatError(
            f"{source}: manifest checksum mismatch (stored {line.group(1).decode()}, computed "
            f"{computed}): the file changed after it was written; {_EARLIER}"
        )


_EARLIER = "earlier versions still open with open_dataset(url, version=N)"


def _manifest_from_doc(doc: Any, source: str) -> Manifest:
    if not isinstance(doc, dict):
        raise FormatError(f"{source}: a manifest is a JSON object, found {type(doc).__name__}")
    format_version = _check_format(doc, source)
    known = _TOP_LEVEL if format_version == 1 else _TOP_LEVEL_V2
    unknown = sorted(set(doc) - known)
    if unknown:
        raise FormatError(
            f"{source}: unknown manifest keys {[k[:40] for k in unknown[:5]]} (this lakeio reads "
            f"format version {format_version} with: {', '.join(sorted(known))})"
        )
    fields = _fields(_member(doc, "fields", dict, source, "fields"), source)
    chunk_samples = _count(doc, "chunk_samples", source, "chunk_samples", 1, MAX_SAMPLES)
    _check_chunk_bytes(fields, chunk_samples, source)
    listed = _member(doc, "classes", list, source, "classes")
    classes = tuple(_typed(c, str, source, f"classes[{i}]") for i, c in enumerate(listed))
    if format_version >= 2:
        return _manifest_v2(doc, source, fields, classes, chunk_samples)
    listed = _member(doc, "segments", list, source, "segments")
    segments = tuple(
        _segment(s, i, source, len(classes), chunk_samples) for i, s in enumerate(listed)
    )
    total = sum(s.samples for s in segments)
    if total > MAX_SAMPLES:
        raise FormatError(f"{source}: segments hold {total:,} samples, over {MAX_SAMPLES:,}")
    if "samples" in doc and _integer(doc["samples"], source, "samples", 0, MAX_SAMPLES) != total:
        raise FormatError(f"{source}: samples is {doc['samples']}, the segments hold {total}")
    return Manifest(
        fields=fields,
        classes=classes,
        chunk_samples=chunk_samples,
        segments=segments,
        **_version_history_stats(doc, source, fields),
        format_version=1,
    )


def _version_history_stats(doc: dict, source: str, fields) -> dict[str, Any]:
    """The checked version, created, history and stats: the same in every format version."""
    history = _member(doc, "history", list, source, "history", [])
    for i, event in enumerate(history):
        _typed(event, dict, source, f"history[{i}]")
    stats = _member(doc, "stats", dict, source, "stats", {})
    _check_stats(stats, fields["images"].shape[-1], source)
    return {
        "version": _count(doc, "version", source, "version", 0, MAX_VERSION),
        "created": _member(doc, "created", str, source, "created", ""),
        "history": tuple(history),
        "stats": stats,
    }


def _check_format(doc: dict, source: str) -> int:
    if doc.get("format") != FORMAT_NAME:
        raise FormatError(f"{source}: not a lakeio manifest (format={_short(doc.get('format'))})")
    version = doc.get("format_version")
    if type(version) is not int or version not in FORMAT_VERSIONS:  # true == 1 in Python
        raise FormatError(
            f"{source}: format_version {_short(version)} is not supported (this lakeio reads "
            f"{', '.join(map(str, FORMAT_VERSIONS))}); upgrade lakeio"
        )
    return version


def _manifest_v2(doc: dict, source: str, fields, classes: tuple, chunk_samples: int) -> Manifest:
    """A version-2 manifest: the fragments it names are read and checked by `read_manifest`."""
    listed = _member(doc, "fragments", list, source, "fragments")
    fragments = tuple(_fragment_ref(f, i, source) for i, f in enumerate(listed))
    samples = sum(f.samples for f in fragments)
    if samples > MAX_SAMPLES:
        raise FormatError(f"{source}: fragments hold {samples:,} samples, over {MAX_SAMPLES:,}")
    if _count(doc, "samples", source, "samples", 0, MAX_SAMPLES) != samples:
        raise FormatError(f"{source}: samples is {doc['samples']}, the fragments hold {samples}")
    segments = sum(f.segments for f in fragments)
    if _count(doc, "segments", source, "segments", 0, MAX_SAMPLES) != segments:
        raise FormatError(f"{source}: segments is {doc['segments']}, the fragments hold {segments}")
    counts = _member(doc, "class_counts", list, source, "class_counts")
    if len(counts) > len(classes):
        raise FormatError(
            f"{source}: class_counts has {len(counts)} entries, the lake {len(classes)} classes"
        )
    counts = _checked_counts(counts, source, "class_counts", samples, "the lake")
    return Manifest(
        fields=fields,
        classes=classes,
        chunk_samples=chunk_samples,
        **_version_history_stats(doc, source, fields),
        format_version=2,
        fragments=fragments,
        class_counts=tuple(counts),
    )


def _fragment_ref(doc: Any, i: int, source: str) -> FragmentRef:
    path = f"fragments[{i}]"
    _typed(doc, dict, source, path)
    refuse_unknown(doc, {"id", "segments", "samples", "crc32c"}, source, path)
    fragment_id = _plain_name(_member(doc, "id", str, source, f"{path}.id"), source, f"{path}.id")
    crc = _member(doc, "crc32c", str, source, f"{path}.crc32c")
    if not _HEX8.fullmatch(crc):
        raise FormatError(f"{source}: {path}.crc32c must be 8 hex digits, found {_found(crc)}")
    return FragmentRef(
        id=fragment_id,
        segments=_count(doc, "segments", source, f"{path}.segments", 0, MAX_SAMPLES),
        samples=_count(doc, "samples", source, f"{path}.samples", 0, MAX_SAMPLES),
        crc32c=crc,
    )


def _plain_name(value: str, source: str, path: str) -> str:
    """Segment ids and field names become paths: refuse anything that could leave the lake."""
    if not _PLAIN_NAME.fullmatch(value) or ".." in value:
        raise FormatError(
            f"{source}: {path} {_found(value)} is not a plain folder name (1-128 letters, "
            "digits, '.', '_' or '-', starting with a letter or digit, no '..')"
        )
    return value


def _segment(doc: Any, i: int, source: str, classes: int, chunk_samples: int) -> SegmentEntry:
    path = f"segments[{i}]"
    _typed(doc, dict, source, path)
    segment_id = _plain_name(_member(doc, "id", str, source, f"{path}.id"), source, f"{path}.id")
    samples = _count(doc, "samples", source, f"{path}.samples", 0, MAX_SAMPLES)
    if -(-samples // chunk_samples) > MAX_SEGMENT_CHUNKS:
        raise FormatError(
            f"{source}: {path}.samples {samples:,} make {-(-samples // chunk_samples):,} chunks "
            f"of {chunk_samples}; a segment holds at most {MAX_SEGMENT_CHUNKS:,}"
        )
    counts = _member(doc, "class_counts", list, source, f"{path}.class_counts", [])
    if len(counts) > classes:
        raise FormatError(
            f"{source}: segment {segment_id} counts {len(counts)} classes, the lake has {classes}"
        )
    counts = _checked_counts(counts, source, f"{path}.class_counts", samples, "the segment")
    figures = {
        key: _count(doc, key, source, f"{path}.{key}", 0, MAX_BYTE_FIGURE, default=0)
        for key in ("source_bytes", "decoded_bytes", "stored_bytes")
    }
    return SegmentEntry(segment_id, samples, tuple(counts), **figures)


def _checked_counts(counts: list, source: str, path: str, samples: int, holder: str) -> list:
    """Per-class counts: integers within range (a bad one named by its place) that add up to
    the ``samples`` of ``holder``, or none at all (not known)."""
    if not _plain_counts(counts):  # find the bad one, to name it
        counts = [_integer(c, source, f"{path}[{j}]", 0, MAX_SAMPLES) for j, c in enumerate(counts)]
    if counts and sum(counts) != samples:
        raise FormatError(
            f"{source}: {path} add up to {sum(counts)}, but {holder} holds {samples} samples"
        )
    return counts


def refuse_unknown(doc: dict, known: frozenset | set, source: str, path: str) -> None:
    """A document lakeio writes holds only the keys it writes: anything else is refused."""
    unknown = sorted(set(doc) - known)
    if unknown:
        raise FormatError(
            f"{source}: {path} has unknown keys {[str(k)[:40] for k in unknown[:5]]} "
            f"(it holds {', '.join(sorted(known))})"
        )


def _plain_counts(counts: list) -> bool:
    """Whether every count is an int (not a bool) within 0..MAX_SAMPLES: one pass at C speed.
    (Checked one by one, with a path built for each, the counts were 95% of opening a lake
    with a thousand classes.)"""
    return all(type(c) is int for c in counts) and (
        not counts or (min(counts) >= 0 and max(counts) <= MAX_SAMPLES)
    )


def _fields(doc: dict, source: str) -> dict[str, FieldInfo]:
    fields = {name: _field(name, value, source) for name, value in doc.items()}
    missing = {"images", "labels"} - set(fields)
    if missing:
        raise FormatError(
            f"{source}: fields {sorted(missing)} are missing; a lake has images and labels"
        )
    images, labels = fields["images"], fields["labels"]
    if images.dtype != "uint8" or len(images.shape) != 3 or images.shape[-1] not in (1, 3):
        raise FormatError(
            f"{source}: fields.images must be uint8 of shape [height, width, 1 or 3], "
            f"found {images.dtype} {list(images.shape)}"
        )
    if labels.dtype != "int64" or labels.shape:
        raise FormatError(
            f"{source}: fields.labels must be int64 of shape [], "
            f"found {labels.dtype} {list(labels.shape)}"
        )
    return fields


def _field(name: str, doc: Any, source: str) -> FieldInfo:
    path = f"fields.{_plain_name(name, source, 'field name')}"
    _typed(doc, dict, source, path)
    dtype = _member(doc, "dtype", str, source, f"{path}.dtype")
    if dtype not in _DTYPES:
        raise FormatError(
            f"{source}: field {name!r} has dtype {_found(dtype)}; expected one of {sorted(_DTYPES)}"
        )
    listed = _member(doc, "shape", list, source, f"{path}.shape")
    if len(listed) > MAX_FIELD_DIMS:
        raise FormatError(
            f"{source}: {path}.shape has {len(listed)} dimensions, at most {MAX_FIELD_DIMS}"
        )
    shape = tuple(_typed(d, int, source, f"{path}.shape[{k}]") for k, d in enumerate(listed))
    if any(d < 1 for d in shape):
        raise FormatError(
            f"{source}: field {name!r} has shape {_found(list(shape))}; dimensions must be >= 1"
        )
    if math.prod(shape) * _ITEMSIZE[dtype] > MAX_CHUNK_BYTES:
        raise FormatError(
            f"{source}: {path}.shape {_found(list(shape))} makes one {dtype} sample larger than "
            f"a chunk may be ({MAX_CHUNK_BYTES:,} bytes)"
        )
    codec = _member(doc, "codec", str, source, f"{path}.codec")
    try:
        parse_codec(codec if len(codec) <= 64 else "?")
    except CodecError:
        raise FormatError(
            f"{source}: {path}.codec {_found(codec)} is not a codec spec (`lakeio codecs` "
            "lists them)"
        ) from None
    return FieldInfo(dtype=dtype, shape=shape, codec=codec)


def _check_chunk_bytes(fields: dict[str, FieldInfo], chunk_samples: int, source: str) -> None:
    for name, info in fields.items():
        size = chunk_samples * math.prod(info.shape) * _ITEMSIZE[info.dtype]
        if size > MAX_CHUNK_BYTES:
            raise FormatError(
                f"{source}: chunk_samples {chunk_samples:,} makes a chunk of field {name!r} "
                f"{size:,} bytes, over the limit of {MAX_CHUNK_BYTES:,}"
            )


def _check_stats(stats: dict, channels: int, source: str) -> None:
    """The parts of ``stats`` readers use (`lakeio info`, ``normalize="lake"``)."""
    _count(stats, "samples", source, "stats.samples", 0, MAX_SAMPLES, default=0)
    if "images" not in stats:
        return
    images = _typed(stats["images"], dict, source, "stats.images")
    for key in ("mean", "std"):
        values = _member(images, key, list, source, f"stats.images.{key}")
        if len(values) != channels:
            raise FormatError(
                f"{source}: stats.images.{key} has {len(values)} values, the images {channels} "
                "channels"
            )
        for k, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise FormatError(
                    f"{source}: stats.images.{key}[{k}] must be a number, found {_found(v)}"
                )


def manifest_from_json(data: bytes, source: str) -> Manifest:
    """The checked `Manifest` in ``data`` (the file ``source``)."""
    _check_checksum(data, source)
    try:
        doc = json.loads(data, parse_constant=refuse_constant)
    except RecursionError:
        raise FormatError(f"{source}: manifest is nested too deeply to be a manifest") from None
    except ValueError as exc:  # bad JSON or UTF-8, NaN/Infinity, an integer of 4,300+ digits
        raise FormatError(f"{source}: manifest is not valid JSON ({exc})") from None
    return _manifest_from_doc(doc, source)
