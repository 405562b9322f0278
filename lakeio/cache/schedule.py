"""When each cached chunk is needed next, as the plan-aware memory tier asks it.

`Schedule` keeps what one reader said last (a loader and its own process tier). On a Dask
worker several readers share one tier: the ranks of a job, other jobs, other lakes and versions.
There the last word must not win (a rank saying "never again" would evict what another rank
needs next), and readers' clocks differ (epoch 50 of one job is not later than epoch 2 of
another), so `SharedSchedule` keeps each reader's word on its own clock and asks how far ahead
of each reader's present a key is due.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


class Schedule:
    """The last next-use told for each key, by whichever reader (one reader, one clock)."""

    def __init__(self) -> None:
        self._next_use: dict[str, float] = {}

    def tell(self, next_use: Mapping[str, float], reader: str = "", now: float = 0.0) -> None:
        self._next_use.update(next_use)

    def when(self, key: str) -> float:
        """How soon ``key`` is needed (smaller = sooner); ``inf`` if never, as far as known."""
        return self._next_use.get(key, math.inf)

    def forget(self, reader: str) -> None:
        """``reader`` is done (one reader: nothing to do; its word stands until replaced)."""

    def expire(self) -> None:
        """Drop what no longer holds (one reader: nothing expires)."""

    @property
    def readers(self) -> int:
        return 1 if self._next_use else 0

    @property
    def empty(self) -> bool:
        return not self._next_use

    def clear(self) -> None:
        self._next_use.clear()


@dataclass
class _Reader:
    now: float = 0.0
    heard: float = 0.0
    tells: int = 0
    due: dict[str, float] = field(default_factory=dict)


PRUNE_EVERY = 64  # tells of one reader between sweeps of its passed dues


class SharedSchedule(Schedule):
    """Next uses from many readers, each on its own clock (for a loader: epochs, e.g. 3.25).

    A reader says where it is (``now``) and when keys are due on its clock. A key's next use is
    the soonest any reader still expects it, counted from that reader's present: ``due - now``.
    Dues already passed no longer count (the reader read the key, from here or elsewhere). A
    reader silent for ``ttl`` seconds is forgotten, so a finished job stops holding chunks.
    Within one epoch a reader's clock only moves forward (loads of one epoch may arrive out of
    order); a new epoch, earlier or later, sets it.
    """

    def __init__(self, ttl: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.ttl = ttl
        self._clock = clock
        self._readers: dict[str, _Reader] = {}

    def tell(self, next_use: Mapping[str, float], reader: str = "", now: float = 0.0) -> None:
        self.expire()
        entry = self._readers.setdefault(reader, _Reader(now=now))
        same_epoch = math.floor(now) == math.floor(entry.now)
        entry.now = max(entry.now, now) if same_epoch else now
        entry.heard = self._clock()
        entry.due.update(next_use)
        entry.tells += 1
        if entry.tells % PRUNE_EVERY == 0:
            entry.due = {key: due for key, due in entry.due.items() if due >= entry.now}

    def expire(self) -> None:
        """Forget readers silent for longer than ``ttl``."""
        heard = self._clock()
        stale = [name for name, r in self._readers.items() if heard - r.heard > self.ttl]
        for name in stale:
            del self._readers[name]

    def when(self, key: str) -> float:
        soonest = math.inf
        for r in self._readers.values():
            due = r.due.get(key)
            if due is not None and due >= r.now:
                soonest = min(soonest, due - r.now)
        return soonest

    def forget(self, reader: str) -> None:
        """``reader`` is done: what it said no longer holds chunks."""
        self._readers.pop(reader, None)

    @property
    def empty(self) -> bool:
        return not any(r.due for r in self._readers.values())

    @property
    def readers(self) -> int:
        """Readers heard from within ``ttl`` (as of the last `expire`)."""
        return len(self._readers)

    def clear(self) -> None:
        self._readers.clear()
