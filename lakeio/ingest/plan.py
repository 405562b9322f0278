"""Splitting an ingest into segments: pure functions of the (sorted) source list and the options.

A segment's id is a hash of everything that determines its contents, so a rerun of the same
command finds the segments an interrupted run already wrote, and an unchanged source is
recognised as already ingested.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable

MAX_SEGMENT_CHUNKS_V1 = 8  # what lakes of format version 1 were cut at (kept: a rerun finds them)
MAX_SEGMENT_CHUNKS = 256  # about 1 GiB at the default 4 MiB chunks: fewer segments, less metadata
TARGET_SEGMENTS = 64  # an ingest spreads over this many tasks where its size allows
MIN_SEGMENTS = 16  # ... and over no fewer where it can (tasks of at least 8 chunks, else 1)


def segment_samples(total: int, chunk_samples: int, format_version: int = 2) -> int:
    """Samples per segment: whole chunks, sized for the ingest, not for the machine.

    A large ingest gets about `TARGET_SEGMENTS` segments of up to `MAX_SEGMENT_CHUNKS` chunks
    each (a task writes its segment chunk by chunk, so the size costs no memory); a small one
    keeps segments of 8 chunks, or fewer where that leaves under `MIN_SEGMENTS` tasks. The size
    depends on the ingest alone, never on the workers: a rerun must cut the same segments to
    find the ones already written. Version-1 lakes keep version 1's cut (at most 8 chunks).
    """
    chunks = max(1, math.ceil(total / chunk_samples))
    small = min(MAX_SEGMENT_CHUNKS_V1, max(1, math.ceil(chunks / MIN_SEGMENTS)))
    if format_version == 1:
        return small * chunk_samples
    per_segment = min(MAX_SEGMENT_CHUNKS, max(small, math.ceil(chunks / TARGET_SEGMENTS)))
    return per_segment * chunk_samples


def segment_ranges(total: int, per_segment: int) -> list[range]:
    """Consecutive source ranges of ``per_segment`` items (the last may be shorter)."""
    return [range(start, min(start + per_segment, total)) for start in range(0, total, per_segment)]


def fingerprint(options: dict) -> str:
    """A stable digest of the options that shape a segment's bytes."""
    return hashlib.blake2b(json.dumps(options, sort_keys=True).encode(), digest_size=16).hexdigest()


def segment_id(options_digest: str, index: int, content: Iterable[bytes]) -> str:
    """``s<index>-<hash>``: sorts in plan order, changes whenever contents or options change."""
    digest = hashlib.blake2b(options_digest.encode(), digest_size=10)
    for part in content:
        digest.update(part)
    return f"s{index:06d}-{digest.hexdigest()}"
