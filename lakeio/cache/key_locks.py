"""Per-key locks across the processes (and threads) of one node, for the tiers they share.

A kernel file lock (flock) on one of `LOCK_STRIPES` files in a folder of the tier's: waiting
costs nothing and a process that dies, even by ``kill -9``, releases it. (diskcache's own Lock
is a row in SQLite taken by polling, three write transactions per chunk, and under contention
SQLite's busy handler sleeps: a cold epoch ran on one core of two.) Each acquisition opens its
own file description, so threads of one process exclude each other as processes do.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Keys share a lock file by hash, so a clash only delays a fetch, but a key's lock may be held
# until its bytes are stored, behind up to 64 MiB of others: with 256, a cold epoch's readers
# waited ~0.35 s in all on stores of other keys; with 4,096 ~0.04 s (a file each, made once).
LOCK_STRIPES = 4096


def lock_stripe(key: str) -> int:
    """Which of the `LOCK_STRIPES` lock files guards ``key``."""
    digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % LOCK_STRIPES


class KeyLocks:
    """Exclusive locks by key in ``folder`` (made by the caller). ``failed(what, exc)`` hears
    of a lock file that cannot be made (a disk with no inode left): the caller then goes on
    unlocked, since these locks only save duplicate work."""

    def __init__(self, folder: str, failed: Callable[[str, OSError], None] | None = None) -> None:
        self.folder = folder
        self._failed = failed

    def take(self, key: str) -> int | None:
        """Take ``key``'s lock, waiting for it; its descriptor, for `release`, which any thread
        may call. None: no lock to be had (see the class)."""
        fd = self._open(key)
        if fd is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            release(fd)
            raise
        return fd

    @contextmanager
    def held(self, key: str) -> Iterator[None]:
        fd = self.take(key)
        try:
            yield
        finally:
            release(fd)

    def _open(self, key: str) -> int | None:
        try:
            return _open_registered(os.path.join(self.folder, f"{lock_stripe(key):04d}.lock"))
        except OSError as exc:
            if self._failed is not None:
                self._failed("create a lock file", exc)
            return None


@contextmanager
def file_locked(path: str, shared: bool = False) -> Iterator[None]:
    """``path`` (made if missing) flock-ed while inside: exclusive, or ``shared``. Registered as
    the key locks are, so a child forked meanwhile does not keep it held."""
    fd = _open_registered(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        release(fd)


def _open_registered(path: str) -> int:
    """A descriptor of lock file ``path`` (made if missing), registered for `release`."""
    with _open_lock_files:  # no fork between open and registering the descriptor
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        _lock_fds.add(fd)
    return fd


def release(fd: int | None) -> None:
    """Let go of a lock `KeyLocks.take` gave (None: there was none)."""
    if fd is None:
        return
    with _open_lock_files:
        if fd in _lock_fds:  # (a forked child closed its copies already)
            _lock_fds.discard(fd)
            os.close(fd)  # the last descriptor of the file closed releases the lock


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
