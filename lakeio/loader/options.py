"""What a loader streams and how far ahead (the part of its options that is not the plan)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamOptions:
    """What to read and how far ahead: ``fields``; ``prefetch_bytes`` of decoded chunks held or in
    flight (default: two shuffle windows); ``threads`` loading chunks; ``ahead`` batches ready;
    ``prefetch_next_epoch``: once an epoch's last batch is assembled, start loading the next
    epoch's first chunks (so it starts without a pause)."""

    fields: tuple[str, ...] = ("images", "labels")
    prefetch_bytes: int | None = None
    threads: int | None = None  # None: chosen for the store (`EpochReader.load_threads`)
    ahead: int = 2
    output: str = "tuple"
    prefetch_next_epoch: bool = True
