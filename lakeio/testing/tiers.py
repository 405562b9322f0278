"""`TierTests`: the contract every cache tier passes (subclass it and provide ``make_tier``)."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

import numpy as np


class TierTests(ABC):
    """Subclasses define ``make_tier(self, capacity, tmp_path)`` and ``value(self, n_bytes, seed)``.

    ``unit`` is a typical value size for the tier (a disk tier's index costs tens of KB itself).
    """

    unit = 1024

    @abstractmethod
    def make_tier(self, capacity: int, tmp_path):
        """A fresh, empty tier of ``capacity`` bytes (``tmp_path`` for tiers that need a folder)."""

    @abstractmethod
    def value(self, n_bytes: int, seed: int = 0):
        """A value of about ``n_bytes`` that the tier stores, different for each ``seed``."""

    @staticmethod
    def same(a, b) -> bool:
        def raw(v):
            return v if isinstance(v, bytes) else np.ascontiguousarray(v).tobytes()

        return a is not None and raw(a) == raw(b)

    def test_get_returns_what_was_put(self, tmp_path):
        tier = self.make_tier(64 * self.unit, tmp_path)
        tier.put("a", self.value(self.unit, 1))
        assert self.same(tier.get("a"), self.value(self.unit, 1))
        assert tier.get("missing") is None

    def test_stats_count_requests_and_hits(self, tmp_path):
        tier = self.make_tier(64 * self.unit, tmp_path)
        tier.put("a", self.value(self.unit))
        tier.get("a")
        tier.get("a")
        tier.get("b")
        s = tier.stats()
        assert (s.requests, s.hits, s.misses) == (3, 2, 1)
        assert abs(s.hit_rate - 2 / 3) < 1e-9

    def test_evict_drops_only_that_key(self, tmp_path):
        tier = self.make_tier(64 * self.unit, tmp_path)
        tier.put("a", self.value(self.unit, 1))
        tier.put("b", self.value(self.unit, 2))
        tier.evict("a")
        assert tier.get("a") is None and self.same(tier.get("b"), self.value(self.unit, 2))

    def test_stays_within_capacity_and_keeps_the_newest(self, tmp_path):
        capacity = 16 * self.unit
        tier = self.make_tier(capacity, tmp_path)
        for i in range(60):
            tier.put(f"k{i}", self.value(self.unit, i))
            assert tier.stats().bytes_held <= capacity + self.unit  # one item over at most
        assert self.same(tier.get("k59"), self.value(self.unit, 59))
        assert tier.stats().items >= 4  # culled one at a time, not emptied
        assert tier.get("k0") is None

    def test_value_larger_than_capacity_is_refused_not_stored(self, tmp_path):
        tier = self.make_tier(16 * self.unit, tmp_path)
        tier.put("small", self.value(self.unit))
        assert tier.put("huge", self.value(32 * self.unit)) is False
        assert tier.get("huge") is None and tier.get("small") is not None

    def test_concurrent_puts_and_gets_are_consistent(self, tmp_path):
        tier = self.make_tier(256 * self.unit, tmp_path)
        errors = []

        def work(offset):
            for i in range(50):
                key = f"k{(offset + i) % 20}"
                tier.put(key, self.value(self.unit, (offset + i) % 20))
                got = tier.get(key)
                if got is not None and not self.same(got, self.value(self.unit, (offset + i) % 20)):
                    errors.append(key)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


def fetch_through_a_slow_disk(directory: str, keys: list[str], store_delay: float = 0.2) -> None:
    """In a child process: fetch ``keys`` into a disk tier at ``directory`` whose stores take
    ``store_delay`` seconds each, and return at once (the copies still being stored): what a
    DataLoader worker does before it exits. For `multiprocessing` targets (importable)."""
    import time

    from lakeio.cache.disk import DiskTier

    tier = DiskTier(directory, 1 << 30)
    store = tier._behind._store

    def slow_store(key: str, value: bytes) -> None:
        time.sleep(store_delay)
        store(key, value)

    tier._behind._store = slow_store
    for key in keys:
        tier.get_or_fetch(key, lambda key=key: key.encode())
