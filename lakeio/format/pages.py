"""Memory for decoded chunks: mappings of their own, handed on to the next chunk when let go.

Decoded chunks come and go all epoch (the memory tier evicts, the prefetcher lets go). From
malloc, glibc's moving mmap threshold and per-thread heaps kept what they freed, and a process
reading a lake 4x its memory budget grew by 201 MiB for a 59 MiB budget, against 136 MiB with
chunks in mappings of their own (`benchmarks/memory_budget.py`). A fresh mapping costs a page
fault per 4 KiB: filling one of 4 MiB ran at 1.4–2.1 GB/s here, slower than lz4 decodes, and
an epoch that decodes its chunks took ~65,000 faults. So a chunk's mapping, once nobody holds
the chunk, is kept for the next chunk of its size (up to `SPARE_BYTES` in all): refilled
through `own_pages`, it runs at 21–26 GB/s. (Transparent huge pages were tried: 14–19 GB/s, but on a node whose
memory the page cache has fragmented, the kernel compacts memory inside the page fault, and
an epoch took up to 1 s more of kernel time.)
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref

import numpy as np

SPARE_BYTES = 16 << 20  # mappings kept for reuse, in all: outside the memory budget, so small
_spares: list[mmap.mmap] = []  # oldest first; a size no longer decoded ages out
_spare_total = 0
# Reentrant: a garbage collection may run any finalizer (_let_go) in a thread holding it.
_lock = threading.RLock()
_PRIVATE = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}  # not Windows


def own_pages(nbytes: int) -> np.ndarray:
    """A uint8 array of ``nbytes`` in a mapping of its own (contents undefined, as with
    ``np.empty``): a spare one of that size if there is one, else a new one. When the array
    and every view of it are gone, the mapping becomes a spare, or is unmapped."""
    region = _take_spare(nbytes) or mmap.mmap(-1, nbytes, **_PRIVATE)
    out = np.frombuffer(region, dtype=np.uint8)
    weakref.finalize(out, _let_go, region).atexit = False
    return out


def spare_bytes() -> int:
    """Bytes held in spare mappings now (at most `SPARE_BYTES`)."""
    with _lock:
        return _spare_total


def _take_spare(nbytes: int) -> mmap.mmap | None:
    global _spare_total
    with _lock:
        for i in range(len(_spares) - 1, -1, -1):  # the most recent first
            if len(_spares[i]) == nbytes:
                _spare_total -= nbytes
                return _spares.pop(i)
    return None


def _let_go(region: mmap.mmap) -> None:
    """Runs as the array holding ``region`` goes: keep it as a spare, the oldest spares
    making room (those not kept are unmapped once their last reference goes)."""
    global _spare_total
    if len(region) > SPARE_BYTES:
        return
    with _lock:
        _spares.append(region)
        _spare_total += len(region)
        while _spare_total > SPARE_BYTES:
            _spare_total -= len(_spares.pop(0))


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
