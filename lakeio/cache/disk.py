"""The disk tier: compressed chunk bytes on local disk, shared by every process on the node.

Backed by diskcache (SQLite index + files), which is safe across processes, so the DDP ranks of
one machine share it. A per-key lock (a kernel file lock per key stripe) makes concurrent misses
of the same chunk fetch it from the origin once. Values are raw bytes only (never pickles), in a
folder only the user can write; SQLite does not work on NFS, so this belongs on local disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import diskcache

from lakeio.cache.tier import TierStats
from lakeio.errors import LakeError

LOCK_STRIPES = 256  # lock files; keys share one by hash, so a clash only delays a fetch


class DiskTier:
    """Up to ``capacity`` bytes of chunk bytes under ``directory`` (soft limit, culled one by one)."""

    def __init__(self, directory: str | os.PathLike, capacity: int) -> None:
        self.directory = os.fspath(directory)
        self.capacity = int(capacity)
        _private_directory(self.directory)
        self._cache = diskcache.Cache(
            self.directory,
            disk=_BytesOnlyDisk,
            size_limit=self.capacity,
            cull_limit=1,  # the default (10) can empty a small cache of large values at once
            eviction_policy="least-recently-stored",  # no index write on every read
            statistics=False,
        )
        self._lock_dir = os.path.join(self.directory, "locks")
        os.makedirs(self._lock_dir, mode=0o700, exist_ok=True)
        self._lock = threading.Lock()
        self._stats = TierStats()
        self.write_errors = 0

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

    def get_or_fetch(
        self, key: str, fetch: Callable[[], bytes], check: Callable[[bytes], object] | None = None
    ) -> tuple[bytes, bool]:
        """The cached bytes, or ``fetch()`` stored for everyone; (value, was_hit). One fetch per node.

        ``check`` (e.g. checksum + decode) runs on freshly fetched bytes before they are stored,
        so a corrupt origin read never enters the cache. The key's lock is held until the bytes
        are stored, so other processes wait for them instead of fetching again.
        """
        value = self.get(key)
        if value is not None:
            return value, True
        with self._fetch_lock(key):
            value = self._cache.get(key, default=None, retry=True)
            if isinstance(value, bytes):  # another process fetched it while we waited
                return value, True
            value = fetch()
            if check is not None:
                check(value)
            self._store(key, value)
            return value, False

    @contextmanager
    def _fetch_lock(self, key: str) -> Iterator[None]:
        """An exclusive lock on ``key`` across the processes (and threads) of this node.

        A kernel file lock (flock) on one of `LOCK_STRIPES` files: waiting costs nothing and a
        process that dies releases it. (diskcache's own Lock is a row in SQLite taken by polling,
        three write transactions per chunk, and under contention SQLite's busy handler sleeps:
        a cold epoch ran on one core of two.) Each acquisition opens its own file description,
        so threads of one process exclude each other as processes do.
        """
        path = os.path.join(self._lock_dir, f"{lock_stripe(key):03d}.lock")
        with _open_lock_files:  # no fork between open and registering the descriptor
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            _lock_fds.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            with _open_lock_files:
                _lock_fds.discard(fd)
                os.close(fd)  # the last descriptor of the file closed releases the lock

    def _store(self, key: str, value: bytes) -> None:
        """Store, but never fail a read because the cache could not keep a copy (disk full…)."""
        try:
            self.put(key, value)
        except Exception:
            with self._lock:
                self.write_errors += 1

    def evict(self, key: str) -> None:
        if self._cache.delete(key, retry=True):
            with self._lock:
                self._stats.evictions += 1

    def stats(self, sizes: bool = True) -> TierStats:
        """Counters; with ``sizes``, also the bytes and items held (two SQLite queries)."""
        with self._lock:
            s = TierStats(self._stats.requests, self._stats.hits, self._stats.evictions)
        if sizes:
            s.bytes_held = int(self._cache.volume())
            s.items = len(self._cache)
        return s

    def clear(self) -> None:
        self._cache.clear(retry=True)

    def close(self) -> None:
        self._cache.close()


def lock_stripe(key: str) -> int:
    """Which of the `LOCK_STRIPES` lock files guards fetches of ``key``."""
    digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % LOCK_STRIPES


# An flock belongs to the open file, which a fork() shares with the child: a child made while a
# fetch holds a lock (a DataLoader worker, say) would keep it held after the parent let go. The
# child closes its copies of every lock descriptor right after the fork.
_lock_fds: set[int] = set()
_open_lock_files = threading.Lock()


def _close_inherited_lock_fds() -> None:
    for fd in _lock_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _lock_fds.clear()


def _release_after_fork() -> None:
    if _open_lock_files.locked():
        _open_lock_files.release()


os.register_at_fork(
    before=_open_lock_files.acquire,
    after_in_parent=_open_lock_files.release,
    after_in_child=lambda: (_close_inherited_lock_fds(), _release_after_fork()),
)


class _BytesOnlyDisk(diskcache.Disk):
    """A diskcache Disk that refuses to unpickle: the tier stores raw bytes only."""

    def fetch(self, mode, filename, value, read):
        if mode == diskcache.core.MODE_PICKLE:
            raise ValueError("the lakeio disk tier holds bytes only; refusing a pickled value")
        return super().fetch(mode, filename, value, read)


def _private_directory(path: str) -> None:
    """Create ``path`` (mode 0700) or check it is yours and nobody else can write it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    mode = info.st_mode
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise LakeError(
            f"disk cache folder {path} belongs to user id {info.st_uid}, not you; "
            "use a folder of your own — the cache index is trusted when read"
        )
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise LakeError(
            f"disk cache folder {path} is writable by other users (mode {stat.S_IMODE(mode):o}); "
            "use a private folder (chmod 700) — the cache index is trusted when read"
        )
