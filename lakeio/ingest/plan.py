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

MAX_SEGMENT_CHUNKS = 8
TARGET_SEGMENTS = 16


def segment_samples(total: int, chunk_samples: int) -> int:
    """Samples per segment: whole chunks, enough segments to spread work, at most 8 chunks each."""
    chunks = max(1, math.ceil(total / chunk_samples))
    per_segment = min(MAX_SEGMENT_CHUNKS, max(1, math.ceil(chunks / TARGET_SEGMENTS)))
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
