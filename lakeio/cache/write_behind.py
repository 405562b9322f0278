"""Stores into the disk tier on a thread of their own, so a read never waits for its copy.

Filling the disk tier costs a file write and an SQLite row per chunk (on these machines ~9 ms
of CPU per 4 MB of new pages). In line with the read, a cold epoch from a bucket ran at the
rate of the cache, not of the bucket. Here the fetching thread hands its bytes over and goes
on; until they are stored, readers in this process are served from the hand-over, and other
processes of the node wait on the key's lock (released only once stored), as before.

What is waiting is bounded (``lakeio.cache.write-behind``, default 64 MiB); past that the
fetching thread stores the chunk itself, which slows the reads to the disk's pace rather than
letting memory grow.
"""

from __future__ import annotations

import atexit
import os
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Callable

import dask.config

from lakeio.sizes import parse_size

DEFAULT_LIMIT = 64 << 20
IDLE_EXIT_S = 2.0  # a writer with nothing to do ends (a process may hold many disk tiers)
_writers: weakref.WeakSet[WriteBehind] = weakref.WeakSet()


class WriteBehind:
    """A queue of (key, bytes) to store with ``store``, each followed by its ``release``."""

    def __init__(self, store: Callable[[str, bytes], object], name: str = "lakeio-disk") -> None:
        self._store = store
        self._name = name
        self._cond = threading.Condition()
        self._reset()
        _writers.add(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._queue: deque[tuple[str, bytes, Callable[[], None]]] = deque()
        self._pending: dict[str, bytes] = {}
        self._bytes = 0
        self._busy = 0  # entries taken off the queue and not yet stored
        self._thread: threading.Thread | None = None

    @property
    def limit(self) -> int:
        return parse_size(dask.config.get("lakeio.cache.write-behind", DEFAULT_LIMIT))

    def pending(self, key: str) -> bytes | None:
        """The bytes of ``key`` handed over and not yet stored (None if there are none)."""
        with self._cond:
            self._forked()
            return self._pending.get(key)

    def submit(self, key: str, value: bytes, release: Callable[[], None]) -> bool:
        """Queue ``value`` for storing, ``release`` to be called after; False (nothing queued)
        when the queue is at its limit: the caller stores it itself."""
        with self._cond:
            self._forked()
            if self._bytes and self._bytes + len(value) > self.limit:
                return False
            self._queue.append((key, value, release))
            self._pending[key] = value
            self._bytes += len(value)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything handed over is stored; False if ``timeout`` passed first."""
        with self._cond:
            self._forked()
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def queued_bytes(self) -> int:
        with self._cond:
            return self._bytes

    def _forked(self) -> None:
        """In a forked child (a DataLoader worker) the queue is the parent's: its writer thread
        did not come along and its locks were closed at the fork (the parent stores them)."""
        if self._pid != os.getpid():
            self._reset()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._queue, IDLE_EXIT_S):
                    self._thread = None  # idle: the next hand-over starts another
                    return
                key, value, release = self._queue.popleft()
                self._busy += 1
            try:
                self._store(key, value)  # the tier counts and warns of the disk's own failures
            except Exception as exc:  # anything else: this copy is lost, the writer goes on
                warnings.warn(f"lakeio disk cache: could not store {key}: {exc!r}", stacklevel=1)
            finally:
                release()
                with self._cond:
                    if self._pending.get(key) is value:
                        del self._pending[key]
                    self._bytes -= len(value)
                    self._busy -= 1
                    self._cond.notify_all()


@atexit.register
def _flush_all() -> None:
    """Store what is waiting before the interpreter exits (bounded: a copy is not worth a hang)."""
    for writer in list(_writers):
        writer.flush(timeout=10)
