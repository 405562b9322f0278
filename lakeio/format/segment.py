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

from lakeio.format.chunks import encode_chunk, encode_text_chunk
from lakeio.format.codecs import parse_codec
from lakeio.format.location import Location
from lakeio.format.manifest import SEGMENT_DIR, FieldInfo

SUMMARY_ATTR = "lakeio_segment"
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
) -> int:
    """Write aligned ``columns`` as segment ``segment_id``, then mark it complete; returns bytes stored.

    Chunks and array metadata are written directly (the metadata from a template zarr itself
    made, the chunks byte for byte as zarr encodes them): per-segment zarr calls cost more than
    the pixels for small segments. The group's ``zarr.json``, written last, marks completion.
    """
    key = segment_key(segment_id)
    # No cleanup first: a segment id fixes its bytes, so rewriting over a crashed (or a racing)
    # attempt writes identical files, each replaced atomically; nothing committed is ever removed.
    samples = len(next(iter(columns.values())))
    stored = 0
    for name, data in columns.items():
        info = fields[name]
        if len(data) != samples:
            raise ValueError(f"field {name!r} has {len(data)} samples, expected {samples}")
        stored += _write_field(loc, segment_id, name, data, info, chunk_samples)
    attributes = {SUMMARY_ATTR: {**summary, "samples": samples, "stored_bytes": stored}}
    group = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    loc.write_atomic(f"{key}/zarr.json", json.dumps(group, indent=2, ensure_ascii=False).encode())
    return stored


def _write_field(loc, segment_id, name, data, info: FieldInfo, chunk_samples: int) -> int:
    """Write one field's chunks, then its metadata; returns the bytes written."""
    codec = parse_codec(info.codec)
    encode = encode_text_chunk if info.dtype == "str" else encode_chunk
    stored = 0
    for index, start in enumerate(range(0, len(data), chunk_samples)):
        chunk = encode(data[start : start + chunk_samples], chunk_samples, codec)
        stored += loc.write(chunk_key(segment_id, name, index, 1 + len(info.shape)), chunk)
    metadata = dict(array_metadata(name, info, chunk_samples), shape=[len(data), *info.shape])
    array_key = f"{segment_key(segment_id)}/{name}"
    stored += loc.write(f"{array_key}/zarr.json", json.dumps(metadata, indent=2).encode())
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
    """The completion summary of a segment, or None if it is absent or incomplete."""
    try:
        raw = loc.read_bytes(f"{segment_key(segment_id)}/zarr.json")
    except FileNotFoundError:
        return None
    try:
        attrs = json.loads(raw).get("attributes", {})
    except (ValueError, AttributeError):
        return None
    summary = attrs.get(SUMMARY_ATTR)
    return summary if isinstance(summary, dict) else None
