"""How many chunk reads must be in flight to keep a training loop fed: Little's law.

A read from a bucket takes its latency W whatever the chunk's size, so a loop that takes λ
chunks a second from the origin needs L = λ × W reads outstanding at all times. The loader's
prefetcher starts a load each time the budget frees a chunk's worth, so while threads and the
budget allow, what is in flight follows the loop's own pace: L adjusts itself. What can stop
it is the cap, the smaller of the load threads and the chunks the prefetch budget holds. These
figures, from the loader's own measurements, say whether the cap is what held a loop back, and
what would lift it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ReadFigures:
    """``latency_s``: a recent origin read, first byte to last (exponentially weighted).
    ``wanted_chunks_per_s``: chunks the loop took per second of its own work (waits left out),
    i.e. the rate it would run at if data never held it up. ``origin_share``: the part of them
    read from the origin (the rest came from the memory or disk tier). ``in_flight_needed``:
    Little's law, wanted × origin share × latency. ``in_flight_cap``: chunk loads the loader
    may run at once, the smaller of ``threads`` and the chunks the prefetcher may hold.
    ``peak_in_flight``: origin reads seen at once (each field its own). ``epoch_chunks``: the
    chunks an epoch reads (0: not known); a cap that already covers them all is not what
    holds the loop up, however high Little's law comes out (a short epoch of a slow store)."""

    latency_s: float
    wanted_chunks_per_s: float
    origin_share: float
    in_flight_needed: int
    in_flight_cap: int
    peak_in_flight: int
    threads: int
    held_chunks: int
    threads_set_by: str = "budget"  # "threads" (given), "max-in-flight" or "budget"
    epoch_chunks: int = 0

    @property
    def cap_limits(self) -> bool:
        covers_epoch = 0 < self.epoch_chunks <= self.in_flight_cap
        return self.in_flight_needed > self.in_flight_cap and not covers_epoch

    def as_dict(self) -> dict:
        return {**asdict(self), "cap_limits": self.cap_limits}


def read_figures(
    chunks: int,
    busy_seconds: float,
    origin_reads: int,
    requests: int,
    latency_s: float,
    threads: int,
    held_chunks: int,
    peak: int,
    threads_set_by: str = "budget",
    epoch_chunks: int = 0,
) -> ReadFigures:
    """The figures from a loader's counts: ``chunks`` it loaded in ``busy_seconds`` of the
    loop's own work, ``origin_reads`` of ``requests`` chunk reads went to the origin; it runs
    ``threads`` loads at most (set by ``threads_set_by``: "threads" given by the user,
    "max-in-flight", or "budget", whose chunks the threads follow), and holds at most
    ``held_chunks`` chunks loaded or loading."""
    wanted = chunks / busy_seconds if busy_seconds > 0 else 0.0
    share = min(1.0, origin_reads / requests) if requests else 0.0
    needed = math.ceil(wanted * share * latency_s) if latency_s > 0 else 0
    cap = min(threads, held_chunks)
    return ReadFigures(
        latency_s, wanted, share, needed, cap, peak, threads, held_chunks, threads_set_by,
        epoch_chunks,
    )  # fmt: skip


def advice(figures: ReadFigures, chunk_bytes: int, stall_fraction: float) -> str | None:
    """One line for a user whose loop waited on reads because of the cap, else None, naming
    the setting that binds. (Not a warning: a loop that does no work, a benchmark's or a
    test's, always waits.)"""
    if not figures.cap_limits or stall_fraction < 0.05:
        return None
    needed = figures.in_flight_needed
    why = (
        f"the training loop waited {stall_fraction:.0%} of its time for data: at "
        f"{figures.latency_s * 1000:.0f} ms a read and {figures.wanted_chunks_per_s:.0f} chunks/s "
        f"it needs {needed} reads in flight (Little's law), and the loader allows "
        f"{figures.in_flight_cap}"
    )
    if figures.threads < needed and figures.threads_set_by != "budget":
        fix = (
            f"threads={needed}"
            if figures.threads_set_by == "threads"
            else (f"lakeio.read.max-in-flight to {needed}")
        )
        return f"{why}; raise {fix} (the loading threads are the cap)"
    budget = needed * chunk_bytes
    size = f"{budget / 2**20:.0f}MiB" if budget >= 2**20 else f"{math.ceil(budget / 1024)}KiB"
    return f"{why}; pass prefetch_bytes={size!r} or more (the prefetch budget is the cap)"
