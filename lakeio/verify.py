"""`lakeio verify`: read every chunk of every committed segment and check it end to end.

A chunk is bad if it is missing, fails its crc32c, does not decode to its shape, or holds
values the manifest rules out (labels outside the class list). Fields must align per segment.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lakeio.dataset import Dataset
from lakeio.errors import ChunkError, CorruptChunkError
from lakeio.format.chunks import crc32c_hex
from lakeio.format.manifest_checks import refuse_constant
from lakeio.format.segment import (
    METADATA_CHECKSUMS,
    SUMMARY_CHECKSUM,
    chunk_count,
    field_document,
    group_document,
    parse_segment_summary,
    summary_checksum,
)


@dataclass
class VerifyReport:
    """What verification found: chunks checked and every problem by chunk key."""

    chunks_checked: int = 0
    samples: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_lake(ds: Dataset, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check every chunk of ``ds``; problems are collected, not raised."""
    report = VerifyReport(samples=len(ds))
    m = ds.manifest
    for s, seg in enumerate(m.segments):
        _check_segment_summary(ds, s, report)
        for name in m.fields:
            for c in range(chunk_count(seg.samples, m.chunk_samples)):
                try:
                    chunk = ds.source.read_origin(s, name, c)
                    if name == "labels":
                        key = ds.source.key(s, name, c)
                        _check_labels(chunk, seg.samples - c * m.chunk_samples, len(m.classes), key)
                except ChunkError as exc:
                    report.problems.append((exc.key, exc.reason))
                report.chunks_checked += 1
                if progress:
                    progress(1)
    return report


def _check_labels(chunk: np.ndarray, valid_rows: int, classes: int, key: str) -> None:
    rows = chunk[: max(0, valid_rows)]
    bad = rows[(rows < 0) | (rows >= classes)]
    if bad.size:
        raise CorruptChunkError(
            key, f"labels {sorted(set(bad.tolist()))[:5]} outside 0..{classes - 1}"
        )


def _check_segment_summary(ds: Dataset, s: int, report: VerifyReport) -> None:
    """Every zarr.json of the segment must be what lakeio wrote: the group's completion summary
    (checksummed, and agreeing with the manifest) and each field's array metadata (checked
    against the checksums the summary recorded, or, in older segments, by content)."""
    seg, m = ds.manifest.segments[s], ds.manifest
    raw = _read_metadata(ds, f"{seg.key}/zarr.json")  # read once: summary and bytes both
    summary = parse_segment_summary(raw) if isinstance(raw, bytes) else None
    recorded = (summary or {}).get(METADATA_CHECKSUMS)
    problems = [(f"{seg.key}/zarr.json", _group_problem(seg, raw, summary))]
    for name, info in m.fields.items():
        key = f"{seg.key}/{name}/zarr.json"
        problems.append((key, _array_problem(ds, key, seg, name, info, recorded)))
    report.problems += [(key, problem) for key, problem in problems if problem]


def _group_problem(seg, raw: bytes | str, summary: dict | None) -> str | None:
    if isinstance(raw, str):
        return raw
    if summary is None:
        return "segment is not marked complete (no readable lakeio_segment summary)"
    stored = summary.get(SUMMARY_CHECKSUM)
    if stored is not None and stored != summary_checksum(summary):
        return f"summary checksum mismatch (stored {stored}, computed {summary_checksum(summary)})"
    if summary.get("samples") != seg.samples:
        return f"{summary.get('samples')} samples, but the manifest says {seg.samples}"
    body = {k: v for k, v in summary.items() if k != SUMMARY_CHECKSUM}
    if stored is not None and raw != group_document(body):  # lakeio's own JSON layout
        return "bytes differ from the document lakeio wrote (its content parses the same)"
    return None


# What zarr readers take from an array's zarr.json (checked by value in older segments).
_READ_KEYS = ("shape", "data_type", "chunk_grid", "codecs", "fill_value", "chunk_key_encoding")


def _array_problem(ds: Dataset, key: str, seg, name: str, info, recorded) -> str | None:
    raw = _read_metadata(ds, key)
    if isinstance(raw, str):
        return raw
    if isinstance(recorded, dict) and name in recorded:
        found = crc32c_hex(raw)
        if found == recorded[name]:
            return None
        return f"changed since it was written (crc32c {found}, recorded {recorded[name]})"
    try:  # a segment written before metadata checksums
        doc = json.loads(raw, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as exc:
        return f"array metadata is not JSON ({str(exc)[:80]})"
    shape = doc.get("shape") if isinstance(doc, dict) else None
    if not (isinstance(shape, list) and shape and all(type(n) is int for n in shape)):
        return f"array metadata has no valid shape (found {str(shape)[:60]})"
    if shape[0] != seg.samples:
        return f"{shape[0]} samples, but the manifest says {seg.samples} (fields misaligned)"
    expected = json.loads(field_document(name, info, ds.manifest.chunk_samples, seg.samples))
    changed = [k for k in _READ_KEYS if doc.get(k) != expected.get(k)]
    return f"array metadata differs from what lakeio wrote in {changed}" if changed else None


def _read_metadata(ds: Dataset, key: str) -> bytes | str:
    """The file's bytes, or a problem saying why there are none."""
    try:
        return ds.loc.read_bytes(key)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc})"


def count_chunks(ds: Dataset) -> int:
    m = ds.manifest
    return sum(chunk_count(s.samples, m.chunk_samples) for s in m.segments) * len(m.fields)
