"""Batch arrays written again once nobody holds them.

A batch gathered into new memory first pays a page fault for every page of it (the kernel
zeroes each one), and into memory just handed back by the allocator it often pays them again.
With the copy itself at memory speed, that doubled a warm epoch's cost here: with the arrays of
batches already let go written again, a warm epoch went from ~53% to ~90% of a memory-mapped
array's rate at 224×224 and from ~78% to ~90% at 64×64 (`benchmarks/peers.py` has the figures).

An array is written again only when this pool's own reference is the last one. A tensor made
from it (``torch.from_numpy``), any view or slice of that tensor or of the array, and anything
the training loop keeps of the batch hold a reference, so a batch somebody still holds is never
written over: a training loop that keeps its batches just gets fresh arrays.
"""

from __future__ import annotations

import sys
import threading

import numpy as np


def _unheld_count() -> int:
    """What `sys.getrefcount` says of a list's item that nothing else refers to (measured, not
    assumed: the count differs between Python versions and builds)."""
    probe = [np.empty(1)]
    return sys.getrefcount(probe[0])


_UNHELD = _unheld_count()


class RecycledArrays:
    """Up to ``keep`` arrays of each shape and dtype, each handed out again by `empty` once
    nobody else holds it."""

    def __init__(self, keep: int) -> None:
        self.keep = int(keep)
        self._arrays: dict[tuple, list[np.ndarray]] = {}  # by (shape, dtype)
        self._lock = threading.Lock()  # (batches are gathered on two threads)
        self.reused = 0  # arrays handed out again

    def __getstate__(self) -> dict:  # (sent to DataLoader workers: an empty pool there)
        return {"keep": self.keep}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["keep"])

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An array of ``shape`` and ``dtype`` whose contents are garbage: one let go of, if
        there is one, else a new one (kept for later, if there is room). Object arrays are
        never kept (the objects in them would outlive their batch)."""
        dtype = np.dtype(dtype)
        if dtype.hasobject or self.keep <= 0:
            return np.empty(shape, dtype)
        with self._lock:
            arrays = self._arrays.setdefault((tuple(shape), dtype), [])
            for i in range(len(arrays)):
                if sys.getrefcount(arrays[i]) <= _UNHELD:
                    self.reused += 1
                    return arrays[i]
            fresh = np.empty(shape, dtype)
            if len(arrays) < self.keep:
                arrays.append(fresh)
            return fresh
