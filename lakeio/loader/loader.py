"""`Loader`: shuffled, sharded, prefetched batches of a lake as torch tensors.

A thin composer of stages — the plan (which samples, in which order), the prefetcher (which
chunks, when), the batcher (rows into contiguous arrays) and the device stage (tensors on the
device) — run by one producer thread a few batches ahead of the training loop.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import dask.config
import numpy as np
import torch

from lakeio.loader.batch import Batcher
from lakeio.loader.device import DeviceOptions, DeviceStage
from lakeio.loader.in_flight import ReadFigures, advice, read_figures
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
from lakeio.loader.producer import DONE, CopyOrder, Orders, drain, get, put


@dataclass(frozen=True)
class StreamOptions:
    """What to read and how far ahead: ``fields``; ``prefetch_bytes`` of decoded chunks held or in
    flight (default: two shuffle windows); ``threads`` loading chunks; ``ahead`` batches ready;
    ``prefetch_next_epoch``: once an epoch's last batch is assembled, start loading the next
    epoch's first chunks (so it starts without a pause)."""

    fields: tuple[str, ...] = ("images", "labels")
    prefetch_bytes: int | None = None
    threads: int | None = None  # None: chosen for the store (`Loader._load_threads`)
    ahead: int = 2
    output: str = "tuple"
    prefetch_next_epoch: bool = True


def _distributed_rank_world(rank: int | None, world: int | None) -> tuple[int, int]:
    if rank is not None and world is not None:
        return rank, world
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return rank or 0, world or 1


class Loader:
    """Iterate batches of ``dataset``; see `lakeio.Dataset.loader` for the arguments."""

    def __init__(
        self,
        dataset,
        plan: PlanSpec,
        device: DeviceOptions,
        stream: StreamOptions,
        transform: Callable | None = None,
        cluster=None,
        cluster_options=None,
    ) -> None:
        missing = [f for f in stream.fields if f not in dataset.fields]
        if missing:
            raise ValueError(
                f"fields {missing} are not in the lake (it has {list(dataset.fields)})"
            )
        self.dataset = dataset
        self.plan = plan
        self.stream = stream
        self.transform = transform
        shape = (
            dataset.manifest.fields["images"].shape if "images" in dataset.manifest.fields else (1,)
        )
        self._device = DeviceStage(device, shape[-1])
        self._members = dataset.chunk_members()
        self._planned: tuple | None = None  # (epoch and plan, its batches, their samples' chunks)
        self._epoch_chunks = 0  # chunks the last prefetch started reads (0: none yet)
        self.epoch = 0
        self._resume_at = 0
        self._consumed = 0
        self._stats = {"batches": 0, "samples": 0, "stall_seconds": 0.0, "seconds": 0.0,
                       "chunks_loaded": 0, "first_batch_s": 0.0, "first_batch_s_max": 0.0}  # fmt: skip
        self._running_since: float | None = None  # when the epoch being read began
        self.cluster = cluster  # a lakeio.cluster.session.ClusterSession, or None: in process
        self.cluster_options = cluster_options
        self.cluster_tasks = 0
        self.cluster_tasks_moved = 0
        self.cluster_tasks_retried = 0
        self._reader = uuid.uuid4().hex  # names this loader's plan to the workers' caches
        self._spare = None  # (epoch, prefetch) started ahead for the epoch expected next
        self._spare_lock = threading.Lock()
        self._closed = False

    def __getstate__(self) -> dict[str, Any]:  # sent to DataLoader workers: no threads, no lock
        state = dict(self.__dict__)
        state["_spare"] = None
        state["_planned"] = None  # an epoch's plan is made again where it is needed
        del state["_spare_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._spare_lock = threading.Lock()

    def close(self) -> None:
        """Release the cluster connection (and the LocalCluster, if this loader started one)
        and whatever was loading ahead for the next epoch."""
        with self._spare_lock:
            self._closed = True
        self._drop_spare()
        if self.cluster is not None:
            from lakeio.cluster.worker import tell_workers_to_forget

            tell_workers_to_forget(self.cluster.client, self._reader)
            self.cluster.close()
            self.cluster = None

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        return batch_count(len(self.dataset), self.plan)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows (call before each epoch)."""
        if epoch != self.epoch:
            self._resume_at = 0
            self._consumed = 0  # a state saved now starts the new epoch from its beginning
        self.epoch = int(epoch)

    def batches(self) -> list[np.ndarray]:
        """This rank's batches for the current epoch, as global sample indices (int64)."""
        planned = self._batches_of(self.epoch)  # (int32 views of the plan, where they fit)
        if not planned:
            return planned
        flat = np.concatenate(planned).astype(np.int64, copy=False)
        flat.flags.writeable = False  # as the plan's own: a batch handed out is not to be edited
        return batch_slices(flat, len(planned[0]))

    def _plan_key(self) -> dict[str, Any]:
        """The plan without the rank: every rank's state is the same, so rank 0 can save it."""
        return {k: v for k, v in asdict(self.plan).items() if k != "rank"}

    def state_dict(self) -> dict[str, Any]:
        """Where the iteration stands: resume with `load_state_dict` in a new process.

        Once an epoch's last batch is out, the state is the next epoch's start, so a checkpoint
        taken at the end of an epoch resumes with the next one, not with an empty replay."""
        epoch, done = self.epoch, self._consumed
        if done >= len(self):
            epoch, done = epoch + 1, 0
        return {
            "epoch": epoch,
            "batches_done": done,
            "samples": len(self.dataset),
            "plan": self._plan_key(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        plan = self._plan_key()
        if state.get("plan") != plan or state.get("samples") != len(self.dataset):
            raise ValueError(
                f"state was saved for plan {state.get('plan')} over {state.get('samples')} samples; "
                f"this loader has {plan} over {len(self.dataset)}"
            )
        self.epoch = int(state["epoch"])
        self._resume_at = self._consumed = int(state["batches_done"])

    def stats(self) -> dict[str, Any]:
        """Batches and samples delivered, samples/s, time the consumer waited (stall), the time
        from asking for an iteration to its first batch (``first_batch_s``: the latest one;
        ``first_batch_s_max``), cache figures."""
        s = dict(self._stats)
        running = self._running_since  # mid-epoch: count the epoch so far too
        if running is not None:
            s["seconds"] += time.perf_counter() - running
        s["samples_per_s"] = s["samples"] / s["seconds"] if s["seconds"] else 0.0
        s["stall_fraction"] = s["stall_seconds"] / s["seconds"] if s["seconds"] else 0.0
        s["cache"] = self.dataset.source.stats()
        s["load_threads"] = (
            (self.stream.threads or 4) if self.cluster else self._load_threads(self._budget())
        )
        if self.cluster is None:  # on the cluster path the workers read: see s["workers"]
            figures = self._read_figures(s)
            chunk = self.dataset.chunk_nbytes(self.stream.fields)
            s["reads"] = {
                **figures.as_dict(),
                "advice": advice(figures, chunk, s["stall_fraction"]),
            }
        else:
            from lakeio.cluster.worker import gather_worker_stats

            s["cluster_tasks"] = self.cluster_tasks
            s["cluster_tasks_moved"] = self.cluster_tasks_moved  # their owner left mid-epoch
            s["cluster_tasks_retried"] = self.cluster_tasks_retried  # cancelled by others
            s["workers"] = gather_worker_stats(self.cluster.client)
        return s

    def _read_figures(self, s: dict[str, Any]) -> ReadFigures:
        """Little's law from this loader's own measurements (see `lakeio.loader.in_flight`)."""
        cache = s["cache"]
        chunk = max(1, self.dataset.chunk_nbytes(self.stream.fields))
        # the prefetcher holds the budget's chunks, and the current batch's past it (a batch
        # may draw on every chunk of its shuffle window)
        held = max(self._budget() // chunk, min(self.plan.window, self.plan.batch_size), 1)
        return read_figures(
            s["chunks_loaded"], s["seconds"] - s["stall_seconds"], cache["origin_reads"],
            cache["requests"], cache["origin_latency_s"], s["load_threads"], held,
            cache["origin_in_flight_peak"], self._threads_set_by(), self._epoch_chunks,
        )  # fmt: skip

    def _threads_set_by(self) -> str:
        """What decides the in-process loading threads (see `_load_threads`)."""
        if self.stream.threads:
            return "threads"
        limit = int(dask.config.get("lakeio.read.max-in-flight", 32))
        if self.dataset.loc.is_local or self._load_threads(self._budget()) < limit:
            return "budget"  # (a local lake's 4: more is not what a local disk needs)
        return "max-in-flight"

    def __iter__(self) -> Iterator:
        start, self._resume_at = self._resume_at, 0
        self._consumed = start
        planning = time.perf_counter()
        batches = self._batches_of(self.epoch)[start:]
        planning = time.perf_counter() - planning
        return self._run(batches, self.epoch if start == 0 else None, planning)

    def as_iterable_dataset(self):
        """This loader as a `torch.utils.data.IterableDataset` for a plain ``DataLoader(ds,
        batch_size=None, num_workers=k)``: worker w of k yields batches w, w+k, ... so the
        DataLoader's round-robin gives back exactly this loader's order, with no duplicates."""
        from lakeio.loader.torch_dataset import LakeIterableDataset

        return LakeIterableDataset(self)

    def iterate(self, batches: list[np.ndarray]) -> Iterator:
        """Yield the given batches (global sample indices) through prefetch, batcher and device."""
        return self._run(batches, None)

    def _run(self, batches: list[np.ndarray], epoch: int | None, planning: float = 0.0) -> Iterator:
        """Iterate ``batches``; ``epoch`` says they are that whole epoch, so the next epoch's
        first chunks may be loaded as soon as this one's last batch is assembled. ``planning``:
        seconds spent planning them, counted in the time to the first batch."""
        ready: queue.Queue = queue.Queue(maxsize=max(1, self.stream.ahead))
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce, args=(batches, ready, stop, epoch), name="lakeio-batcher",
            daemon=True,
        )  # fmt: skip
        producer.start()
        began = self._running_since = time.perf_counter()
        first = True
        try:
            while True:
                waited = time.perf_counter()
                item = get(ready, producer)
                if item is DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                order, pinned = item
                arrays = order.take()  # (copied here, unless the batcher thread was ahead)
                self._stats["stall_seconds"] += time.perf_counter() - waited
                batch = self._to_output(arrays, pinned)
                if first:
                    self._first_batch(planning + time.perf_counter() - began)
                    first = False
                self._consumed += 1
                self._stats["batches"] += 1
                self._stats["samples"] += len(next(iter(arrays.values())))
                if self.cluster is not None:
                    self._report(began)
                yield batch
        finally:
            self._stats["seconds"] += time.perf_counter() - began
            self._running_since = None
            if self.cluster is not None:
                self._report(began, force=True)
            stop.set()
            drain(ready)
            producer.join(timeout=30)

    def _first_batch(self, seconds: float) -> None:
        """An iteration's time to its first batch, planning included (for `stats`)."""
        self._stats["first_batch_s"] = seconds
        self._stats["first_batch_s_max"] = max(self._stats["first_batch_s_max"], seconds)

    def _report(self, began: float, force: bool = False) -> None:
        """This trainer's figures for the lakeio dashboard page (sent at most once a second)."""
        seconds = self._stats["seconds"] + (0.0 if force else time.perf_counter() - began)
        self.cluster.report(
            {
                "epoch": self.epoch,
                "batches": self._stats["batches"],
                "images_per_s": self._stats["samples"] / seconds if seconds else 0.0,
                "stall_fraction": self._stats["stall_seconds"] / seconds if seconds else 0.0,
            },
            force=force,
        )

    def _produce(
        self,
        batches: list[np.ndarray],
        ready: queue.Queue,
        stop: threading.Event,
        epoch: int | None,
    ) -> None:
        """The batcher thread (see `lakeio.loader.producer`): each batch's chunks, then its
        copy order queued; a batch's chunks are let go once its copy is made."""
        prefetcher = loads = spare = later = None
        orders = Orders()
        finished = False
        try:
            started = self._take_spare(epoch)
            if started is None:
                started = self._start_prefetch(batches, self.epoch)
            prefetcher, loads, batch_chunks, starts, after, later, batcher = started
            ahead = epoch is not None and self.stream.prefetch_next_epoch
            for i, indices in enumerate(batches):
                if stop.is_set():
                    return
                if prefetcher.chunks_for(i, stop) is None:  # the consumer went away mid-epoch
                    return
                pinned = self._pinned_buffers(len(indices))  # travels with the batch to the copy
                out = {f: t.numpy() for f, t in pinned.items()} if pinned else None
                chunk_ids = batch_chunks[i]
                order = CopyOrder(batcher.gather, chunk_ids, indices - starts[chunk_ids], out)
                orders.add(i, order)
                while ready.full() and not stop.is_set() and orders.take_one():
                    pass  # ahead of the training loop: make the copies it will ask for
                put(ready, (order, pinned), stop)
                for done in orders.finished():
                    prefetcher.done_with(done)
                if ahead and prefetcher.fully_requested:
                    # this epoch's tail is all requested: what it frees of the budget goes to
                    # the next epoch's first chunks, so both together stay within the budget
                    if spare is None:
                        spare = self._start_spare(epoch + 1, after + len(prefetcher.order))
                        ahead = spare is not None
                    if spare is not None:
                        spare.warm(prefetcher.budget - prefetcher.held_bytes)
                if i == 0 and later is not None:
                    later.start()  # the first batch is out: plan the next epoch now
            for done in orders.finished(everything=True):
                prefetcher.done_with(done)
            finished = True
            put(ready, DONE, stop)
        except BaseException as exc:  # surfaces in the consumer's thread, after the batches
            orders.finished(everything=True)  # queued before it (their chunks are still held)
            put(ready, exc, stop)
        finally:
            orders.cancel()  # abandoned: a copy in progress reads chunks about to be let go
            if prefetcher is not None:
                prefetcher.close()
            if loads is not None:
                loads.close()
                if later is not None:  # its word would come too late, or for nothing
                    later.cancel()
            if not finished:  # abandoned or failed: the next epoch is not a given any more
                self._drop_spare()

    def _start_spare(self, epoch: int, after: int):
        """Start a prefetch for ``epoch``, the iteration expected next (most training loops go on
        with ``set_epoch(epoch)``), while this epoch's tail is still read: the next epoch then
        starts without waiting for its first shuffle window. Dropped if the next iteration is
        another epoch. ``after``: chunk uses scheduled before it, so the memory tier's plan
        counts the next epoch's uses after this one's. Returns its prefetcher, or None."""
        try:
            spare = self._start_prefetch(self._batches_of(epoch), epoch, after)
        except Exception:  # e.g. a cluster without workers: the next epoch will say so itself
            return None
        with self._spare_lock:
            if self._closed:
                old, spare_kept = None, None
            else:
                old, self._spare = self._spare, (epoch, spare)
                spare_kept = spare
        if old is not None:
            _close_started(old[1])
        if spare_kept is None:  # the loader was closed meanwhile
            _close_started(spare)
            return None
        return spare[0]

    def _drop_spare(self) -> None:
        spare = self._take_spare(None)
        if spare is not None:
            _close_started(spare)

    def _take_spare(self, epoch: int | None):
        """The prefetch started ahead for ``epoch``, if that is what was started; else None."""
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is None:
            return None
        if spare[0] == epoch:
            return spare[1]
        _close_started(spare[1])
        return None

    def _batches_of(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches for ``epoch``; the chunk ids of their samples are kept beside
        them (the last epoch asked for) for `_start_prefetch`."""
        planned = self._planned
        if planned is not None and planned[0] == (epoch, self.plan):
            return list(planned[1])
        orders, chunk_ids = rank_orders_and_chunks(self._members, self.plan, epoch)
        mine, their_chunks = orders[self.plan.rank], chunk_ids[self.plan.rank]
        if self.plan.world_size > 1:  # this rank's share alone, not views that keep them all
            mine, their_chunks = mine.copy(), their_chunks.copy()
        mine.flags.writeable = their_chunks.flags.writeable = False  # shared: read-only
        size, count = self.plan.batch_size, len(self)
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

    def _start_prefetch(self, batches: list[np.ndarray], epoch: int, after: int = 0):
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
        self._epoch_chunks = len(this_epoch)  # what this rank reads: the read figures' epoch
        budget = self._budget()
        later = None  # the next epoch's plan for the memory tier, when it is made on a thread
        if self.cluster is not None:
            loads = self._cluster_loads(this_epoch, budget, epoch)
        else:
            threads = self._load_threads(budget)
            load, later = self._scheduled_load(this_epoch, epoch, after)
            loads = ThreadLoads(load, threads, lambda c: ds.chunk_in_memory(c, fields))

        def start(chunk: int):
            self._stats["chunks_loaded"] += 1  # (from the batcher thread)
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
        return prefetcher, loads, batch_chunks, ds.chunk_starts, after, later, batcher

    def _budget(self) -> int:
        """Bytes of decoded chunks held or in flight: as asked, or two shuffle windows."""
        chunk = self.dataset.chunk_nbytes(self.stream.fields)
        return self.stream.prefetch_bytes or 2 * self.plan.window * chunk

    def _load_threads(self, budget: int) -> int:
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
    ) -> tuple[Callable[[int], dict[str, np.ndarray]], _PlannedLater | None]:
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
        if not len(tier) and len(self) * self.plan.batch_size > PLAN_ON_A_THREAD:
            # An empty tier (a fresh process's first epoch) has nothing to rank yet: the next
            # epoch is planned on a thread once the first batch is out (a large lake's plan
            # takes a second), and the chunks loaded until then are told when it is done.
            # (Other readers of the same tier, ds[i] on this dataset, meanwhile see the chunks
            # this loader has not loaded yet as not needed; with one reader nothing changes.)
            later = _PlannedLater(lambda: self._next_epoch_positions(offset, epoch), ds)

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
            soonest = first_need(self._members, self.plan, epoch + 1)
            next_use = {c: epoch + 1 + f for c, f in soonest.items()}
        loads = ClusterLoads(
            self.cluster.client, self.dataset, token, self.stream.fields, this_epoch,
            self.cluster_options, budget, threads=self.stream.threads or 4, next_use=next_use,
            reader=self._reader, epoch=epoch,
        )  # fmt: skip
        return _CountingLoads(loads, self)

    def _next_epoch_positions(self, offset: int, epoch: int) -> dict[int, int]:
        """When each chunk is first needed in the epoch after ``epoch``, counted after
        ``epoch``'s own chunks (``offset`` of them)."""
        chunk_ids = rank_orders_and_chunks(self._members, self.plan, epoch + 1)[1][self.plan.rank]
        used, _ = uses_in_order(chunk_ids, self.plan.batch_size)
        return dict(zip(used, range(offset, offset + len(used)), strict=True))

    def _pinned_buffers(self, n: int) -> dict[str, torch.Tensor] | None:
        """Pinned host tensors to gather into when copying to CUDA. The tensors themselves (not
        numpy views of them) go to the copy, so torch's pinned allocator sees the transfer and
        does not hand the memory out again before it completes."""
        if not self._device.pinned:
            return None
        m = self.dataset.manifest
        return {
            f: self._device.host_buffer((n, *m.fields[f].shape), np.dtype(m.fields[f].dtype))
            for f in self.stream.fields
            if m.fields[f].dtype != "str"
        }

    def _to_output(self, arrays: dict[str, np.ndarray], pinned: dict[str, torch.Tensor] | None):
        """The batch as the training loop gets it; pinned fields are copied from their tensors
        (``arrays`` holds only numpy views of them) and str fields become lists."""
        out: dict[str, Any] = {}
        for field, array in arrays.items():
            source = pinned[field] if pinned and field in pinned else array
            if field == "images":
                out[field] = self._device.images(source)
            elif array.dtype == object:
                out[field] = array.tolist()
            else:
                out[field] = self._device.tensor(source)
        if self.transform is not None:
            out = self.transform(out)
        if self.stream.output == "dict":
            return out
        return tuple(out[f] for f in self.stream.fields)


PLAN_ON_A_THREAD = 1 << 20  # samples per rank and epoch above which planning takes ~0.1 s


class _PlannedLater:
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


def _close_started(started) -> None:
    """Close a (prefetcher, loads, …, later) tuple from `Loader._start_prefetch`."""
    prefetcher, loads, later = started[0], started[1], started[5]
    prefetcher.close()
    loads.close()
    if later is not None:
        later.cancel()


class _CountingLoads:
    """Cluster loads that add their task count to the loader's stats when closed."""

    def __init__(self, loads, loader: Loader) -> None:
        self._loads, self._loader = loads, loader
        self.start = loads.start

    def close(self) -> None:
        self._loads.close()
        self._loader.cluster_tasks += self._loads.tasks
        self._loader.cluster_tasks_moved += self._loads.moved
        self._loader.cluster_tasks_retried += self._loads.retried


def _chunks_of_batches(chunk_of, batches: list[np.ndarray]) -> list[np.ndarray]:
    """The chunk id of each sample of each batch: computed for all at once, then cut."""
    if not batches:
        return []
    ids = chunk_of[np.concatenate(batches)]
    return np.split(ids, np.cumsum([len(b) for b in batches[:-1]]))
