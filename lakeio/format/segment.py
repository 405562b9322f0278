"""Segments: immutable Zarr groups of aligned, sample-chunked arrays, one written per ingest task.

A segment folder is ``segments/<id>/`` with one Zarr v3 array per field. It counts as complete
only once its group attributes carry a ``lakeio_segment`` summary, written after every chunk;
a segment without it is debris from a crashed run and is rewritten, never read.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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
    """The store key of one chunk (Zarr v3 default encoding; only the sample axis is chunked)."""
    rest = "/".join(["0"] * (ndim - 1))
    suffix = f"{chunk_index}/{rest}" if rest else f"{chunk_index}"
    return f"{segment_key(segment_id)}/{field}/c/{suffix}"


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
    """Write aligned ``columns`` as segment ``segment_id``, then mark it complete; returns bytes stored."""
    import zarr

    key = segment_key(segment_id)
    loc.remove(key)  # debris from an interrupted attempt is never reused
    store = loc.zarr_store()
    samples = len(next(iter(columns.values())))
    group = zarr.open_group(store, path=key, mode="w", zarr_format=3)
    for name, data in columns.items():
        info = fields[name]
        if len(data) != samples:
            raise ValueError(f"field {name!r} has {len(data)} samples, expected {samples}")
        is_text = info.dtype == "str"
        array = group.create_array(
            name=name,
            shape=(samples, *info.shape),
            chunks=(chunk_samples, *info.shape),
            dtype=str if is_text else info.dtype,
            compressors=parse_codec(info.codec).compressors(),
            fill_value="" if is_text else 0,
            dimension_names=_dimension_names(name, 1 + len(info.shape)),
            config={"write_empty_chunks": True},
        )
        if samples:
            array[...] = data
    stored = loc.size_under(key)
    group.attrs.update({SUMMARY_ATTR: {**summary, "samples": samples, "stored_bytes": stored}})
    return stored


def read_segment_summary(loc: Location, segment_id: str) -> dict[str, Any] | None:
    """The completion summary of a segment, or None if it is absent or incomplete."""
    import json

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
