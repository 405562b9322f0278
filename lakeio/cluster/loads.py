"""The trainer side of cluster loading: chunk loads as Dask tasks, tens of MB each, on their owners.

The loader's prefetcher asks for chunks in the order the epoch needs them (`start`). The first
request for a chunk submits one ``lakeio-load-…`` task for it and for the next few chunks of
the order that the same worker owns, so each task carries tens of MB and the per-task overhead
stays small. A task is pinned to its chunk's owner (rendezvous hashing) but may run elsewhere
if that worker is gone: a dead worker costs a retry, never a sample, because batches are still
assembled here from the plan — each chunk's rows are taken exactly once, whichever worker
served them.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from math import inf

import numpy as np
from dask.base import tokenize
from distributed import Client

from lakeio.cluster.affinity import owner
from lakeio.cluster.connect import require_workers
from lakeio.cluster.worker import LakeCachePlugin, load_chunks

DECODE_MODES = ("trainer", "worker")


@dataclass(frozen=True)
class ClusterOptions:
    """How the cluster path loads: where decoding happens, task size, and how far ahead.

    ``decode="worker"`` (default) ships decoded samples, sparing the trainer's CPU — what the
    cluster is for; ``"trainer"`` ships stored (compressed) bytes and decodes here — fewer bytes
    on the wire (1.07-1.3x on natural photos), more work for the trainer. ``task_bytes`` is the
    decoded size one task aims for (64 MB moved 15-40% more into the trainer than 16 MB with
    2 workers on a 2-core machine, docs/benchmarks.md); ``affinity=False`` lets Dask place
    loads anywhere (for comparison: then each worker caches whatever it happened to load).
    """

    decode: str = "worker"
    task_bytes: int = 64 << 20
    affinity: bool = True

    def __post_init__(self) -> None:
        if self.decode not in DECODE_MODES:
            raise ValueError(
                f"decode must be one of {', '.join(DECODE_MODES)}, not {self.decode!r}"
            )
        if self.task_bytes < 1:
            raise ValueError(f"task_bytes must be positive, not {self.task_bytes}")


def lake_token(dataset) -> str:
    """Names one lake snapshot with one cache configuration, the same in every trainer."""
    m = dataset.manifest
    return tokenize(
        dataset.loc.url, dataset.loc.storage_options, m.version, m.created, dataset.source.cache
    )


def register_lake(client: Client, dataset) -> str:
    """Make sure every worker has a tiered cache for ``dataset`` (idempotent); its token."""
    token = lake_token(dataset)
    plugin = LakeCachePlugin(token, dataset.loc, dataset.manifest, dataset.source.cache)
    client.register_plugin(plugin, name=plugin.name)
    return token


class ClusterLoads:
    """Chunk loads for one epoch of one trainer, as tasks on the cluster (see the module doc)."""

    def __init__(
        self,
        client: Client,
        dataset,
        token: str,
        fields: tuple[str, ...],
        order: list[int],
        options: ClusterOptions,
        budget: int,
        threads: int = 4,
        next_use: dict[int, float] | None = None,
    ) -> None:
        self.client = client
        self.dataset = dataset
        self.token = token
        self.fields = fields
        self.options = options
        self._refs = dataset._chunk_table[0]
        self._order = order
        self._next_use = next_use
        self._position = {c: i for i, c in enumerate(order)}
        workers = _current_workers(client)
        self._workers = len(workers)
        self._owner = (
            {c: owner(self._chunk_name(c), workers) for c in order} if options.affinity else {}
        )
        chunk_bytes = max(1, dataset.chunk_nbytes(fields))
        # Tens of MB per task, but no task may hold more than a share of the prefetch budget
        # (with many workers the share, not task_bytes, sets the size).
        share = budget // (2 * self._workers * chunk_bytes)
        self._group = max(1, min(64, options.task_bytes // chunk_bytes, share))
        self._pending: dict[int, Future] = {}  # chunk → its result, for chunks already submitted
        self._tasks: list = []  # the Dask futures of groups not yet fully received
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, threads), thread_name_prefix="lakeio-recv"
        )
        self._direct = True if client.direct_to_workers is None else client.direct_to_workers
        self._nonce = uuid.uuid4().hex[:10]
        self._lock = threading.Lock()
        self._closed = False
        self.tasks = 0

    def _chunk_name(self, chunk: int) -> str:
        """What ownership is hashed on: the chunk itself, whatever fields a loader reads."""
        ref = self._refs[chunk]
        return (
            f"{self.dataset.loc.url}#{self.dataset.manifest.segments[ref.segment].id}/{ref.chunk}"
        )

    def start(self, chunk: int) -> Future:
        """The future of ``chunk``'s decoded fields; submits its group's task on first request."""
        with self._lock:
            if self._closed:
                raise RuntimeError("these cluster loads are closed")
            if chunk not in self._pending:
                self._submit_group(chunk)
            return self._pending.pop(chunk)

    def _group_for(self, chunk: int) -> list[int]:
        """``chunk`` plus the next not-yet-submitted chunks of the order with the same owner."""
        group = [chunk]
        if self._group == 1:
            return group
        home = self._owner.get(chunk)
        start = self._position[chunk] + 1
        horizon = start + 4 * self._group * self._workers  # look no further than a few tasks ahead
        for c in self._order[start:horizon]:
            if c not in self._pending and c != chunk and self._owner.get(c) == home:
                group.append(c)
                if len(group) == self._group:
                    break
        return group

    def _submit_group(self, chunk: int) -> None:
        group = self._group_for(chunk)
        refs = [(self._refs[c].segment, self._refs[c].chunk) for c in group]
        placement = {}
        if self.options.affinity:
            placement = {"workers": [self._owner[chunk]], "allow_other_workers": True}
        when = None if self._next_use is None else [self._next_use.get(c, inf) for c in group]
        task = self.client.submit(
            load_chunks, self.token, refs, self.fields, self.options.decode, when,
            key=f"lakeio-load-{self._nonce}-{chunk}", pure=False, **placement,
        )  # fmt: skip
        self.tasks += 1
        self._tasks.append(task)
        results = {c: Future() for c in group}
        self._pending.update(results)
        self._pool.submit(self._receive, task, group, results)

    def _receive(self, task, group: list[int], results: dict[int, Future]) -> None:
        """Fetch a group's result once (straight from the worker), then hand out its chunks."""
        try:
            payload = self.client.gather(task, direct=self._direct)
        except BaseException as exc:  # incl. cancellation: every waiting chunk learns of it
            for future in results.values():
                _settle(future, error=exc)
            return
        finally:
            task.release()  # the worker may drop the result; its own cache keeps the chunks
            with self._lock:
                if task in self._tasks:
                    self._tasks.remove(task)
        for index, chunk in enumerate(group):
            if results[chunk].done():  # cancelled: the epoch was abandoned
                continue
            try:
                _settle(results[chunk], value=self._unpack(payload, index, chunk))
            except BaseException as exc:  # a chunk damaged on the wire fails that chunk only
                _settle(results[chunk], error=exc)

    def _unpack(self, payload: dict, index: int, chunk: int) -> dict[str, np.ndarray]:
        if self.options.decode == "worker":
            return {f: payload[f][index] for f in self.fields}
        ref = self._refs[chunk]
        source = self.dataset.source
        return {
            f: source.decode_stored(f, payload[f][index], source.key(ref.segment, f, ref.chunk))
            for f in self.fields
        }

    def close(self) -> None:
        """Cancel what is still running on the cluster and stop receiving (an abandoned epoch)."""
        with self._lock:
            self._closed = True
            tasks, self._tasks = list(self._tasks), []
            for pending in self._pending.values():
                pending.cancel()
            self._pending.clear()
        if tasks:
            self.client.cancel(tasks)
        self._pool.shutdown(wait=True, cancel_futures=True)


def _settle(future: Future, value=None, error: BaseException | None = None) -> None:
    """Complete ``future`` unless it was cancelled meanwhile (then nobody is waiting for it)."""
    with contextlib.suppress(InvalidStateError):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _current_workers(client: Client) -> list[str]:
    """The cluster's workers now, waiting a little for a first one (adaptive clusters start empty)."""
    return require_workers(client, ", or load in process (cluster=None)")
