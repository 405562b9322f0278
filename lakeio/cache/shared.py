"""The node-shared tier: decoded chunks as files in shared memory, mapped by every process.

A node's DDP ranks each read every chunk within a few epochs, so with a memory tier per process
a node holds one decoded copy of the lake per rank (`benchmarks/node.py`: 4 ranks, 5.2 times
the lake). Here each decoded chunk is one file in a folder on a memory file system (``/dev/shm``
on Linux), which every process maps read-only: one copy per node, read in place.

- **One decode per node.** `get_or_load` takes the key's lock (`lakeio.cache.key_locks`, a
  kernel file lock a killed process gives up) and looks again before loading, so the ranks
  that miss a chunk at once decode it once between them.
- **Write, then publish.** A chunk is written whole to a file of its own under ``tmp/`` and
  renamed into ``chunks/``: a process killed mid-write leaves a file nobody reads (removed once
  the folder's users are all gone: below); a chunk file is never seen half written.
- **A budget for the node.** Before a chunk is published, the oldest chunks (by last use: a
  read touches its file) are removed until it fits, under one lock for the folder. Removing a
  file another process has mapped is safe: its mapping, and that memory, lives on until that
  process lets go of the array, and nobody maps the file again.
- **Cleaned up by the last one out.** Each tier holds a shared lock on ``users.lock`` while
  open; closing, it asks for the exclusive one without waiting, and the process that gets it
  (nobody else is using the folder) removes the folder. The first process to open a folder no
  one uses clears what a killed run left there. Joining and leaving happen under a lock file
  beside the folder, which is never removed, so neither races the other.

- **Mappings let go.** A process's memory tier keeps the mappings it reads at no charge
  (`lakeio.cache.source`); every eviction is appended to an eviction log in the folder (a
  count and a ring of file names, mapped by every process), which each process reads before a
  lookup and drops its mappings of the chunks named, so an evicted chunk's memory goes back to
  the node. A memory-tier hit counts as a use here (`touch`, at most once a second a chunk).

A run whose processes were all killed (SIGKILL, or SIGTERM from torchrun, which skips
finalizers) leaves its folder: `open_shared` removes the folders of the node no process uses.
The budget keeps to half of the file system's free space (DataLoader workers and NCCL use
/dev/shm too).

Known limits: files being written are not counted in the budget, so publishers at once may pass it by a chunk
each; arrays a loader holds outside the memory tier (its prefetch window) keep their mappings
until it lets go of them; forked DataLoader workers share their parent's registration, so a
parent that closes its tier first removes the folder under them (they read on unshared).

A chunk file is a 4 KiB header (magic, dtype, shape) and the array's bytes, page-aligned.
Object arrays (strings) are not stored here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import mmap
import os
import shutil
import threading
import uuid
import weakref
from collections.abc import Callable

import numpy as np

from lakeio.cache.disk import private_directory
from lakeio.cache.key_locks import KeyLocks, file_locked
from lakeio.cache.tier import TierStats, warn_once
from lakeio.sizes import human_bytes

HEADER_BYTES = 4096
MAGIC = b"LAKEIOSHM1"
EVICTION_SLOTS = 8192  # the eviction log's ring: names of the chunks removed lately
MIN_USEFUL_BYTES = 64 << 20  # a tier cut below this (and below what was asked) is left off


class SharedTier:
    """Up to ``capacity`` bytes of decoded chunks in ``folder``, shared by the node's processes.

    ``folder`` is where the node's processes meet: the same folder for the same lake and cache
    identity (see `shared_folder`). Close the tier when done (it is closed when collected
    too); the last process of the node to close it removes the folder."""

    def __init__(self, folder: str | os.PathLike, capacity: int) -> None:
        self.folder = os.fspath(folder)
        self.capacity = int(capacity)
        self._chunks = os.path.join(self.folder, "chunks")
        self._tmp = os.path.join(self.folder, "tmp")
        self._stats = TierStats()
        self._stats_lock = threading.Lock()
        # joining and leaving under a lock beside the folder, never deleted: the last process
        # out removing the folder cannot race one coming in
        os.makedirs(os.path.dirname(os.path.abspath(self.folder)), mode=0o700, exist_ok=True)
        with file_locked(self.folder + ".lock"):
            private_directory(self.folder)  # (others could plant chunks, or read the lake's)
            for path in (self._chunks, self._tmp, os.path.join(self.folder, "locks")):
                os.makedirs(path, mode=0o700, exist_ok=True)
            self._users = _join(self.folder, (self._chunks, self._tmp))
            self._log = _eviction_log(os.path.join(self.folder, "evicted"))
        self._locks = KeyLocks(os.path.join(self.folder, "locks"))
        # at most half of what is free (plus what it holds): DataLoader workers and NCCL need
        # /dev/shm too, and a container's is 64 MB unless told otherwise
        free = free_bytes(self.folder)
        room = free // 2 + self.used_bytes()
        if room < self.capacity:
            _warn_once(
                self.folder,
                f"{human_bytes(self.capacity)} asked for, but its file system has "
                f"{human_bytes(free)} free: it keeps at most half of that, {human_bytes(room)} "
                "(in a container, more with --shm-size; else a smaller Cache(shared=...) or "
                "another shared_folder)",
            )
            self.capacity = room
        self._finalizer = weakref.finalize(self, _leave, self._users, self.folder, os.getpid())

    def close(self) -> None:
        """Stop using the folder; the last process to do so removes it."""
        self._finalizer()

    def get(self, key: str) -> np.ndarray | None:
        """The chunk, mapped read-only from the node's copy; None if the node has none."""
        array = _map(self._path(key))
        with self._stats_lock:
            self._stats.requests += 1
            self._stats.hits += array is not None
        return array

    def put(
        self, key: str, array: np.ndarray, before_publish: Callable[[], None] | None = None
    ) -> bool:
        """Publish ``array`` as ``key`` for the node; False where it cannot be kept (an object
        array, or larger than the whole budget). ``before_publish`` runs between the write and
        the rename (a test's way to die there)."""
        array = np.ascontiguousarray(array)
        if array.dtype.hasobject or array.nbytes + HEADER_BYTES > self.capacity:
            return False
        header = _header(array)
        tmp = os.path.join(self._tmp, f"{os.getpid()}-{uuid.uuid4().hex}")
        try:
            self._make_room(_file_size(array))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                for part in (header, array.reshape(-1).view(np.uint8)):
                    view = memoryview(part)
                    while view:
                        view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            if before_publish is not None:
                before_publish()
            os.rename(tmp, self._path(key))  # published whole, or not at all
        except OSError as exc:  # (shared memory full, say): the chunk is served unshared
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            with self._stats_lock:
                self._stats.write_errors += 1
            _warn_once(self.folder, f"could not publish a chunk ({exc}){UNSHARED}")
            return False
        return True

    def get_or_load(self, key: str, load: Callable[[], np.ndarray]) -> np.ndarray:
        """The node's copy of ``key``, loaded (decoded) by one process of the node if none has
        it: the others wait for it on the key's lock and map it."""
        return self.get_or_load_mapped(key, load)[0]

    def get_or_load_mapped(
        self, key: str, load: Callable[[], np.ndarray]
    ) -> tuple[np.ndarray, bool]:
        """`get_or_load`, and whether the array is the node's copy (mapped) rather than this
        process's own (not kept: a string field, over the budget, shared memory full)."""
        array = self.get(key)
        if array is not None:
            return array, True
        with self._locks.held(key):
            array = _map(self._path(key))  # (another process may have published it meanwhile)
            if array is not None:
                return array, True
            loaded = load()
            if not self.put(key, loaded):
                return loaded, False
            mapped = _map(self._path(key))  # (None if evicted at once by another process)
            return (mapped, True) if mapped is not None else (loaded, False)

    def name(self, key: str) -> str:
        """The name of ``key``'s file, as the eviction log gives it."""
        return os.path.basename(self._path(key))

    def evictions(self) -> int:
        """How many chunks the node's processes have removed from the tier so far."""
        return int.from_bytes(self._log[:8], "little")

    def evicted_since(self, seen: int) -> tuple[int, list[str] | None]:
        """(`evictions` now, the names of the chunks removed after the first ``seen``); None
        instead of the names when more were removed than the log keeps (forget them all)."""
        now = self.evictions()
        if now - seen > EVICTION_SLOTS // 2 or now < seen:
            return now, None
        slots = (8 + 16 * (i % EVICTION_SLOTS) for i in range(seen, now))
        names = [self._log[at : at + 16].hex() for at in slots]
        if self.evictions() - seen > EVICTION_SLOTS // 2:  # (overwritten while copied)
            return now, None
        return now, names

    def touch(self, key: str) -> None:
        """Count a use of ``key`` (read from a mapping held elsewhere) for the LRU order."""
        with contextlib.suppress(OSError):
            os.utime(self._path(key))

    def used_bytes(self) -> int:
        """Bytes of the chunk files published now (the node's, not this process's)."""
        try:
            return sum(size for _, size, _ in _chunk_files(self._chunks))
        except FileNotFoundError:  # (closed: the folder is gone)
            return 0

    def stats(self) -> TierStats:
        held = self.used_bytes()
        with self._stats_lock:
            s = self._stats
            return TierStats(s.requests, s.hits, s.evictions, held, 0, s.write_errors)

    def _path(self, key: str) -> str:
        return os.path.join(self._chunks, hashlib.blake2b(key.encode(), digest_size=16).hexdigest())

    def _make_room(self, size: int) -> None:
        """Remove the least recently used chunk files until ``size`` more bytes fit (under the
        folder's lock: two processes making room at once would both count the same files)."""
        with file_locked(os.path.join(self.folder, "budget.lock")):
            files = sorted(_chunk_files(self._chunks), key=lambda f: f[2])  # oldest use first
            used = sum(s for _, s, _ in files)
            for path, file_size, _ in files:
                if used + size <= self.capacity:
                    break
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    used -= file_size
                    self._logged(os.path.basename(path))
                    with self._stats_lock:
                        self._stats.evictions += 1

    def _logged(self, name: str) -> None:
        """Append a removed chunk's name to the eviction log (under the budget lock: one
        writer; the count goes last, so a reader never sees a slot before it is written)."""
        count = self.evictions()
        at = 8 + 16 * (count % EVICTION_SLOTS)
        self._log[at : at + 16] = bytes.fromhex(name)
        self._log[:8] = (count + 1).to_bytes(8, "little")


UNSHARED = (
    "; chunks are read without it, and failed writes are counted in its write_errors. Free "
    "shared memory (df /dev/shm) or give Cache(shared=...) a smaller budget."
)


class SharedTierWarning(RuntimeWarning):
    """The node-shared tier could not be opened or could not publish a chunk; reads go on
    without it (each process then holds its own copy)."""


def _warn_once(folder: str, what: str) -> None:
    warn_once(folder, SharedTierWarning(f"lakeio shared tier {folder}: {what}"))


def open_shared(base: str | None, loc, manifest, capacity: int) -> SharedTier | None:
    """The node's tier for this lake (see `shared_folder`), or None (with a
    `SharedTierWarning`) where it cannot be opened: a cache's trouble never fails a read. (A
    folder that is not yours is an error: `lakeio.errors.LakeError`.)"""
    folder = base or "the shared folder"
    try:
        folder = shared_folder(base, loc, manifest)
        _remove_abandoned(os.path.dirname(folder), keep=folder)
        tier = SharedTier(folder, capacity)
    except OSError as exc:
        _warn_once(folder, f"could not open it ({exc}){UNSHARED}")
        return None
    if tier.capacity < min(capacity, MIN_USEFUL_BYTES):
        tier.close()
        _warn_once(folder, f"too little shared memory is free for it: it is off{UNSHARED}")
        return None
    return tier


def _remove_abandoned(parent: str, keep: str) -> None:
    """Remove the folders under ``parent`` that no process uses (a run torchrun killed leaves
    its folder, holding memory, and a lake version nobody opens again never clears it)."""
    for entry in os.scandir(parent):
        if not entry.is_dir(follow_symlinks=False) or entry.path == keep:
            continue
        with file_locked(entry.path + ".lock"):
            try:
                fd = os.open(os.path.join(entry.path, "users.lock"), os.O_RDWR)
            except FileNotFoundError:
                continue  # (being made, or removed, under the lock: not ours to judge)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # in use
            finally:
                os.close(fd)
            shutil.rmtree(entry.path, ignore_errors=True)


def shared_folder(base: str | None, loc, manifest) -> str:
    """Where the processes of a node reading this version of this lake meet: ``base`` (default
    /dev/shm, else the temporary folder), a folder of this user's, one per lake and version
    (its URL and segment ids): ranks started by torchrun find it with no configuration."""
    import tempfile

    if base is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    ids = ",".join(sorted(segment.id for segment in manifest.segments))
    identity = hashlib.blake2b(f"{loc.describe()}|{ids}".encode(), digest_size=12).hexdigest()
    user = os.getuid() if hasattr(os, "getuid") else 0
    mine = os.path.join(base, f"lakeio-{user}")
    private_directory(mine)  # (in a folder anyone may write to, such as /dev/shm)
    return os.path.join(mine, identity)


def _eviction_log(path: str) -> mmap.mmap:
    """The folder's eviction log, mapped shared: a count, then a ring of 16-byte names. Each
    process holding mappings of chunks reads it to let go of the ones the budget removed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        size = 8 + 16 * EVICTION_SLOTS
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def free_bytes(path: str) -> int:
    """Bytes free for this user on the file system of ``path`` (a seam for tests)."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def _header(array: np.ndarray) -> bytes:
    meta = json.dumps({"dtype": array.dtype.str, "shape": list(array.shape)}).encode()
    if len(MAGIC) + 4 + len(meta) > HEADER_BYTES:
        raise ValueError(f"a chunk of shape {array.shape} has too long a header to share")
    head = MAGIC + len(meta).to_bytes(4, "little") + meta
    return head + bytes(HEADER_BYTES - len(head))


def _file_size(array: np.ndarray) -> int:
    return HEADER_BYTES + array.nbytes


def _map(path: str) -> np.ndarray | None:
    """The chunk file at ``path`` as a read-only array of its mapping; None if there is none (or
    it is not a chunk file: never read as one)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size < HEADER_BYTES:
            return None
        region = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)  # (the mapping stays)
    head = region[:HEADER_BYTES]
    if not head.startswith(MAGIC):
        return None
    length = int.from_bytes(head[len(MAGIC) : len(MAGIC) + 4], "little")
    meta = json.loads(head[len(MAGIC) + 4 : len(MAGIC) + 4 + length])
    dtype, shape = np.dtype(meta["dtype"]), tuple(meta["shape"])
    if HEADER_BYTES + int(np.prod(shape)) * dtype.itemsize != size:
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # last use, for the budget's eviction
    array = np.frombuffer(region, dtype=dtype, offset=HEADER_BYTES, count=int(np.prod(shape)))
    return array.reshape(shape)


def _chunk_files(folder: str) -> list[tuple[str, int, float]]:
    """(path, size, last use) of each chunk file in ``folder``."""
    files = []
    with os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                info = entry.stat()
                files.append((entry.path, info.st_size, info.st_mtime))
    return files


def _join(folder: str, clear: tuple[str, ...]) -> int:
    """Register as a user of ``folder`` (a shared lock held while open); the first user of a
    folder nobody uses clears ``clear`` of what an earlier run left."""
    fd = os.open(os.path.join(folder, "users.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # others use it: what they published is good
        pass
    else:
        for path in clear:
            for name in os.listdir(path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(path, name))
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def _leave(fd: int, folder: str, pid: int) -> None:
    """Let go of ``folder``; remove it if no other process uses it now. In a forked child
    (a DataLoader worker), the descriptor is the parent's lock too: only closed there."""
    if os.getpid() != pid or not os.path.isdir(os.path.dirname(folder)):
        os.close(fd)  # (a child; or someone removed the whole place: nothing left to clean)
        return
    with file_locked(folder + ".lock"):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)
