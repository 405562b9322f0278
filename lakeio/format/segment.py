"""Segments: immutable Zarr groups of aligned, sample-chunked arrays, one written per ingest task.

A segment folder is ``segments/<id>/`` with one Zarr v3 array per field. It counts as complete
only once its group attributes carry a ``lakeio_segment`` summary, written after every chunk;
a segment without it is debris from a crashed run and is rewritten, never read.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

import numpy as np

from lakeio.format.chunks import crc32c_hex, encode_chunk, encode_text_chunk
from lakeio.format.codecs import parse_codec
from lakeio.format.location import Location, remove_dead_partials
from lakeio.format.manifest import SEGMENT_DIR, FieldInfo
from lakeio.format.manifest_checks import MAX_BYTE_FIGURE, MAX_SAMPLES, refuse_constant

SUMMARY_ATTR = "lakeio_segment"
METADATA_CHECKSUMS = "metadata_crc32c"  # in the summary: of each field's array zarr.json
SUMMARY_CHECKSUM = "crc32c"  # in the summary: of the rest of it (segments written since v0.2)
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024


def default_chunk_samples(sample_bytes: int, target_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Samples per chunk so that one chunk holds about ``target_bytes`` uncompressed."""
    return max(1, target_bytes // max(1, sample_bytes))


def segment_key(segment_id: str) -> str:
    return f"{SEGMENT_DIR}/{segment_id}"


def chunk_count(samples: int, chunk_samples: int) -> int:
    return math.ceil(samples / chunk_samples) if samples else 0


def chunk_key(segment_id: str, field: str, chunk_index: int, ndim: int) -> str:
    """The store key of one chunk: Zarr v3 default encoding with "." separators (``c.7.0.0.0``).

    Only the sample axis is chunked, so the trailing indices are always 0; "." keeps a field's
    chunks in one folder instead of a chain of nested single-entry ones.
    """
    return f"{segment_key(segment_id)}/{field}/c." + ".".join(
        [str(chunk_index)] + ["0"] * (ndim - 1)
    )


def _dimension_names(name: str, ndim: int) -> list[str]:
    if name == "images" and ndim == 4:
        return ["sample", "y", "x", "channel"]
    return ["sample", *[f"{name}_dim{i}" for i in range(1, ndim)]]


def write_segment(
    loc: Location,
    segment_id: str,
    columns: dict[str, np.ndarray],
    fields: dict[str, FieldInfo],
    chunk_samples: int,
    summary: dict[str, Any],
    streamed: dict[str, tuple[int, int]] | None = None,
) -> int:
    """Write aligned ``columns`` as segment ``segment_id``, then mark it complete; returns bytes stored.

    Chunks and array metadata are written directly (the metadata from a template zarr itself
    made, the chunks byte for byte as zarr encodes them): per-segment zarr calls cost more than
    the pixels for small segments. ``streamed`` names fields whose chunks the caller already
    wrote with `write_chunks` (field → (samples, bytes stored)): a large segment's images go out
    chunk by chunk, never held whole. The group's ``zarr.json``, written last, marks completion.
    """
    key = segment_key(segment_id)
    if not streamed:
        start_segment(loc, segment_id)
    streamed = streamed or {}
    lengths = {name: len(data) for name, data in columns.items()}
    lengths |= {name: samples for name, (samples, _) in streamed.items()}
    samples = next(iter(lengths.values()))
    stored = 0
    for name, length in lengths.items():
        if length != samples:
            raise ValueError(f"field {name!r} has {length} samples, expected {samples}")
    for name, data in columns.items():
        stored += write_chunks(loc, segment_id, name, data, fields[name], chunk_samples)
    for name in lengths:
        stored += streamed.get(name, (0, 0))[1]
        stored += _finish_field(loc, segment_id, name, fields[name], chunk_samples, samples)
    metadata = {
        name: crc32c_hex(field_document(name, fields[name], chunk_samples, samples))
        for name in lengths
    }  # what verify checks each array's zarr.json against, whatever zarr writes later
    facts = {**summary, "samples": samples, "stored_bytes": stored, METADATA_CHECKSUMS: metadata}
    loc.write_atomic(f"{key}/zarr.json", group_document(facts))
    return stored


def start_segment(loc: Location, segment_id: str) -> None:
    """Before a segment's first chunk: clear what a killed attempt left half-written."""
    if loc.is_local:  # a killed attempt's temp files: its writer is gone, nobody will finish them
        remove_dead_partials(loc.path(segment_key(segment_id)))
    # No cleanup beyond that: a segment id fixes its bytes, so rewriting over a crashed (or a
    # racing) attempt writes identical files, each replaced atomically; nothing committed is
    # ever removed.


def summary_checksum(summary: dict[str, Any]) -> str:
    """crc32c of a segment summary's content (its own checksum left out), so `lakeio verify`
    sees any changed byte of it, not only those that break the JSON."""
    body = {k: v for k, v in summary.items() if k != SUMMARY_CHECKSUM}
    return crc32c_hex(json.dumps(body, sort_keys=True, ensure_ascii=False).encode())


def group_document(summary: dict[str, Any]) -> bytes:
    """A segment's group zarr.json, byte for byte: the completion summary with its checksum."""
    facts = {**summary, SUMMARY_CHECKSUM: summary_checksum(summary)}
    group = {"zarr_format": 3, "node_type": "group", "attributes": {SUMMARY_ATTR: facts}}
    return json.dumps(group, indent=2, ensure_ascii=False).encode()


def field_document(name: str, info: FieldInfo, chunk_samples: int, samples: int) -> bytes:
    """A field's array zarr.json, byte for byte, as `write_segment` writes it."""
    metadata = dict(array_metadata(name, info, chunk_samples), shape=[samples, *info.shape])
    return json.dumps(metadata, indent=2).encode()


def write_chunks(
    loc, segment_id, name, data, info: FieldInfo, chunk_samples: int, first: int = 0
) -> int:
    """Write ``data`` as the field's chunks ``first``, ``first + 1``, …; returns bytes written.
    Every block but the field's last must be whole chunks."""
    codec = parse_codec(info.codec)
    encode = encode_text_chunk if info.dtype == "str" else encode_chunk
    stored = 0
    for index, start in enumerate(range(0, len(data), chunk_samples), start=first):
        chunk = encode(data[start : start + chunk_samples], chunk_samples, codec)
        stored += loc.write(chunk_key(segment_id, name, index, 1 + len(info.shape)), chunk)
    return stored


def _finish_field(loc, segment_id, name, info: FieldInfo, chunk_samples: int, samples: int) -> int:
    """A field's metadata, once its chunks are written; returns the bytes written."""
    array_key = f"{segment_key(segment_id)}/{name}"
    stored = loc.write(f"{array_key}/zarr.json", field_document(name, info, chunk_samples, samples))
    loc.sync_dir(array_key)  # the chunk names must be durable before the completion marker
    return stored


@lru_cache(maxsize=64)
def _metadata_template(name: str, info: FieldInfo, chunk_samples: int) -> str:
    import zarr

    is_text = info.dtype == "str"
    backing: dict = {}
    zarr.create_array(
        zarr.storage.MemoryStore(backing),
        name=name,
        shape=(0, *info.shape),
        chunks=(chunk_samples, *info.shape),
        dtype=str if is_text else info.dtype,
        filters=[] if is_text else parse_codec(info.codec).filters(info.dtype, info.shape),
        compressors=parse_codec(info.codec).compressors(),
        fill_value="" if is_text else 0,
        dimension_names=_dimension_names(name, 1 + len(info.shape)),
        config={"write_empty_chunks": True},
        chunk_key_encoding={"name": "default", "separator": "."},
    )
    return backing[f"{name}/zarr.json"].to_bytes().decode()


def array_metadata(name: str, info: FieldInfo, chunk_samples: int) -> dict:
    """The zarr.json document zarr writes for this field (with a zero-length sample axis)."""
    return json.loads(_metadata_template(name, info, chunk_samples))


def read_segment_summary(loc: Location, segment_id: str) -> dict[str, Any] | None:
    """The completion summary of a segment, or None if it is absent, incomplete or malformed.

    A summary that is not what lakeio writes (wrong types, absurd counts, JSON nested a
    thousand deep) marks no segment complete: a rerun rewrites it and `lakeio verify` names it.
    """
    try:
        raw = loc.read_bytes(f"{segment_key(segment_id)}/zarr.json")
    except FileNotFoundError:
        return None
    return parse_segment_summary(raw)


def parse_segment_summary(raw: bytes) -> dict[str, Any] | None:
    """The completion summary in a segment group's ``zarr.json`` bytes, or None (as above)."""
    try:
        doc = json.loads(raw, parse_constant=refuse_constant)
    except (ValueError, RecursionError):  # bad JSON or UTF-8, NaN, nested past the stack
        return None
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    summary = attrs.get(SUMMARY_ATTR) if isinstance(attrs, dict) else None
    return summary if isinstance(summary, dict) and _summary_is_valid(summary) else None


def _is_count(value: Any, high: int = MAX_BYTE_FIGURE) -> bool:
    return type(value) is int and 0 <= value <= high


def _summary_is_valid(summary: dict[str, Any]) -> bool:
    """The keys readers use have the types and ranges lakeio writes (those absent are optional,
    but ``samples`` and ``stored_bytes``, which `write_segment` always adds)."""
    if not (
        _is_count(summary.get("samples"), MAX_SAMPLES) and _is_count(summary.get("stored_bytes"))
    ):
        return False
    if not all(_is_count(summary.get(k, 0)) for k in ("source_bytes", "decoded_bytes")):
        return False
    counts = summary.get("class_counts", [])
    if not isinstance(counts, list) or not all(_is_count(c, MAX_SAMPLES) for c in counts):
        return False
    rejects = summary.get("rejects", [])
    return isinstance(rejects, list) and all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(t, str) for t in r) for r in rejects
    )
