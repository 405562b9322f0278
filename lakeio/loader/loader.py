"""`Loader`: shuffled, sharded, prefetched batches of a lake as torch tensors.

A thin composer of stages — the plan (which samples, in which order), the prefetcher (which
chunks, when), the batcher (rows into contiguous arrays) and the device stage (tensors on the
device) — run by one producer thread a few batches ahead of the training loop.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from lakeio.loader.allocator import fix_mmap_threshold
from lakeio.loader.device import DeviceOptions, DeviceStage
from lakeio.loader.in_flight import ReadFigures, advice, read_figures
from lakeio.loader.options import StreamOptions
from lakeio.loader.plan import PlanSpec, batch_count, batch_slices
from lakeio.loader.producer import DONE, CopyOrder, Orders, drain, get, put
from lakeio.loader.reads import EpochReader, NextEpoch


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
        self.epoch = 0
        self._resume_at = 0
        self._consumed = 0
        self._stats = {"batches": 0, "samples": 0, "stall_seconds": 0.0, "seconds": 0.0,
                       "first_batch_s": 0.0, "first_batch_s_max": 0.0}  # fmt: skip
        self._running_since: float | None = None  # when the epoch being read began
        self.cluster = cluster  # a lakeio.cluster.session.ClusterSession, or None: in process
        self.cluster_options = cluster_options
        self._reader = uuid.uuid4().hex  # names this loader's plan to the workers' caches
        self._reads = EpochReader(dataset, plan, stream, cluster, cluster_options, self._reader)
        fix_mmap_threshold()  # (where asked for: see lakeio.loader.allocator)
        self._next = NextEpoch(self._reads)  # reads started ahead for the epoch expected next
        # a loader dropped without close() lets go of them too (and of the tier's reservation)
        weakref.finalize(self, self._next.close)

    def close(self) -> None:
        """Release the cluster connection (and the LocalCluster, if this loader started one)
        and whatever was loading ahead for the next epoch."""
        self._next.close()
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
        planned = self._reads.batches_of(self.epoch)  # (int32 views of the plan, where they fit)
        if not planned:
            return planned
        flat = np.concatenate(planned).astype(np.int64, copy=False)
        flat.flags.writeable = False  # as the plan's own: a batch handed out is not to be edited
        return batch_slices(flat, len(planned[0]))

    def _plan_key(self) -> dict[str, Any]:
        """The plan without the rank: every rank's state is the same, so rank 0 can save it."""
        key = {k: v for k, v in asdict(self.plan).items() if k != "rank"}
        if key["sharding"] == "epoch":  # (the default: states saved before it existed resume)
            del key["sharding"]
        return key

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
        """Resume where `state_dict` was taken (same plan and lake); `ValueError` otherwise."""
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
        counts = self._reads.counts
        s["chunks_loaded"] = counts.chunks_loaded
        running = self._running_since  # mid-epoch: count the epoch so far too
        if running is not None:
            s["seconds"] += time.perf_counter() - running
        s["samples_per_s"] = s["samples"] / s["seconds"] if s["seconds"] else 0.0
        s["stall_fraction"] = s["stall_seconds"] / s["seconds"] if s["seconds"] else 0.0
        s["cache"] = self.dataset.source.stats()
        reads = self._reads
        s["load_threads"] = (
            (self.stream.threads or 4) if self.cluster else reads.load_threads(reads.budget())
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

            s["cluster_tasks"] = counts.cluster_tasks
            s["cluster_tasks_moved"] = counts.cluster_tasks_moved  # their owner left mid-epoch
            s["cluster_tasks_retried"] = counts.cluster_tasks_retried  # cancelled by others
            s["workers"] = gather_worker_stats(self.cluster.client)
        return s

    def _read_figures(self, s: dict[str, Any]) -> ReadFigures:
        """Little's law from this loader's own measurements (see `lakeio.loader.in_flight`)."""
        cache = s["cache"]
        chunk = max(1, self.dataset.chunk_nbytes(self.stream.fields))
        # the prefetcher holds the budget's chunks, and the current batch's past it (a batch
        # may draw on every chunk of its shuffle window)
        held = max(self._reads.budget() // chunk, min(self.plan.window, self.plan.batch_size), 1)
        return read_figures(
            s["chunks_loaded"], s["seconds"] - s["stall_seconds"], cache["origin_reads"],
            cache["requests"], cache["origin_latency_s"], s["load_threads"], held,
            cache["origin_in_flight_peak"], self._reads.threads_set_by(),
            self._reads.counts.epoch_chunks,
        )  # fmt: skip

    def __iter__(self) -> Iterator:
        start, self._resume_at = self._resume_at, 0
        self._consumed = start
        planning = time.perf_counter()
        batches = self._reads.batches_of(self.epoch)[start:]
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
        reads = spare = None
        orders = Orders()
        finished = False
        try:
            reads = self._next.take(epoch) or self._reads.start(batches, self.epoch)
            prefetcher, batch_chunks, starts = reads.prefetcher, reads.batch_chunks, reads.starts
            ahead = epoch is not None and self.stream.prefetch_next_epoch
            for i, indices in enumerate(batches):
                if stop.is_set():
                    return
                if not prefetcher.wait_for(i, stop):  # the consumer went away mid-epoch
                    return
                pinned = self._pinned_buffers(len(indices))  # travels with the batch to the copy
                out = {f: t.numpy() for f, t in pinned.items()} if pinned else None
                chunk_ids = batch_chunks[i]
                order = CopyOrder(reads.batcher.gather, chunk_ids, indices - starts[chunk_ids], out)
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
                        spare = self._next.start(epoch + 1, reads.after + len(prefetcher.order))
                        ahead = spare is not None
                    if spare is not None:
                        self._next.warm(prefetcher.budget - prefetcher.held_bytes)
                if i == 0 and reads.later is not None:
                    reads.later.start()  # the first batch is out: plan the next epoch now
            for done in orders.finished(everything=True):
                prefetcher.done_with(done)
            finished = True
            put(ready, DONE, stop)
        except BaseException as exc:  # surfaces in the consumer's thread, after the batches
            orders.finished(everything=True)  # queued before it (their chunks are still held)
            put(ready, exc, stop)
        finally:
            orders.cancel()  # abandoned: a copy in progress reads chunks about to be let go
            if reads is not None:
                reads.close()
            if not finished:  # abandoned or failed: the next epoch is not a given any more
                self._next.drop()

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
