"""The memory tier: decoded chunks in this process, bounded in bytes.

Two eviction policies. ``lru`` drops the least recently used chunk. ``plan`` uses the loader's
schedule — the plan says when each chunk is needed next (this epoch or the next) — and drops the
chunk needed furthest in the future, or does not admit a chunk needed later than everything
held (Belady's rule, with the future known instead of guessed). Shuffled epochs over a dataset
larger than the budget are the case where LRU fails: each chunk is evicted just before reuse.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np

from lakeio.cache.tier import TierStats

POLICIES = ("plan", "lru")


class MemoryTier:
    """Decoded chunks (ndarrays) up to ``capacity`` bytes; a chunk larger than that is not kept."""

    def __init__(self, capacity: int, policy: str = "plan") -> None:
        if policy not in POLICIES:
            raise ValueError(
                f"eviction policy must be one of {', '.join(POLICIES)}, not {policy!r}"
            )
        self.capacity = int(capacity)
        self.policy = policy
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._next_use: dict[str, float] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self._stats = TierStats()

    def schedule(self, next_use: dict[str, float]) -> None:
        """Tell the tier when keys are needed next (smaller = sooner); unknown keys count as never."""
        with self._lock:
            self._next_use.update(next_use)

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            self._stats.requests += 1
            value = self._items.get(key)
            if value is None:
                return None
            self._items.move_to_end(key)
            self._stats.hits += 1
            return value

    def put(self, key: str, value: np.ndarray) -> bool:
        size = int(value.nbytes)
        if size > self.capacity:
            return False
        value.flags.writeable = False  # shared by every reader: nobody may scribble on it
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.capacity:
                victim = self._victim()
                dropped = self._items.pop(victim)
                self._bytes -= dropped.nbytes
                self._stats.evictions += 1
            return key in self._items

    def _victim(self) -> str:
        """The key to drop: least recently used, or (plan) the one needed furthest ahead."""
        if self.policy == "lru" or not self._next_use:
            return next(iter(self._items))
        victim, latest = None, -math.inf
        for key in self._items:  # least recently used first, so ties go to the older entry
            when = self._next_use.get(key, math.inf)
            if when > latest:
                victim, latest = key, when
        return victim

    def evict(self, key: str) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
                self._stats.evictions += 1

    def stats(self) -> TierStats:
        with self._lock:
            return TierStats(
                self._stats.requests,
                self._stats.hits,
                self._stats.evictions,
                self._bytes,
                len(self._items),
            )

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._next_use.clear()
            self._bytes = 0
