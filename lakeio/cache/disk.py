"""The disk tier: compressed chunk bytes on local disk, shared by every process on the node.

Backed by diskcache (SQLite index + files), which is safe across processes, so the DDP ranks of
one machine share it. A per-key lock (a kernel file lock per key stripe) makes concurrent misses
of the same chunk fetch it from the origin once. Values are raw bytes only (never pickles), in a
folder only the user can write; SQLite does not work on NFS, so this belongs on local disk.

The tier only ever holds copies, so its own trouble never fails a read: a folder that cannot be
opened, or a write the disk refuses (full, out of inodes, read-only), is counted, reported once
per folder and process with a `DiskTierWarning`, and the chunk is served from the origin. A
value whose write failed midway is removed, never left behind or served.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
from collections.abc import Callable

import diskcache

from lakeio.cache.key_locks import KeyLocks, release
from lakeio.cache.tier import TierStats, warn_once
from lakeio.cache.write_behind import WriteBehind
from lakeio.errors import CorruptChunkError, LakeError
from lakeio.format.location import is_storage_full

# What a disk that is full, out of inodes or read-only raises out of diskcache and SQLite.
STORAGE_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)
MAX_CULLS = 64  # per store; several processes may be culling at once


class DiskTierWarning(RuntimeWarning):
    """The disk tier could not open its folder or store a chunk; reads go on from the origin."""


class DiskTier:
    """Up to ``capacity`` bytes of chunk bytes under ``directory`` (soft limit, culled one by one)."""

    def __init__(self, directory: str | os.PathLike, capacity: int) -> None:
        self.directory = os.fspath(directory)
        self.capacity = int(capacity)
        self._lock_dir = os.path.join(self.directory, "locks")
        self._locks = KeyLocks(self._lock_dir, self._failed)  # one fetch of a key per node
        self._lock = threading.Lock()
        self._stats = TierStats()
        self.write_errors = 0  # chunks the disk refused to store (full disk, no inodes...)
        self._behind = WriteBehind(self.put, "lakeio-disk-writer", os.path.realpath(self.directory))
        self._cache = self._open()

    def _open(self) -> diskcache.Cache | None:
        """The diskcache in our folder, or None (warned about) where the disk cannot hold one.

        Opening writes (diskcache records its settings), so on a full disk it fails; the tier
        then serves nothing and stores nothing for this process's lifetime. A folder that is not
        private still raises: that is a setting to fix, not a passing condition of the disk.
        """
        try:
            private_directory(self.directory)  # creating it may fail on a full disk too
            cache = diskcache.Cache(
                self.directory,
                disk=_BytesOnlyDisk,
                size_limit=self.capacity,
                cull_limit=1,  # the default (10) can empty a small cache of large values at once
                eviction_policy="least-recently-stored",  # no index write on every read
                statistics=False,
            )
            os.makedirs(self._lock_dir, mode=0o700, exist_ok=True)
        except STORAGE_ERRORS as exc:
            if not _disk_full(exc):  # a typo, a file in the way, no permission: a setting
                raise LakeError(
                    f"disk cache folder {self.directory}: cannot open it ({exc}); "
                    "give Cache(disk=...) a local folder you can write"
                ) from exc
            self._failed("open the cache", exc)
            return None
        return cache

    def __getstate__(self):  # reopen in the receiving process (e.g. a DataLoader worker)
        return {"directory": self.directory, "capacity": self.capacity}

    def __setstate__(self, state) -> None:
        self.__init__(state["directory"], state["capacity"])

    def _count(self, hit: bool) -> None:
        with self._lock:
            self._stats.requests += 1
            self._stats.hits += int(hit)

    def get(self, key: str) -> bytes | None:
        value = self._read(key)
        self._count(value is not None)
        return value

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every chunk handed to the writer is stored (False if ``timeout`` passed)."""
        return self._behind.flush(timeout)

    def _read(self, key: str) -> bytes | None:
        waiting = self._behind.pending(key)  # fetched here, on its way to the disk
        if waiting is not None:
            return waiting
        if self._cache is None:
            return None
        try:
            value = self._cache.get(key, default=None, retry=True)
        except STORAGE_ERRORS as exc:  # a damaged index reads as a miss, never as a failed read
            self._failed("read a chunk", exc)
            return None
        except PickledValueError:  # not ours (lakeio never pickles): drop it, read the origin
            with self._lock:
                self._stats.refused += 1
            self.evict(key)
            return None
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes) -> bool:
        """Keep a copy of ``value``; False if it was not kept: larger than the tier, or refused
        by the disk (counted in ``write_errors``, warned about once; a read never fails for it)."""
        if not isinstance(value, bytes):
            raise TypeError("the disk tier stores bytes only")
        if len(value) > self.capacity:
            return False  # diskcache would accept it and then cull it (and more) right away
        if self._cache is None:
            self._write_failed()
            return False
        try:
            self._cache.set(key, value, retry=True)
        except STORAGE_ERRORS as exc:
            # diskcache writes a large value's file before its index row and removes neither when
            # the row's transaction fails: the file would take space nobody ever frees.
            self._cache.disk.discard_failed_store()
            self._write_failed(exc)
            return False
        self._fit()
        return True

    def _fit(self) -> None:
        """Cull the oldest copies, one at a time, until the tier is within its limit again.

        diskcache culls one item per store (``cull_limit=1``, so that a small tier of large
        values is not emptied at once), which holds the limit only while values are alike: a
        chunk of images stored while a labels chunk of a few bytes is culled leaves the tier
        that chunk over its limit, and each such store adds one more.
        """
        oldest = "SELECT key FROM Cache WHERE raw = 1 ORDER BY store_time LIMIT 1"
        try:
            for _ in range(MAX_CULLS):
                if self._cache.volume() <= self.capacity:
                    return
                row = self._cache._sql(oldest).fetchone()  # diskcache's own cull query
                if row is None:
                    return
                self._cache.delete(row[0], retry=True)
        except STORAGE_ERRORS as exc:
            self._failed("drop a chunk", exc)

    def _write_failed(self, exc: BaseException | None = None) -> None:
        with self._lock:
            self.write_errors += 1
        if exc is not None:
            self._failed("store a chunk", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        warn_once(
            self.directory,
            DiskTierWarning(
                f"lakeio disk cache {self.directory}: could not {what} ({exc}); chunks are read "
                "from the origin instead, and failed writes are counted in the disk tier's "
                "write_errors. Free space there or give Cache(disk=...) another folder."
            ),
        )

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
        fd = self._locks.take(key)
        try:
            value = self._read(key)
            if value is not None:  # another process fetched it while we waited
                release(fd)
                return value, True
            value = fetch()
            if check is not None:
                check(value)
            # Stored behind the read, the key's lock held until then: this process's readers
            # take the bytes from the hand-over, other processes wait for the stored copy.
            handed_over = self._behind.submit(key, value, lambda: release(fd))
        except BaseException:
            release(fd)
            raise
        if not handed_over:
            try:  # the writer is that far behind: store it here (never raises for the disk)
                self.put(key, value)
            finally:
                release(fd)
        return value, False

    def replace_damaged(
        self, key: str, damaged: bytes, fetch: Callable[[], bytes], check: Callable[[bytes], object]
    ) -> tuple[bytes, bool]:
        """A good copy of ``key`` in place of the ``damaged`` one read from the tier:
        (value, refetched). ``check`` raises on bad bytes.

        Under the key's lock, so that the threads and processes that read the damaged copy at
        once (an epoch's load and the next epoch's prefetch, say) fetch the original once and
        count it once: one that waited takes the copy stored meanwhile.
        """
        with self._locks.held(key):
            current = self._read(key)
            if current is not None and current != damaged and _passes(check, current):
                return current, False
            self.evict(key)
            value = fetch()
            check(value)  # the origin's own copy being bad is the caller's error to raise
            self.put(key, value)
            return value, True

    def evict(self, key: str) -> None:
        """Drop ``key``'s copy; on a disk too full to record that, the copy stays (a damaged
        one is then caught by its checksum again on every read, and never delivered)."""
        if self._cache is None:
            return
        try:
            deleted = self._cache.delete(key, retry=True)
        except STORAGE_ERRORS as exc:
            self._failed("drop a chunk", exc)
            return
        if deleted:
            with self._lock:
                self._stats.evictions += 1

    def stats(self, sizes: bool = True) -> TierStats:
        """Counters; with ``sizes``, also the bytes and items held (two SQLite queries)."""
        with self._lock:
            s = TierStats(self._stats.requests, self._stats.hits, self._stats.evictions)
            s.write_errors, s.refused = self.write_errors, self._stats.refused
        if sizes and self._cache is not None:
            with contextlib.suppress(*STORAGE_ERRORS):
                s.bytes_held = int(self._cache.volume())
                s.items = len(self._cache)
        return s

    def clear(self) -> None:
        if self._cache is not None:
            self._cache.clear(retry=True)

    def close(self) -> None:
        self.flush(timeout=30)
        if self._cache is not None:
            self._cache.close()


def _passes(check: Callable[[bytes], object], value: bytes) -> bool:
    try:
        check(value)
    except CorruptChunkError:
        return False
    return True


def _disk_full(exc: BaseException) -> bool:
    """No space or inodes left: what a full disk looks like to open(), mkdir() and SQLite."""
    if isinstance(exc, OSError):
        return is_storage_full(exc)
    return isinstance(exc, sqlite3.Error) and "full" in str(exc).lower()


class PickledValueError(ValueError):
    """An entry diskcache would unpickle: never loaded, dropped as a miss."""


class _BytesOnlyDisk(diskcache.Disk):
    """A diskcache Disk that refuses to unpickle (the tier stores raw bytes only) and leaves no
    value file behind from a store that failed (disk full), whole or half written."""

    def __init__(self, directory, **settings) -> None:
        super().__init__(directory, **settings)
        self._attempt = threading.local()  # this thread's last value file: (name, full path)

    def filename(self, key=diskcache.core.UNKNOWN, value=diskcache.core.UNKNOWN):
        """A random name in one of 16 folders (diskcache's own uses two levels, 65,536
        folders: nearly every chunk of a cold epoch made a folder or two, ~0.4 ms each here;
        ext4 and xfs index large folders, so a million chunks is ~60,000 files a folder)."""
        hex_name = os.urandom(16).hex()
        name = os.path.join(hex_name[:1], hex_name[1:] + ".val")
        full_path = os.path.join(self._directory, name)
        self._attempt.file = (name, full_path)
        return name, full_path

    def store(self, value, read, key=diskcache.core.UNKNOWN):
        self._attempt.file = None
        try:
            if type(value) is bytes and len(value) >= self.min_file_size:
                name, full_path = self.filename(key, value)
                _write_new_file(full_path, value)
                return len(value), diskcache.core.MODE_BINARY, name, None
            return super().store(value, read, key=key)
        except BaseException:  # the file is written in place, under its final name
            self.discard_failed_store()
            raise

    def discard_failed_store(self) -> None:
        """Remove the value file of this thread's last store, whose index row was not written."""
        attempt = getattr(self._attempt, "file", None)
        self._attempt.file = None
        if attempt is not None:
            self.remove(attempt[0])

    def fetch(self, mode, filename, value, read):
        if mode == diskcache.core.MODE_PICKLE:
            raise PickledValueError("the lakeio disk tier holds bytes only; a pickled value")
        return super().fetch(mode, filename, value, read)


def _write_new_file(path: str, value: bytes) -> None:
    """``value`` into a new file at ``path`` (its folder made if missing), in one write call.

    diskcache writes bytes by iterating over a BytesIO, which yields lines: a chunk of
    compressed pixels, ~5,000 "lines" a megabyte, took ~5,000 write calls and as many copies
    (the disk tier ran at ~320 MB/s where the same files written whole ran at ~3 GB/s).
    """
    for attempt in range(10):  # another process may remove the folder it emptied meanwhile
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileNotFoundError:
            if attempt == 9:
                raise
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        view = memoryview(value)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def private_directory(path: str) -> None:
    """Create ``path`` (mode 0700) or check it is yours and nobody else can write it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    mode = info.st_mode
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise LakeError(
            f"cache folder {path} belongs to user id {info.st_uid}, not you; "
            "use a folder of your own — what a cache holds is trusted when read"
        )
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise LakeError(
            f"cache folder {path} is writable by other users (mode {stat.S_IMODE(mode):o}); "
            "use a private folder (chmod 700) — what a cache holds is trusted when read"
        )
