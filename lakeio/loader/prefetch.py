"""Prefetching that follows the plan: chunks are loaded in the order the epoch will need them.

The plan is known before the epoch starts, so there is no guessing: each chunk is requested
ahead of its first use (bounded by a byte budget) and released right after its last use.
Loads run on threads — reading and decompressing release the GIL — or as tasks on a Dask
cluster (`lakeio.cluster.loads`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout

import dask.config
import numpy as np
from dask.utils import parse_timedelta

from lakeio.loader.plan import first_and_last_places


def first_and_last_use(batch_chunks: list[np.ndarray]) -> tuple[list[int], dict[int, int]]:
    """Chunks in order of first use, and the batch index of each chunk's last use (vectorised:
    an epoch of a large lake has millions of samples)."""
    if not batch_chunks:
        return [], {}
    lengths = np.fromiter((len(c) for c in batch_chunks), dtype=np.int64, count=len(batch_chunks))
    ids = np.concatenate(batch_chunks).astype(np.int64, copy=False)
    if not ids.size:
        return [], {}
    first = np.full(int(ids.max()) + 1, ids.size, dtype=np.int64)
    np.minimum.at(first, ids, np.arange(ids.size, dtype=np.int64))
    last = np.full(len(first), -1, dtype=np.int64)
    np.maximum.at(last, ids, np.repeat(np.arange(len(batch_chunks), dtype=np.int64), lengths))
    used = np.flatnonzero(last >= 0)
    order = used[np.argsort(first[used], kind="stable")]
    return order.tolist(), dict(zip(used.tolist(), last[used].tolist(), strict=True))


def uses_in_order(chunk_ids: np.ndarray, batch_size: int) -> tuple[list[int], dict[int, int]]:
    """`first_and_last_use` of batches that are ``chunk_ids`` cut every ``batch_size`` samples
    (the loader's own plan), read block by block: no per-sample temporary of an epoch's size."""
    if not len(chunk_ids):
        return [], {}
    first, last = first_and_last_places(chunk_ids, int(chunk_ids.max()) + 1)
    used = np.flatnonzero(last >= 0)
    order = used[np.argsort(first[used], kind="stable")]
    return order.tolist(), dict(
        zip(used.tolist(), (last[used] // batch_size).tolist(), strict=True)
    )


class ThreadLoads:
    """Chunk loads on a pool of threads in this process (the default, in-process path). A chunk
    ``in_memory`` says is held decoded already is loaded at once by the caller: a lookup is
    cheaper than a hand-over to a thread and back (a warm epoch is all lookups)."""

    def __init__(
        self,
        load: Callable[[int], dict[str, np.ndarray]],
        threads: int,
        in_memory: Callable[[int], bool] | None = None,
    ) -> None:
        self._load = load
        self._in_memory = in_memory
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, threads), thread_name_prefix="lakeio-load"
        )

    def start(self, chunk: int) -> Future:
        if self._in_memory is None or not self._in_memory(chunk):
            return self._pool.submit(self._load, chunk)
        done: Future = Future()
        try:
            done.set_result(self._load(chunk))
        except Exception as exc:  # (evicted meanwhile and then failed to read: as a thread would)
            done.set_exception(exc)
        return done

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class ChunkPrefetcher:
    """Starts chunk loads (``start(chunk)`` → a future) ahead of need, holding at most ``budget``
    bytes (plus the chunks the current batch needs), and frees each chunk after the batch that
    uses it last. ``start`` is `ThreadLoads.start` in process, or `ClusterLoads.start`."""

    def __init__(
        self,
        start: Callable[[int], Future],
        chunk_bytes: Callable[[int], int],
        batch_chunks: list[np.ndarray],
        budget: int,
        uses: tuple[list[int], dict[int, int]] | None = None,
        ready: Callable[[int, dict[str, np.ndarray]], None] | None = None,
        released: Callable[[int], None] | None = None,
    ) -> None:
        self._start = start
        self._chunk_bytes = chunk_bytes
        self._batch_chunks = batch_chunks
        # (`first_and_last_use` of batch_chunks, where the caller has it already)
        self._order, self._last_use = uses or first_and_last_use(batch_chunks)
        self._budget = budget
        self._held: dict[int, Future] = {}
        self._held_bytes = 0
        self._next = 0  # position in self._order of the next chunk to request
        self._loaded: set[int] = set()  # held chunks whose load is done (given to ``ready``)
        self._ready, self._released = ready, released  # told of each loaded / released chunk
        self._needed: tuple[int, list[int]] | None = None  # (batch, its chunks)

    @property
    def order(self) -> list[int]:
        """Chunks in order of first use this epoch."""
        return self._order

    @property
    def budget(self) -> int:
        return self._budget

    @property
    def held_bytes(self) -> int:
        """Bytes of the chunks requested and not yet released."""
        return self._held_bytes

    @property
    def fully_requested(self) -> bool:
        """Every chunk of the epoch has been requested (what is left is the epoch's tail)."""
        return self._next >= len(self._order)

    def _request_until(
        self, needed: set[int], budget: int | None = None, fill: bool = True
    ) -> None:
        """Request chunks in order of first use until ``needed`` are all requested, and (with
        ``fill``) on until ``budget`` bytes are held."""
        budget = self._budget if budget is None else budget
        while self._next < len(self._order):
            chunk = self._order[self._next]
            size = self._chunk_bytes(chunk)
            must = bool(needed - self._held.keys())
            if not must and (not fill or self._held_bytes + size > budget):
                return
            self._held[chunk] = self._start(chunk)
            self._held_bytes += size
            self._next += 1

    def warm(self, budget: int | None = None) -> None:
        """Start loading the first chunks now, up to ``budget`` bytes (default: the whole
        budget), before any batch asks."""
        self._request_until(set(), budget)

    def _chunks_of(self, batch: int) -> list[int]:
        """The distinct chunks batch ``batch`` draws on (kept for its `done_with`)."""
        if self._needed is None or self._needed[0] != batch:
            self._needed = (batch, np.unique(self._batch_chunks[batch]).tolist())
        return self._needed[1]

    def wait_for(self, batch: int, stop: threading.Event | None = None) -> bool:
        """Wait until the chunks batch ``batch`` needs are loaded (each handed to ``ready`` as
        it is); False as soon as ``stop`` is set (an abandoned epoch must not wait for its
        loads)."""
        needed = self._chunks_of(batch)
        waiting = [c for c in needed if c not in self._loaded]
        if not waiting:
            return True
        # what this batch needs, no more: the rest of the budget is requested once its copy is
        # under way (`done_with`), so a warm start does not look up two windows first
        self._request_until(set(waiting), fill=False)
        timeout = parse_timedelta(dask.config.get("lakeio.load-timeout", "10 minutes"))
        for c in waiting:
            deadline = time.monotonic() + timeout
            while True:
                if stop is not None and stop.is_set():
                    return False
                try:
                    arrays = self._held[c].result(timeout=0.1)
                    break
                except FuturesTimeout:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"chunk {c} did not load within {timeout:.0f} s "
                            "(lakeio.load-timeout); is the cluster alive?"
                        ) from None
            self._loaded.add(c)
            if self._ready is not None:
                self._ready(c, arrays)
        return True

    def done_with(self, batch: int) -> None:
        """Release the chunks whose last use was ``batch``, and request more ahead."""
        for c in self._chunks_of(batch):
            if self._last_use[c] == batch and c in self._held:
                del self._held[c]
                self._held_bytes -= self._chunk_bytes(c)
                if c in self._loaded:
                    self._loaded.discard(c)
                    if self._released is not None:
                        self._released(c)
        self._request_until(set())

    def close(self) -> None:
        for future in self._held.values():
            future.cancel()
        self._held.clear()
        if self._released is not None:
            for c in self._loaded:
                self._released(c)
        self._loaded.clear()
