"""`lakeio verify`: read every chunk of every committed segment and check it end to end.

A chunk is bad if it is missing, fails its crc32c, does not decode to its shape, or holds
values the manifest rules out (labels outside the class list). Fields must align per segment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lakeio.dataset import Dataset
from lakeio.errors import CorruptChunkError
from lakeio.format.segment import chunk_count, read_segment_summary


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
                except CorruptChunkError as exc:
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
    """Each field's stored length must equal the manifest's sample count for the segment."""
    import json

    seg = ds.manifest.segments[s]
    if read_segment_summary(ds.loc, seg.id) is None:
        report.problems.append((f"{seg.key}/zarr.json", "segment is not marked complete"))
    for name in ds.manifest.fields:
        key = f"{seg.key}/{name}/zarr.json"
        try:
            shape = json.loads(ds.loc.read_bytes(key))["shape"]
        except (FileNotFoundError, ValueError, KeyError) as exc:
            report.problems.append((key, f"array metadata unreadable ({exc!r})"))
            continue
        if shape[0] != seg.samples:
            report.problems.append(
                (
                    key,
                    f"{shape[0]} samples, but the manifest says {seg.samples} (fields misaligned)",
                )
            )


def count_chunks(ds: Dataset) -> int:
    m = ds.manifest
    return sum(chunk_count(s.samples, m.chunk_samples) for s in m.segments) * len(m.fields)
