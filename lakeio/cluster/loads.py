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

import asyncio
import contextlib
import inspect
import threading
import time
import uuid
from concurrent.futures import CancelledError, Future, InvalidStateError, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from math import inf
from typing import Any

import dask.config
import numpy as np
from dask.base import tokenize
from distributed import Client

from lakeio.cluster.affinity import owner
from lakeio.cluster.connect import require_workers
from lakeio.cluster.worker import LakeCachePlugin, load_chunks
from lakeio.errors import LakeError

DECODE_MODES = ("trainer", "worker")
MAX_RETRIES = 4  # resubmissions of one task after others cancelled it (a restart, say)

dask.config.update_defaults({"lakeio": {"cluster": {"check-interval": "1s"}}})


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


@dataclass
class _Group:
    """One task's chunks, the futures waiting for them, and the task serving them now (a task
    whose owner left is replaced by one on the chunk's new owner)."""

    chunks: list[int]
    results: dict[int, Future]
    task: Any = None
    owner: str | None = None
    moves: int = 0  # to new owners, after the owner left
    retries: int = 0  # after someone else cancelled the task
    received: bool = False


class ClusterLoads:
    """Chunk loads for one epoch of one trainer, as tasks on the cluster (see the module doc).

    Ownership follows the workers that exist now: a watcher asks the scheduler for its workers
    every ``lakeio.cluster.check-interval`` while tasks are out, and moves the tasks of an owner
    that left to the chunks' new owners. (Dask alone parks a task pinned to a vanished worker as
    ``no-worker`` when no worker was left at that moment, and keeps it there when new ones
    join.) A cluster left with no workers for ``lakeio.connect-timeout`` fails the loads with
    one error instead of a wait for ever.
    """

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
        reader: str = "",
        epoch: int = 0,
    ) -> None:
        self.client = client
        self.dataset = dataset
        self.token = token
        self.fields = fields
        self.options = options
        self._refs = dataset._chunk_table[0]
        self._order = order
        self._next_use = next_use
        self._reader, self._epoch = reader, epoch
        self._position = {c: i for i, c in enumerate(order)}
        workers = _current_workers(client)
        self._workers = len(workers)
        self._known = frozenset(workers)
        self._owners: dict[int, str] = {}  # chunk → owner among self._known (filled on demand)
        chunk_bytes = max(1, dataset.chunk_nbytes(fields))
        # Tens of MB per task, but no task may hold more than a share of the prefetch budget
        # (with many workers the share, not task_bytes, sets the size).
        share = budget // (2 * self._workers * chunk_bytes)
        self._group = max(1, min(64, options.task_bytes // chunk_bytes, share))
        self._pending: dict[int, Future] = {}  # chunk → its result, for chunks already submitted
        self._out: list[_Group] = []  # groups not yet received
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, threads), thread_name_prefix="lakeio-recv"
        )
        self._direct = True if client.direct_to_workers is None else client.direct_to_workers
        self._nonce = uuid.uuid4().hex[:10]
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="lakeio-owners", daemon=True)
        self._watcher.start()
        self.tasks = 0
        self.moved = 0  # tasks moved to a new owner after theirs left
        self.retried = 0  # tasks submitted again after someone else cancelled them

    def _chunk_name(self, chunk: int) -> str:
        """What ownership is hashed on: the chunk itself, whatever fields a loader reads."""
        ref = self._refs[chunk]
        return (
            f"{self.dataset.loc.url}#{self.dataset.manifest.segments[ref.segment].id}/{ref.chunk}"
        )

    def _owner(self, chunk: int) -> str | None:
        if not self.options.affinity:
            return None
        home = self._owners.get(chunk)
        if home is None:
            home = self._owners[chunk] = owner(self._chunk_name(chunk), sorted(self._known))
        return home

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
        home = self._owner(chunk)
        start = self._position[chunk] + 1
        horizon = start + 4 * self._group * self._workers  # look no further than a few tasks ahead
        for c in self._order[start:horizon]:
            if c not in self._pending and c != chunk and self._owner(c) == home:
                group.append(c)
                if len(group) == self._group:
                    break
        return group

    def _submit_group(self, chunk: int) -> None:
        chunks = self._group_for(chunk)
        group = _Group(chunks, {c: Future() for c in chunks})
        self._submit(group)
        self.tasks += 1
        self._out.append(group)
        self._pending.update(group.results)
        self._pool.submit(self._receive, group)

    def _submit(self, group: _Group) -> None:
        """Submit ``group``'s task to its first chunk's owner now (holding the lock); the group
        changes only once the submission went through."""
        first = group.chunks[0]
        refs = [(self._refs[c].segment, self._refs[c].chunk) for c in group.chunks]
        home = self._owner(first)
        placement = {} if home is None else {"workers": [home], "allow_other_workers": True}
        plan = None
        if self._next_use is not None:
            # this reader's clock, in epochs: where the loads are now, and each chunk's next use
            now = self._epoch + self._position[first] / max(1, len(self._order))
            plan = (self._reader, now, [self._next_use.get(c, inf) for c in group.chunks])
        attempt = group.moves + group.retries
        retry = f"-{attempt}" if attempt else ""
        group.task = self.client.submit(
            load_chunks, self.token, refs, self.fields, self.options.decode, plan,
            key=f"lakeio-load-{self._nonce}-{first}{retry}", pure=False, **placement,
        )  # fmt: skip
        group.owner = home

    def _receive(self, group: _Group) -> None:
        """Fetch a group's result once (straight from the worker), then hand out its chunks;
        whatever goes wrong, every chunk waiting on the group learns of it."""
        try:
            payload = self._result(group)
        except BaseException as exc:  # incl. cancellation and a closed client
            self._finish(group)
            for future in group.results.values():
                _settle(future, error=exc)
            return
        self._finish(group)
        for index, chunk in enumerate(group.chunks):
            if group.results[chunk].done():  # cancelled: the epoch was abandoned
                continue
            try:
                _settle(group.results[chunk], value=self._unpack(payload, index, chunk))
            except BaseException as exc:  # a chunk damaged on the wire fails that chunk only
                _settle(group.results[chunk], error=exc)

    def _result(self, group: _Group) -> dict:
        """The group's payload. A task replaced meanwhile (its owner left) is waited for in its
        replacement; one cancelled by someone else (a restart) is submitted again."""
        while True:
            task = group.task
            try:
                return self._gather(task)
            except BaseException as exc:
                with self._lock:
                    if self._closed:
                        raise
                    if group.task is not task:
                        continue
                    if not self._cancelled_by_others(exc, group):
                        raise
                    group.retries += 1
                    self._submit(group)
                    self.retried += 1
            finally:
                task.release()  # the worker may drop the result; its own cache keeps the chunks

    def _gather(self, task) -> dict:
        """``task``'s result, fetched once (straight from its worker). Waited for here, a second
        at a time, rather than in ``client.gather``: a gather in flight when the client closes
        never returns, and its thread would hold up the interpreter's exit."""
        loop = self.client.loop.asyncio_loop
        if self.client.status != "running" or loop.is_closed():
            raise CancelledError(f"the Dask client was closed ({self.client.status})")
        coroutine = self.client._gather([task], direct=self._direct)
        try:
            pending = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # the loop closed meanwhile
            coroutine.close()
            raise CancelledError(f"the Dask client was closed ({self.client.status})") from None
        while True:
            try:
                return pending.result(timeout=1.0)[0]
            except FuturesTimeout:
                if self.client.status != "running":
                    pending.cancel()
                    if inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED:
                        coroutine.close()  # never started: the loop stopped first
                    closed = f"the Dask client was closed ({self.client.status})"
                    raise CancelledError(closed) from None

    def _cancelled_by_others(self, error: BaseException, group: _Group) -> bool:
        """``group``'s task was cancelled, not by these loads nor by closing the client, and
        not too often to go on."""
        return (
            isinstance(error, CancelledError)
            and self.client.status == "running"
            and not group.received
            and group.retries < MAX_RETRIES
        )

    def _finish(self, group: _Group) -> None:
        """``group`` is received (or failed): no longer out, and a replacement is not needed."""
        with self._lock:
            group.received = True
            if group in self._out:
                self._out.remove(group)
            late = group.task
        if late is not None and late.status == "pending" and self.client.status == "running":
            self.client.cancel([late])

    def _watch(self) -> None:
        """Move the tasks of owners that left; fail the loads if, for ``lakeio.connect-timeout``,
        the cluster has no workers or its scheduler does not answer."""
        from dask.utils import parse_timedelta

        interval = parse_timedelta(dask.config.get("lakeio.cluster.check-interval", "1s"))
        limit = parse_timedelta(dask.config.get("lakeio.connect-timeout", "15s"))
        trouble_since = None
        while not self._stop.wait(interval):
            with self._lock:
                if not self._out:
                    trouble_since = None
                    continue
            if self.client.status != "running":  # a gather in flight may never return
                self._fail_all(
                    LakeError(f"the Dask client of these loads was closed ({self.client.status})")
                )
                return
            try:
                workers = frozenset(self.client.ncores())
                trouble = "has no workers"
            except Exception as exc:  # counts like an empty cluster: nobody serves the loads
                workers, trouble = frozenset(), f"does not answer ({type(exc).__name__})"
            if workers:
                trouble_since = None
                with contextlib.suppress(Exception):  # a failed move is tried again next time
                    self._follow(workers)
                continue
            trouble_since = time.monotonic() if trouble_since is None else trouble_since
            if time.monotonic() - trouble_since > limit:
                self._fail_all(
                    LakeError(
                        f"the Dask cluster at {self.client.scheduler.address} {trouble}: every "
                        f"worker is gone and none came back within {limit:g} s "
                        "(lakeio.connect-timeout); start workers, or load in process "
                        "(cluster=None)"
                    )
                )
                return

    def _follow(self, workers: frozenset[str]) -> None:
        """Owners are now chosen among ``workers``; tasks whose owner left go to new owners."""
        replaced = []
        with self._lock:
            if self._closed or workers == self._known:
                return
            self._known = workers
            self._owners.clear()
            for group in self._out if self.options.affinity else ():
                if group.received or group.owner in workers:
                    continue
                old = group.task
                group.moves += 1
                try:
                    self._submit(group)
                except Exception:  # e.g. the client is closing: try again next time
                    group.moves -= 1
                    self._known = frozenset()
                    break
                replaced.append(old)
                self.moved += 1
        if replaced:
            self.client.cancel(replaced)

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            groups, self._out = list(self._out), []
            for group in groups:
                group.received = True
        for group in groups:
            for future in group.results.values():
                _settle(future, error=error)
            with contextlib.suppress(Exception):
                self.client.cancel([group.task])

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
        self._stop.set()
        with self._lock:
            self._closed = True
            tasks = [group.task for group in self._out]
            self._out = []
            for pending in self._pending.values():
                pending.cancel()
            self._pending.clear()
        if tasks and self.client.status == "running":
            with contextlib.suppress(Exception):  # closing meanwhile: nothing left to cancel
                self.client.cancel(tasks)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._watcher.join(timeout=5)


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
