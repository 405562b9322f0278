"""Stores into the disk tier on a thread of their own, so a read never waits for its copy.

Filling the disk tier costs a file write and an SQLite row per chunk (on these machines ~9 ms
of CPU per 4 MB of new pages). In line with the read, a cold epoch from a bucket ran at the
rate of the cache, not of the bucket. Here the fetching thread hands its bytes over and goes
on; until they are stored, readers in this process are served from the hand-over, and other
processes of the node wait on the key's lock (released only once stored), as before.

What is waiting is bounded (``lakeio.cache.write-behind``, default 64 MiB; 0 turns it off);
past that the fetching thread stores the chunk itself, which slows the reads to the disk's pace
rather than letting memory grow.
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable

import dask.config

from lakeio.sizes import parse_size

DEFAULT_LIMIT = 64 << 20
FORK_WAIT_S = 2.0  # the longest a fork waits for a store in progress
IDLE_EXIT_S = 2.0  # a writer with nothing to do ends (a process may hold many disk tiers)
_writers: weakref.WeakSet[WriteBehind] = weakref.WeakSet()
# What is on its way to each folder, for every disk tier of that folder in this process (two
# datasets opened on one cache, a tier opened anew): one that does not see a chunk handed over
# by another would fetch it again.
_pending_by_folder: dict[str, dict[str, bytes]] = {}
_shared_lock = threading.Lock()


def _pending_in(folder: str) -> dict[str, bytes]:
    with _shared_lock:
        return _pending_by_folder.setdefault(folder, {})


class WriteBehind:
    """A queue of (key, bytes) to store with ``store``, each followed by its ``release``.

    ``release`` frees what the hand-over holds (the key's lock): it runs whatever becomes of
    the store, and the writer thread survives any error of the store (the copy is then lost,
    counted in ``failures``; the tier only ever holds copies)."""

    def __init__(
        self, store: Callable[[str, bytes], object], name: str = "lakeio-disk", folder: str = ""
    ) -> None:
        self._store = store
        self._name = name
        self._folder = folder  # writers of one folder show each other what they hold
        self.failures = 0
        self._fresh_state()
        _writers.add(self)

    def _fresh_state(self) -> None:
        self._cond = threading.Condition()
        self._storing = threading.Lock()  # held while storing: a fork waits for it (below)
        self._pid = os.getpid()
        self._queue: deque[tuple[str, bytes, Callable[[], None]]] = deque()
        self._pending = _pending_in(self._folder)  # shared by the folder's writers
        self._bytes = 0
        self._busy = 0  # entries taken off the queue and not yet stored
        self._thread: threading.Thread | None = None

    @staticmethod
    def limit() -> int:
        """``lakeio.cache.write-behind`` in bytes (0: every chunk is stored by its reader)."""
        return (
            parse_size(
                dask.config.get("lakeio.cache.write-behind", DEFAULT_LIMIT),
                "lakeio.cache.write-behind",
            )
            or 0
        )

    def pending(self, key: str) -> bytes | None:
        """The bytes of ``key`` handed over and not yet stored (None if there are none)."""
        with _shared_lock:
            return self._pending.get(key)

    def submit(self, key: str, value: bytes, release: Callable[[], None]) -> bool:
        """Queue ``value`` for storing, ``release`` to be called after; False (nothing queued,
        ``release`` not taken) when the queue is at its limit or no writer thread can start:
        the caller stores it itself."""
        limit = self.limit()
        with self._cond:
            if limit <= 0 or (self._bytes and self._bytes + len(value) > limit):
                return False
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # no thread to be had (a limit, the interpreter ending)
                    return False
                self._thread = thread
            self._queue.append((key, value, release))
            with _shared_lock:
                self._pending[key] = value
            self._bytes += len(value)
            self._cond.notify_all()
            return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything handed over is stored; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def queued_bytes(self) -> int:
        with self._cond:
            return self._bytes

    def _run(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                with self._cond:
                    if not self._cond.wait_for(lambda: self._queue, IDLE_EXIT_S):
                        return  # idle: the next hand-over starts another
                    key, value, release = self._queue.popleft()
                    self._busy += 1
                self._store_one(key, value, release)
        finally:
            with self._cond:
                if self._thread is me:
                    self._thread = None
                self._cond.notify_all()

    def _store_one(self, key: str, value: bytes, release: Callable[[], None]) -> None:
        try:
            with self._storing:
                self._store(key, value)  # the tier counts and warns of the disk's own failures
        except Exception:  # anything else, a warning made an error (-W error) included
            self.failures += 1
        finally:
            try:
                release()
            finally:
                with _shared_lock:
                    if self._pending.get(key) is value:
                        del self._pending[key]
                with self._cond:
                    self._bytes -= len(value)
                    self._busy -= 1
                    self._cond.notify_all()


_held_for_fork: list[threading.Lock] = []


def _before_fork() -> None:
    """No writer is inside a store when the process forks: a child would inherit SQLite's and
    the C library's locks held by a thread that does not exist there, and hang on them."""
    for writer in list(_writers):
        if writer._storing.acquire(timeout=FORK_WAIT_S):  # a store stuck that long: fork anyway
            _held_for_fork.append(writer._storing)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()


def _after_fork_in_child() -> None:
    """A forked child (a DataLoader worker) starts with empty queues and fresh locks: the
    parent's writer threads did not come along (a condition one of them held would never be
    released), its key locks were closed at the fork, and the parent stores what it handed
    over."""
    global _shared_lock
    _held_for_fork.clear()
    _shared_lock = threading.Lock()  # (a parent's thread may have held it)
    _pending_by_folder.clear()
    for writer in list(_writers):
        writer._fresh_state()


def _flush_all(timeout: float = 10.0) -> None:
    """Store what is waiting before the process ends (bounded: a copy is not worth a hang)."""
    for writer in list(_writers):
        writer.flush(timeout=timeout)


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
atexit.register(_flush_all)


def _flush_at_child_exit(_registry) -> None:
    """A multiprocessing child (a DataLoader worker) ends with ``os._exit``, past atexit: its
    own finalizers are what run, so the flush goes there."""
    multiprocessing.util.Finalize(None, _flush_all, exitpriority=10)


multiprocessing.util.register_after_fork(_writers, _flush_at_child_exit)
