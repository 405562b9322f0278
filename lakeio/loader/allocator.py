"""glibc's malloc, told to give large blocks back (opt in): for a memory budget that must hold.

A loader allocates and frees blocks of megabytes all epoch: decoded chunks (the memory tier
evicts them, the prefetcher lets them go), the stored bytes they were decoded from, batches.
glibc serves blocks over its mmap threshold with mmap and unmaps them on free, but it raises
that threshold to the size of the last such block freed, after which blocks of that size come
from heaps (one per thread) that it rarely returns to the kernel. Decoded chunks are in mappings
of their own (`lakeio.format.pages.own_pages`) whatever this setting; the rest is what it
changes. Reading a lake four times its budget (246 MB, ``Cache(memory=59 MiB)``), a process
grew by 136-140 MiB of anonymous memory with glibc's defaults, and by 82-85 MiB with the
threshold fixed at 1 MiB (`benchmarks/memory_budget.py`, docs/benchmarks.md). Its speed could
not be read off the same benchmark: the memmap it is compared with slows down beside it too.

It is off by default because it is process-wide: every block over the threshold is mapped and
unmapped, yours too, and code that allocates a fresh large array per step then pays a page
fault per page each time (a memmap read into fresh batch arrays ran ~3x slower beside it).
Turn it on with ``dask.config`` ``lakeio.loader.malloc-mmap-threshold: "1MiB"`` (applied once
per process, when the first loader is made, on glibc only), or with ``MALLOC_MMAP_THRESHOLD_``
in the environment.
"""

from __future__ import annotations

import ctypes
import os
import platform

import dask.config
from dask.utils import parse_bytes

dask.config.update_defaults({"lakeio": {"loader": {"malloc-mmap-threshold": None}}})

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
_applied: dict[int, int] = {}  # pid -> the threshold set in that process


def fix_mmap_threshold() -> int | None:
    """Fix glibc's mmap threshold as configured; the threshold set, or None where nothing
    was done (not glibc, turned off, or the environment already sets it)."""
    setting = dask.config.get("lakeio.loader.malloc-mmap-threshold", None)
    if setting in (None, False, 0, "0", "false", "False"):
        return None
    threshold = parse_bytes(setting) if isinstance(setting, str) else int(setting)
    if os.getpid() in _applied:
        return _applied[os.getpid()]
    if platform.libc_ver()[0] != "glibc" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = libc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(threshold))
    except (OSError, AttributeError):
        return None
    if done != 1:
        return None
    _applied[os.getpid()] = threshold
    return threshold
