"""The memory tier: decoded chunks in this process, least-recently-used first out, bounded in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from lakeio.cache.tier import TierStats


class MemoryTier:
    """Decoded chunks (ndarrays) up to ``capacity`` bytes; a chunk larger than that is not kept."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._stats = TierStats()

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
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
                self._stats.evictions += 1
        return True

    def evict(self, key: str) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
                self._stats.evictions += 1

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

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
            self._bytes = 0
