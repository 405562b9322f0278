"""Reading an epoch's chunks: what the batcher thread needs to follow the plan.

`EpochReader` turns an epoch's batches into `EpochReads`: each batch's chunk ids, the
prefetcher (which chunks to load, in which order, within the byte budget), the loads (threads
in this process, or tasks on a Dask cluster), the `Batcher` the loaded chunks are handed to,
and, for the memory tier's plan-aware eviction, when each chunk is needed next. It also keeps
the plans of the last epoch asked for (`batches_of`), and what was started ahead for the epoch
expected next (`NextEpoch`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask.config
import numpy as np

from lakeio.loader.batch import Batcher
from lakeio.loader.options import StreamOptions
from lakeio.loader.plan import (
    PlanSpec,
    batch_count,
    batch_slices,
    first_need,
    rank_orders_and_chunks,
)
from lakeio.loader.prefetch import (
    ChunkPrefetcher,
    ThreadLoads,
    first_and_last_use,
    uses_in_order,
)

PLAN_ON_A_THREAD = 1 << 20  # samples per rank and epoch above which planning takes ~0.1 s


def lake_fits(dataset, tier, fields: tuple[str, ...]) -> bool:
    """Whether the memory tier can hold every decoded chunk of ``fields`` in the lake."""
    return dataset.index.chunk_count * dataset.chunk_nbytes(fields) <= tier.capacity


@dataclass
class EpochReads:
    """What reading one epoch's batches takes (see `EpochReader.start`)."""

    prefetcher: ChunkPrefetcher
    loads: Any  # ThreadLoads, or cluster loads counted into the reader's figures
    batch_chunks: list[np.ndarray]  # the chunk id of each sample, batch by batch
    starts: np.ndarray  # each chunk's first global sample: a sample's row is the difference
    after: int  # chunk uses scheduled before this epoch's (an epoch still being read)
    later: PlannedLater | None  # the next epoch's plan for the memory tier, made on a thread
    batcher: Batcher
    on_close: Callable[[], None] | None = None  # (the reader's count of reads open)

    def close(self) -> None:
        try:
            self.prefetcher.close()
            self.loads.close()
            if self.later is not None:  # its word would come too late, or for nothing
                self.later.cancel()
        finally:
            done, self.on_close = self.on_close, None
            if done is not None:
                done()


@dataclass
class ReadCounts:
    """What the reader did, for `Loader.stats`."""

    chunks_loaded: int = 0
    epoch_chunks: int = 0  # chunks the last epoch started reads (what this rank reads)
    cluster_tasks: int = 0
    cluster_tasks_moved: int = 0  # their owner left mid-epoch
    cluster_tasks_retried: int = 0  # cancelled by others


class EpochReader:
    """Plans and starts the reads of a loader's epochs (one per loader, on its dataset)."""

    def __init__(
        self,
        dataset,
        plan: PlanSpec,
        stream: StreamOptions,
        cluster=None,
        cluster_options=None,
        reader: str = "",
    ) -> None:
        self.dataset, self.plan, self.stream = dataset, plan, stream
        self.cluster, self.cluster_options, self.reader = cluster, cluster_options, reader
        self.members = dataset.chunk_members()
        self.counts = ReadCounts()
        self._planned: tuple | None = None  # (epoch and plan, its batches, their samples' chunks)
        self._open = 0  # reads started and not closed (this epoch's, the next one's)
        self._reserved = 0  # of the memory tier's capacity, while any are open
        self._hold = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # (sent to DataLoader workers without its plans)
        state = {**self.__dict__, "_planned": None, "_open": 0, "_reserved": 0}
        del state["_hold"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._hold = threading.Lock()

    def _opened(self) -> None:
        """Reads start: the memory tier sets the prefetch budget aside (`MemoryTier.reserve`),
        so that the tier and the chunks held for the plan together stay within
        ``Cache(memory=...)``; given back once no reads of this loader are open."""
        tier = self.dataset.source.memory if self.cluster is None else None  # (else unused)
        with self._hold:
            self._open += 1
            # A lake the tier holds whole is held once: the prefetcher's chunks are the tier's.
            # Else the tier churns, and what the prefetcher holds may be evicted meanwhile.
            if (
                self._open == 1
                and tier is not None
                and not lake_fits(self.dataset, tier, self.stream.fields)
            ):
                self._reserved = min(self.budget(), tier.capacity)
                tier.reserve(self._reserved)

    def _closed(self) -> None:
        tier = self.dataset.source.memory
        with self._hold:
            self._open -= 1
            if self._open == 0 and tier is not None and self._reserved:
                tier.release(self._reserved)
                self._reserved = 0

    def batch_count(self) -> int:
        return batch_count(len(self.dataset), self.plan)

    def batches_of(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches for ``epoch``; the chunk ids of their samples are kept beside
        them (the last epoch asked for) for `start`."""
        planned = self._planned
        if planned is not None and planned[0] == (epoch, self.plan):
            return list(planned[1])
        orders, chunk_ids = rank_orders_and_chunks(self.members, self.plan, epoch)
        mine, their_chunks = orders[self.plan.rank], chunk_ids[self.plan.rank]
        if self.plan.world_size > 1:  # this rank's share alone, not views that keep them all
            mine, their_chunks = mine.copy(), their_chunks.copy()
        mine.flags.writeable = their_chunks.flags.writeable = False  # shared: read-only
        size, count = self.plan.batch_size, self.batch_count()
        batches = batch_slices(mine, size)[:count]
        their_chunks = their_chunks[: min(len(mine), size * count)]  # (drop_last cuts a tail)
        self._planned = ((epoch, self.plan), batches, their_chunks)
        return list(batches)

    def _planned_chunks(self, batches: list[np.ndarray]) -> np.ndarray | None:
        """The chunk ids of the samples of ``batches``, one batch after the other, if they are
        (the tail of) the last epoch planned."""
        planned = self._planned
        if planned is None or not batches:
            return None
        (_, plan), all_batches, all_chunks = planned
        skip = len(all_batches) - len(batches)
        if skip < 0 or any(a is not b for a, b in zip(batches, all_batches[skip:], strict=True)):
            return None
        return all_chunks[skip * plan.batch_size :]

    def start(self, batches: list[np.ndarray], epoch: int, after: int = 0) -> EpochReads:
        """Start reading ``batches`` of ``epoch``: ``after`` chunk uses are scheduled before
        this epoch's (those of an epoch still being read)."""
        ds, fields = self.dataset, self.stream.fields
        chunk_of, _ = ds.sample_chunks()
        planned = self._planned_chunks(batches)
        if planned is not None:  # the plan's own chunk ids: cut, not looked up
            size = len(batches[0])  # (every batch but the last is full)
            batch_chunks = batch_slices(planned, size)
            uses = uses_in_order(planned, size)
        else:
            batch_chunks = _chunks_of_batches(chunk_of, batches)
            uses = first_and_last_use(batch_chunks)
        this_epoch = uses[0]
        self.counts.epoch_chunks = len(this_epoch)  # what this rank reads: the read figures' epoch
        budget = self.budget()
        later = None  # the next epoch's plan for the memory tier, when it is made on a thread
        if self.cluster is not None:
            loads = self._cluster_loads(this_epoch, budget, epoch)
        else:
            threads = self.load_threads(budget)
            load, later = self._scheduled_load(this_epoch, epoch, after)
            loads = ThreadLoads(load, threads, lambda c: ds.chunk_in_memory(c, fields))

        def start(chunk: int):
            self.counts.chunks_loaded += 1  # (from the batcher thread)
            return loads.start(chunk)

        batcher = Batcher(fields, ds.batch_arrays)
        chunk_nbytes = ds.chunk_nbytes(fields)
        prefetcher = ChunkPrefetcher(
            start=start,
            chunk_bytes=lambda c: chunk_nbytes,
            batch_chunks=batch_chunks,
            budget=budget,
            uses=uses,
            ready=batcher.add,
            released=batcher.drop,
        )
        self._opened()
        return EpochReads(
            prefetcher, loads, batch_chunks, ds.chunk_starts, after, later, batcher, self._closed
        )

    def budget(self) -> int:
        """Bytes of decoded chunks held or in flight: as asked, or two shuffle windows."""
        chunk = self.dataset.chunk_nbytes(self.stream.fields)
        return self.stream.prefetch_bytes or 2 * self.plan.window * chunk

    def load_threads(self, budget: int) -> int:
        """Threads loading chunks in process: as asked; else 4 on a local disk, and for a remote
        store as many as the budget has chunks (each load there mostly waits on a round trip),
        up to ``lakeio.read.max-in-flight``."""
        if self.stream.threads:
            return self.stream.threads
        if self.dataset.loc.is_local:
            return 4
        chunks = budget // max(1, self.dataset.chunk_nbytes(self.stream.fields))
        limit = int(dask.config.get("lakeio.read.max-in-flight", 32))
        return max(4, min(limit, chunks))

    def _scheduled_load(
        self, this_epoch: list[int], epoch: int, after: int
    ) -> tuple[Callable[[int], dict[str, np.ndarray]], PlannedLater | None]:
        """In-process loads that tell the memory tier when each chunk is needed next (in chunk
        uses from now; ``after`` uses of an epoch still being read come first); and, where the
        next epoch is planned later, what the producer starts once the first batch is out."""
        ds, fields = self.dataset, self.stream.fields
        tier = ds.source.memory
        if tier is None or tier.policy != "plan":
            return (lambda c: ds.load_chunk(c, fields)), None
        # Plan-aware eviction: a chunk not yet loaded this epoch is next needed at its place in
        # this epoch; once loaded (the prefetcher holds it for this use), at its place in the next.
        offset = after + len(this_epoch)
        if not len(tier) and self.batch_count() * self.plan.batch_size > PLAN_ON_A_THREAD:
            # An empty tier (a fresh process's first epoch) has nothing to rank yet: the next
            # epoch is planned on a thread once the first batch is out (a large lake's plan
            # takes a second), and the chunks loaded until then are told when it is done.
            # (Other readers of the same tier, ds[i] on this dataset, meanwhile see the chunks
            # this loader has not loaded yet as not needed; with one reader nothing changes.)
            later = PlannedLater(lambda: self._next_epoch_positions(offset, epoch), ds)

            def load_early(c: int) -> dict[str, np.ndarray]:
                later.loaded(c)
                return ds.load_chunk(c, fields)

            return load_early, later
        next_use = self._next_epoch_positions(offset, epoch)
        if len(tier):
            ahead = ((c, after + t) for t, c in enumerate(this_epoch))
            ds.schedule_chunks([*next_use.items(), *ahead])

        def load(c: int) -> dict[str, np.ndarray]:
            ds.schedule_chunks([(c, next_use.get(c, math.inf))])
            return ds.load_chunk(c, fields)

        return load, None

    def _cluster_loads(self, this_epoch: list[int], budget: int, epoch: int):
        from lakeio.cluster.loads import ClusterLoads

        token = self.cluster.token_for(self.dataset)
        # When each chunk is needed again by any rank, in epochs: the workers' plan-aware
        # eviction serves every rank (and every job) reading the lake, not just this one.
        next_use = None  # Cache(eviction="lru"): the workers are not told the plan
        if self.dataset.source.cache.eviction == "plan":
            soonest = first_need(self.members, self.plan, epoch + 1)
            next_use = {c: epoch + 1 + f for c, f in soonest.items()}
        loads = ClusterLoads(
            self.cluster.client, self.dataset, token, self.stream.fields, this_epoch,
            self.cluster_options, budget, threads=self.stream.threads or 4, next_use=next_use,
            reader=self.reader, epoch=epoch,
        )  # fmt: skip
        return _CountingLoads(loads, self.counts)

    def _next_epoch_positions(self, offset: int, epoch: int) -> dict[int, int]:
        """When each chunk is first needed in the epoch after ``epoch``, counted after
        ``epoch``'s own chunks (``offset`` of them)."""
        chunk_ids = rank_orders_and_chunks(self.members, self.plan, epoch + 1)[1][self.plan.rank]
        used, _ = uses_in_order(chunk_ids, self.plan.batch_size)
        return dict(zip(used, range(offset, offset + len(used)), strict=True))

    def threads_set_by(self) -> str:
        """What decides the in-process loading threads (see `_load_threads`)."""
        if self.stream.threads:
            return "threads"
        limit = int(dask.config.get("lakeio.read.max-in-flight", 32))
        if self.dataset.loc.is_local or self.load_threads(self.budget()) < limit:
            return "budget"  # (a local lake's 4: more is not what a local disk needs)
        return "max-in-flight"


class NextEpoch:
    """The reads started ahead for the epoch expected next (most training loops go on with
    ``set_epoch(e + 1)``) while this epoch's tail is still read, so that the next epoch starts
    without waiting for its first shuffle window; dropped if another epoch comes next."""

    def __init__(self, reader: EpochReader) -> None:
        self._reader = reader
        self._lock = threading.Lock()
        self._started: tuple[int, EpochReads] | None = None
        self._closed = False

    def __getstate__(self) -> dict[str, Any]:  # (sent to DataLoader workers: nothing started)
        return {"reader": self._reader}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["reader"])

    def warm(self, budget: int) -> None:
        """Load the started epoch's first chunks, up to ``budget`` bytes; nothing once it was
        taken, dropped or closed (`close` may come from the training loop meanwhile)."""
        with self._lock:
            if self._started is not None and not self._closed:
                self._started[1].prefetcher.warm(budget)

    def start(self, epoch: int, after: int) -> ChunkPrefetcher | None:
        """Start reading ``epoch``; ``after``: chunk uses scheduled before it, so the memory
        tier counts its uses after the current epoch's. Its prefetcher, or None."""
        try:
            reads = self._reader.start(self._reader.batches_of(epoch), epoch, after)
        except Exception:  # e.g. a cluster without workers: the next epoch will say so itself
            return None
        with self._lock:
            old, kept = (None, None) if self._closed else (self._started, reads)
            if kept is not None:
                self._started = (epoch, reads)
        if old is not None:
            old[1].close()
        if kept is None:  # the loader was closed meanwhile
            reads.close()
            return None
        return reads.prefetcher

    def take(self, epoch: int | None) -> EpochReads | None:
        """The reads started for ``epoch``, if that is what was started (others are closed)."""
        with self._lock:
            started, self._started = self._started, None
        if started is None:
            return None
        if started[0] == epoch:
            return started[1]
        started[1].close()
        return None

    def drop(self) -> None:
        started = self.take(None)
        if started is not None:
            started.close()

    def close(self) -> None:
        """Drop what was started; nothing is started any more."""
        with self._lock:
            self._closed = True
        self.drop()


class PlannedLater:
    """Next-epoch positions for the memory tier, computed on a thread once `start` is called
    (when the first batch is out): chunks loaded before they are known are told when they are
    (until then the tier counts them as not needed). After `cancel` (the epoch is over, or
    abandoned), nothing more is told: positions counted from this epoch's start would then
    be wrong for whatever reads next."""

    def __init__(self, compute: Callable[[], dict[int, int]], dataset) -> None:
        self._compute: Callable[[], dict[int, int]] | None = compute
        self._dataset = dataset
        self._lock = threading.Lock()  # taken before the tier's own lock, never after it
        self._known: dict[int, int] | None = None
        self._loaded: list[int] = []
        self._cancelled = False

    def start(self) -> None:
        with self._lock:
            compute, self._compute = self._compute, None
            if compute is None or self._cancelled:
                return
        plan = threading.Thread(target=self._plan, args=(compute,), name="lakeio-plan")
        plan.daemon = True
        plan.start()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled, self._compute, self._loaded = True, None, []

    def _plan(self, compute: Callable[[], dict[int, int]]) -> None:
        with self._lock:
            if self._cancelled:
                return
        try:
            known = compute()
        except Exception:  # a hint only: without it the tier evicts as if nothing were needed
            known = {}
        with self._lock:
            if self._cancelled:
                return
            self._known, loaded, self._loaded = known, self._loaded, []
            self._dataset.schedule_chunks([(c, known.get(c, math.inf)) for c in loaded])

    def loaded(self, chunk: int) -> None:
        with self._lock:
            if self._cancelled:
                return
            if self._known is None:
                self._loaded.append(chunk)
                return
            self._dataset.schedule_chunks([(chunk, self._known.get(chunk, math.inf))])


class _CountingLoads:
    """Cluster loads that add their task counts to the reader's when closed."""

    def __init__(self, loads, counts: ReadCounts) -> None:
        self._loads, self._counts = loads, counts
        self.start = loads.start

    def close(self) -> None:
        self._loads.close()
        self._counts.cluster_tasks += self._loads.tasks
        self._counts.cluster_tasks_moved += self._loads.moved
        self._counts.cluster_tasks_retried += self._loads.retried


def _chunks_of_batches(chunk_of, batches: list[np.ndarray]) -> list[np.ndarray]:
    """The chunk id of each sample of each batch: computed for all at once, then cut."""
    if not batches:
        return []
    ids = chunk_of[np.concatenate(batches)]
    return np.split(ids, np.cumsum([len(b) for b in batches[:-1]]))
