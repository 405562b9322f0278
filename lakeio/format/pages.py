"""Memory for decoded chunks: mappings of their own, handed on to the next chunk when let go.

Decoded chunks come and go all epoch (the memory tier evicts, the prefetcher lets go). From
malloc, glibc's moving mmap threshold and per-thread heaps kept what they freed, and a process
reading a lake 4x its memory budget grew by 201 MiB for a 59 MiB budget, against 136 MiB with
chunks in mappings of their own (`benchmarks/memory_budget.py`). A fresh mapping costs a page
fault per 4 KiB: filling one of 4 MiB ran at 1.4–2.1 GB/s here, slower than lz4 decodes, and
an epoch that decodes its chunks took ~65,000 faults. So a chunk's mapping, once nobody holds
the chunk, is kept for the next chunk of its size: refilled through `own_pages`, it runs at
21–26 GB/s. Fresh mappings are populated in one call where the platform can (3.0 GB/s against
1.9–2.4 with a fault per page).

How much is kept: what the memory tiers' budgets leave free. Each `lakeio.cache.memory.
MemoryTier` tells `set_room` its capacity and the bytes it holds; spares may fill the
capacities less what the tiers hold and less the chunks alive here (those in a tier counted
twice: the estimate errs towards fewer spares), and `SPARE_BYTES` in any case. So decoded
chunks and spares together stay within the budgets the user gave `Cache(memory=...)`, plus
`SPARE_BYTES`. With a fixed 16 MiB, a loader whose budget
is a quarter of the lake let go of a shuffle window (7 chunks, 28 MiB) at once, unmapped 3 of
them and mapped 3 new ones for the next window: 25 fresh mappings an epoch, 0.5 with the room
(warm epoch 143 -> 105 ms, kernel time 92 -> 39 ms). (Transparent huge pages were tried:
14–19 GB/s, but on a node whose memory the page cache has fragmented, the kernel compacts memory
inside the page fault, and an epoch took up to 1 s more of kernel time.)
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref

import numpy as np

SPARE_BYTES = 16 << 20  # spares kept in any case: outside the memory budgets, so small
_spares: list[mmap.mmap] = []  # oldest first; a size no longer decoded ages out
_spare_total = 0
_live = 0  # bytes handed out by own_pages and not let go yet
_rooms: dict[int, tuple[int, int]] = {}  # id of each memory tier -> (capacity, bytes held)
# Reentrant: a garbage collection may run any finalizer (_let_go) in a thread holding it.
_lock = threading.RLock()
# not Windows; pages allocated in the one call where the platform can (Linux)
_PRIVATE = (
    {"flags": mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0)}
    if hasattr(mmap, "MAP_PRIVATE")
    else {}
)


def own_pages(nbytes: int) -> np.ndarray:
    """A uint8 array of ``nbytes`` in a mapping of its own (contents undefined, as with
    ``np.empty``): a spare one of that size if there is one, else a new one. When the array
    and every view of it are gone, the mapping becomes a spare, or is unmapped."""
    global _live
    with _lock:  # (counted alive from here: another thread's let-go sees it)
        region = _take_spare(nbytes)
        _live += nbytes
    try:
        if region is None:
            region = mmap.mmap(-1, nbytes, **_PRIVATE)
        out = np.frombuffer(region, dtype=np.uint8)
        weakref.finalize(out, _let_go, region).atexit = False
    except BaseException:
        with _lock:
            _live -= nbytes
        raise
    return out


def spare_bytes() -> int:
    """Bytes held in spare mappings now (see `spare_limit`)."""
    with _lock:
        return _spare_total


def spare_limit() -> int:
    """How many bytes of spares may be kept now: what the memory tiers' budgets leave free of
    the chunks alive, and at least `SPARE_BYTES`."""
    with _lock:
        return _limit()


def set_room(owner: object, capacity: int, held: int = 0) -> None:
    """``owner`` (a memory tier) may hold ``capacity`` bytes of decoded chunks and holds
    ``held``: spares may use what is left of all owners' room. Forgotten when ``owner`` goes."""
    key = id(owner)
    with _lock:
        if key not in _rooms:
            weakref.finalize(owner, _forget_room, key).atexit = False
        _rooms[key] = (max(0, int(capacity)), max(0, int(held)))
        _trim()


def _forget_room(key: int) -> None:
    with _lock:
        _rooms.pop(key, None)
        _trim()


def _limit() -> int:  # (holding the lock)
    free = sum(capacity - held for capacity, held in _rooms.values()) - _live
    return max(SPARE_BYTES, free)


def _trim() -> None:
    """Unmap the oldest spares until they are within the limit (holding the lock)."""
    global _spare_total
    limit = _limit()
    while _spare_total > limit:
        _spare_total -= len(_spares.pop(0))


def _take_spare(nbytes: int) -> mmap.mmap | None:  # (holding the lock)
    global _spare_total
    for i in range(len(_spares) - 1, -1, -1):  # the most recent first
        if len(_spares[i]) == nbytes:
            _spare_total -= nbytes
            return _spares.pop(i)
    return None


def _let_go(region: mmap.mmap) -> None:
    """Runs as the array holding ``region`` goes: keep it as a spare, the oldest spares
    making room (those not kept are unmapped once their last reference goes)."""
    global _spare_total, _live
    with _lock:
        _live -= len(region)
        if len(region) > _limit():
            return
        _spares.append(region)
        _spare_total += len(region)
        _trim()


def drop_spares() -> None:
    """Unmap every spare (a process about to idle, or a test wanting a clean slate)."""
    global _spare_total
    with _lock:
        _spares.clear()
        _spare_total = 0


def _after_fork_in_child() -> None:
    """A forked child (a DataLoader worker) gets a lock of its own: a parent's thread may
    have held this one at the fork, and would never let it go there."""
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
