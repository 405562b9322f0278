"""The disk tier: compressed chunk bytes on local disk, shared by every process on the node.

Backed by diskcache (SQLite index + files), which is safe across processes, so the DDP ranks of
one machine share it. A per-key lock makes concurrent misses of the same chunk fetch it from the
origin once. Values are raw bytes only (never pickles), in a folder only the user can write;
SQLite does not work on NFS, so this belongs on local disk.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
from collections.abc import Callable

from lakeio.cache.tier import TierStats
from lakeio.errors import LakeError

LOCK_PREFIX = "lakeio-lock:"
WRITE_QUEUE = 8  # chunks waiting to be written; beyond that, readers write themselves


class DiskTier:
    """Up to ``capacity`` bytes of chunk bytes under ``directory`` (soft limit, culled one by one)."""

    def __init__(self, directory: str | os.PathLike, capacity: int) -> None:
        import diskcache

        self.directory = os.fspath(directory)
        self.capacity = int(capacity)
        _private_directory(self.directory)
        self._cache = diskcache.Cache(
            self.directory,
            size_limit=self.capacity,
            cull_limit=1,  # the default (10) can empty a small cache of large values at once
            eviction_policy="least-recently-stored",  # no index write on every read
            statistics=False,
        )
        self._lock = threading.Lock()
        self._stats = TierStats()
        self._writes: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE)
        self._writer: threading.Thread | None = None

    def __getstate__(self):  # reopen in the receiving process (e.g. a DataLoader worker)
        return {"directory": self.directory, "capacity": self.capacity}

    def __setstate__(self, state) -> None:
        self.__init__(state["directory"], state["capacity"])

    def _count(self, hit: bool) -> None:
        with self._lock:
            self._stats.requests += 1
            self._stats.hits += int(hit)

    def get(self, key: str) -> bytes | None:
        value = self._cache.get(key, default=None, retry=True)
        self._count(value is not None)
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes) -> bool:
        if not isinstance(value, bytes):
            raise TypeError("the disk tier stores bytes only")
        if len(value) > self.capacity:
            return False  # diskcache would accept it and then cull it (and more) right away
        self._cache.set(key, value, retry=True)
        return True

    def get_or_fetch(self, key: str, fetch: Callable[[], bytes]) -> tuple[bytes, bool]:
        """The cached bytes, or ``fetch()`` stored for everyone; (value, was_hit). One fetch per node.

        The store happens on a background thread (the caller gets the bytes at once); the key's
        lock is held until it lands, so other processes wait for it instead of fetching again.
        """
        value = self.get(key)
        if value is not None:
            return value, True
        import diskcache

        lock = diskcache.Lock(self._cache, LOCK_PREFIX + key, expire=120)
        lock.acquire()
        try:
            value = self._cache.get(key, default=None, retry=True)
            if isinstance(value, bytes):  # another process fetched it while we waited
                lock.release()
                return value, True
            value = fetch()
        except BaseException:
            lock.release()
            raise
        self._store_later(key, value, lock)
        return value, False

    def _store_later(self, key: str, value: bytes, lock) -> None:
        try:
            self._writes.put_nowait((key, value, lock))
        except queue.Full:  # the disk is behind: write here, which slows the reader down
            self._store(key, value, lock)
            return
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(
                target=self._write_loop, name="lakeio-disk-tier", daemon=True
            )
            self._writer.start()

    def _store(self, key: str, value: bytes, lock) -> None:
        try:
            self.put(key, value)
        finally:
            lock.release()

    def _write_loop(self) -> None:
        while True:
            try:
                key, value, lock = self._writes.get(timeout=5)
            except queue.Empty:
                return
            try:
                self._store(key, value, lock)
            except Exception:  # a cache write failing costs a later re-fetch, nothing more
                pass
            finally:
                self._writes.task_done()

    def flush(self) -> None:
        """Wait until every queued write has landed."""
        self._writes.join()

    def evict(self, key: str) -> None:
        if self._cache.delete(key, retry=True):
            with self._lock:
                self._stats.evictions += 1

    def __contains__(self, key: str) -> bool:
        return key in self._cache

    def stats(self) -> TierStats:
        with self._lock:
            s = TierStats(self._stats.requests, self._stats.hits, self._stats.evictions)
        s.bytes_held = int(self._cache.volume())
        s.items = len(self._cache)
        return s

    def clear(self) -> None:
        self._cache.clear(retry=True)

    def close(self) -> None:
        self.flush()
        self._cache.close()


def _private_directory(path: str) -> None:
    """Create ``path`` (mode 0700) or check that nobody else can write it: its index is trusted."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    mode = os.stat(path).st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise LakeError(
            f"disk cache folder {path} is writable by other users (mode {stat.S_IMODE(mode):o}); "
            "use a private folder (chmod 700) — the cache index is trusted when read"
        )
