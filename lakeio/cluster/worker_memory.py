"""One lakeio memory budget per Dask worker, shared by every lake and version it serves, and
given back before Dask's memory manager has to act.

A worker serves whatever trainers ask of it: several lakes, several snapshots of one lake (a
`lakeio stats` run makes a new version), several jobs. Their decoded chunks live in one
`MemoryTier` of at most ``lakeio.worker.memory-fraction`` of the worker's memory limit (or the
largest ``Cache(memory=...)`` a lake asked for, if smaller). Chunk keys name immutable segments,
so versions that share segments share their cached chunks too.

Dask pauses a worker whose process memory passes ``distributed.worker.memory.pause`` (80% of
its limit) and spills its task results past ``spill`` (70%). Cached chunks are the cheapest
memory to give up, so a periodic check sheds the tier (by the plan: chunks needed furthest
ahead first) as soon as the process passes ``lakeio.worker.shed-fraction`` (65%, or 5% below
the worker's own spill or pause fraction if that is lower), and lets it grow back slowly once
there is room again. These settings are read in the worker processes (their dask config, or
``DASK_LAKEIO__WORKER__...`` in their environment), not in the trainer. Without this, a tier that fills a worker to its
pause threshold pauses it for good: nothing it holds is Dask's to spill.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dask.config
import psutil

from lakeio.cache.memory import MemoryTier
from lakeio.cache.schedule import SharedSchedule
from lakeio.format.pages import drop_spares, spare_bytes

if TYPE_CHECKING:
    from distributed import Worker

# (the gets below repeat these defaults: a dask.config.set entered before this module is
# imported removes the key again on exit)
dask.config.update_defaults(
    {
        "lakeio": {
            "worker": {
                "memory-fraction": 0.5,  # the tier's ceiling, of the worker's memory limit
                "shed-fraction": 0.65,  # process memory above which the tier gives way
                "shed-interval": "200ms",
                "plan-ttl": "10 minutes",  # a reader silent this long no longer holds chunks
            }
        }
    }
)


class WorkerMemory:
    """The worker's memory tier and its budget (see the module doc).

    ``spill`` and ``pause`` are Dask's fractions for this worker (False where turned off): the
    tier sheds 5% of the limit below the lower of them if that is below ``shed-fraction``."""

    def __init__(
        self,
        memory_limit: int | None,
        spill: float | bool = 0.7,
        pause: float | bool = 0.8,
        rss: Callable[[], int] | None = None,
    ) -> None:
        from dask.utils import parse_timedelta

        self.limit = int(memory_limit) if memory_limit else None
        fraction = float(dask.config.get("lakeio.worker.memory-fraction", 0.5))
        shed = float(dask.config.get("lakeio.worker.shed-fraction", 0.65))
        for dask_fraction in (spill, pause):
            if dask_fraction is not False and dask_fraction is not None:
                shed = min(shed, round(float(dask_fraction) - 0.05, 6))
        self.ceiling = int(self.limit * fraction) if self.limit else None
        self.shed_at = int(self.limit * shed) if self.limit else None
        self.step = int(self.limit * 0.05) if self.limit else 0  # hysteresis and regrowth
        ttl = parse_timedelta(dask.config.get("lakeio.worker.plan-ttl", "10 minutes"))
        self.tier = MemoryTier(0, "plan", schedule=SharedSchedule(ttl=ttl))
        self.wanted = 0  # the largest Cache(memory=...) of the lakes registered here
        self.allowed = self.ceiling  # lowered under memory pressure, raised back slowly
        self.shed_bytes = 0
        self.sheds = 0
        self._rss = rss or (lambda: psutil.Process().memory_info().rss)
        self._lock = threading.Lock()

    def want(self, nbytes: int) -> None:
        """A lake registered here asks for ``nbytes`` of memory tier."""
        with self._lock:
            self.wanted = max(self.wanted, int(nbytes))
            self._apply()

    def _apply(self) -> int:
        """Size the tier to what is wanted, within the ceiling and what pressure allows; the
        bytes this evicted."""
        capacity = self.wanted
        if self.ceiling is not None:
            capacity = min(capacity, self.ceiling)
        if self.allowed is not None:
            capacity = min(capacity, self.allowed)
        return self.tier.resize(capacity)

    def relieve(self) -> int:
        """Shed the tier if the process is over ``shed_at`` (or let the tier grow back if well
        under); the bytes shed. Called periodically on the worker."""
        if self.shed_at is None:
            return 0
        rss = self._rss()
        freed = 0
        if rss > self.shed_at and spare_bytes():  # spare mappings go before any chunk does
            freed = spare_bytes()
            drop_spares()
            release_free_memory()
            rss = self._rss()
        with self._lock:
            held = self.tier.stats().bytes_held
            if rss > self.shed_at and held:
                self.allowed = max(0, held - (rss - self.shed_at + self.step))
                shed = self._apply()
                freed += shed
                self.shed_bytes += shed
                self.sheds += 1
            elif rss < self.shed_at - 2 * self.step and self.allowed < self.ceiling:
                self.allowed = min(self.ceiling, self.allowed + self.step)
                self._apply()
        if freed:
            release_free_memory()
        return freed

    def figures(self) -> dict[str, Any]:
        stats = self.tier.stats()
        return {
            "memory_bytes": stats.bytes_held,
            "memory_capacity": self.tier.capacity,
            "memory_items": stats.items,
            "memory_shed_bytes": self.shed_bytes,
            "memory_sheds": self.sheds,
            "plan_readers": self.tier.plan_readers(),
        }


_memories: dict[str, WorkerMemory] = {}  # worker address → its budget
_lock = threading.Lock()


def worker_memory(worker: Worker) -> WorkerMemory:
    """This worker's budget, made (and its periodic check started) on first use."""
    with _lock:
        memory = _memories.get(worker.address)
        if memory is not None:
            return memory
        manager = getattr(worker, "memory_manager", None)
        memory = _memories[worker.address] = WorkerMemory(
            getattr(manager, "memory_limit", None),
            spill=getattr(manager, "memory_spill_fraction", 0.7),
            pause=getattr(manager, "memory_pause_fraction", 0.8),
        )
    _start_relief(worker, memory)
    return memory


def memory_of(address: str) -> WorkerMemory | None:
    with _lock:
        return _memories.get(address)


def release_worker_memory(worker: Worker) -> None:
    """Drop the worker's budget, its cached chunks and its periodic check."""
    with _lock:
        memory = _memories.pop(worker.address, None)
    callback = worker.periodic_callbacks.pop("lakeio-memory", None)
    if callback is not None:
        callback.stop()
    if memory is not None:
        memory.tier.clear()


def _start_relief(worker: Worker, memory: WorkerMemory) -> None:
    """Check memory every ``lakeio.worker.shed-interval`` on the worker's event loop (the
    worker stops its periodic callbacks when it closes)."""
    from dask.utils import parse_timedelta
    from tornado.ioloop import PeriodicCallback

    if memory.shed_at is None:
        return  # no memory limit: nothing to keep under
    interval = parse_timedelta(dask.config.get("lakeio.worker.shed-interval", "200ms"), "ms") * 1000
    callback = PeriodicCallback(memory.relieve, interval)
    worker.periodic_callbacks["lakeio-memory"] = callback
    callback.start()


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise, and the worker's
    process memory, which Dask watches, would not go down)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
