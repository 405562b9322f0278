"""The memory tier: decoded chunks in this process, bounded in bytes.

Two eviction policies. ``lru`` drops the least recently used chunk. ``plan`` uses the loader's
schedule — the plan says when each chunk is needed next (this epoch or the next) — and drops the
chunk needed furthest in the future, or does not admit a chunk needed later than everything
held (Belady's rule, with the future known instead of guessed). Shuffled epochs over a dataset
larger than the budget are the case where LRU fails: each chunk is evicted just before reuse.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from lakeio.cache.schedule import Schedule
from lakeio.cache.tier import TierStats
from lakeio.format.pages import set_room

POLICIES = ("plan", "lru")


class MemoryTier:
    """Decoded chunks (ndarrays) up to ``capacity`` bytes; a chunk larger than that is not kept.

    ``schedule`` holds what the plan says about next uses: one reader's word by default, or a
    `SharedSchedule` where many readers share the tier (a Dask worker's)."""

    def __init__(
        self, capacity: int, policy: str = "plan", schedule: Schedule | None = None
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(
                f"eviction policy must be one of {', '.join(POLICIES)}, not {policy!r}"
            )
        self.capacity = int(capacity)
        self.policy = policy
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._charges: dict[str, int] = {}  # what each entry counts against the capacity
        self._schedule = schedule if schedule is not None else Schedule()
        self._bytes = 0
        self._reserved = 0  # of the capacity, for decoded chunks loaders hold outside the tier
        self._lock = threading.Lock()
        self._stats = TierStats()
        set_room(self, self.capacity)  # what this budget leaves free may hold spare mappings

    def __len__(self) -> int:
        """Chunks held now."""
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        """Whether ``key`` is held now (not counted as a request)."""
        return key in self._items

    def schedule(self, next_use: dict[str, float], reader: str = "", now: float = 0.0) -> None:
        """Tell the tier when keys are needed next (smaller = sooner); unknown keys count as never.
        ``reader`` and its clock's ``now`` matter to a shared schedule only."""
        with self._lock:
            self._schedule.tell(next_use, reader, now)

    def forget(self, reader: str) -> None:
        """``reader`` will not read again: its plan no longer counts."""
        with self._lock:
            self._schedule.forget(reader)

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            self._stats.requests += 1
            value = self._items.get(key)
            if value is None:
                return None
            self._items.move_to_end(key)
            self._stats.hits += 1
            return value

    def reserve(self, nbytes: int) -> int:
        """Set ``nbytes`` of the capacity aside for decoded chunks held outside the tier (a
        loader's prefetch window): the tier keeps at most the rest, so that the two together
        stay within the one budget `Cache(memory=...)` names. The bytes evicted to make room."""
        with self._lock:
            self._reserved += max(0, int(nbytes))
            freed = self._evict_to(self._room())
            set_room(self, self.capacity, self._bytes)
            return freed

    def release(self, nbytes: int) -> None:
        """Give back what `reserve` set aside."""
        with self._lock:
            self._reserved = max(0, self._reserved - max(0, int(nbytes)))

    def _room(self) -> int:
        """What the tier itself may hold now: the capacity less what loaders hold."""
        return max(0, self.capacity - self._reserved)

    def put(self, key: str, value: np.ndarray, charge: int | None = None) -> bool:
        """Keep ``value``; it counts ``charge`` bytes against the capacity (default: its size;
        0 for a mapping of the node-shared tier's copy, whose bytes that tier's budget counts,
        and which its owner drops when that tier lets the chunk go)."""
        size = int(value.nbytes) if charge is None else int(charge)
        if size > self._room():
            return False
        value.flags.writeable = False  # shared by every reader: nobody may scribble on it
        with self._lock:
            if self._items.pop(key, None) is not None:
                self._bytes -= self._charges.pop(key)
            self._items[key] = value
            self._charges[key] = size
            self._bytes += size
            self._evict_to(self._room())
            set_room(self, self.capacity, self._bytes)
            return key in self._items

    def _evict_to(self, capacity: int) -> int:
        """Drop entries until at most ``capacity`` bytes are held (holding the lock): least
        recently used first, or (plan) the ones needed furthest ahead, ties to the older entry.
        Each entry's next use is asked once per call; the bytes dropped."""
        if self._bytes <= capacity:
            return 0
        order = [k for k in self._items if self._charges[k]]  # LRU first; (free ones stay)
        if self.policy == "plan":
            self._schedule.expire()
            if not self._schedule.empty:
                when = [self._schedule.when(key) for key in order]
                order = [order[i] for i in sorted(range(len(order)), key=lambda i: -when[i])]
        freed = 0
        for key in order:
            if self._bytes <= capacity:
                break
            del self._items[key]
            charge = self._charges.pop(key)
            self._bytes -= charge
            freed += charge
            self._stats.evictions += 1
        return freed

    def resize(self, capacity: int) -> int:
        """Set the capacity, evicting by the policy down to it; the bytes evicted."""
        with self._lock:
            self.capacity = max(0, int(capacity))
            freed = self._evict_to(self._room())
            set_room(self, self.capacity, self._bytes)
            return freed

    def plan_readers(self) -> int:
        """Readers whose plans the tier currently follows."""
        with self._lock:
            return self._schedule.readers

    def evict(self, key: str) -> None:
        with self._lock:
            if self._items.pop(key, None) is not None:
                self._bytes -= self._charges.pop(key)
                self._stats.evictions += 1
                set_room(self, self.capacity, self._bytes)

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
            self._charges.clear()
            self._schedule.clear()
            self._bytes = 0
            set_room(self, self.capacity, 0)
