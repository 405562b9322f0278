"""The worker side of cluster loading: a tiered cache per lake on each worker, and the load task.

A `LakeCachePlugin` registered on the cluster gives every worker (present and future) a
`ChunkSource` for a lake — memory tier, disk tier, origin — built from the `Cache` the trainer
opened the lake with. The memory tier is the worker's one budget, shared by every lake and
version it serves (`lakeio.cluster.worker_memory`). `load_chunks` is the task the trainer
submits: it serves a group of chunks from that worker's tiers. The worker's figures reach the
scheduler with each heartbeat (for the lakeio dashboard page) and its own Prometheus
``/metrics`` endpoint.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin, get_worker

from lakeio.cache.config import Cache
from lakeio.cache.source import ChunkSource
from lakeio.cluster.worker_memory import memory_of, release_worker_memory, worker_memory
from lakeio.errors import ChunkError, ReadError
from lakeio.format.location import Location
from lakeio.format.manifest import Manifest

if TYPE_CHECKING:
    from distributed import Client, Worker

METRICS_KEY = "lakeio"
_sources: dict[tuple[str, str], ChunkSource] = {}  # (worker address, lake token) → its cache
_served: dict[tuple[str, str], dict[str, float]] = {}
_lock = threading.Lock()


class LakeCachePlugin(WorkerPlugin):
    """Gives each worker a tiered cache for one lake snapshot (idempotent: ranks share it)."""

    idempotent = True  # a second trainer registering the same lake must not wipe the caches

    def __init__(self, token: str, loc: Location, manifest: Manifest, cache: Cache) -> None:
        self.token, self.loc, self.manifest, self.cache = token, loc, manifest, cache

    @property
    def name(self) -> str:
        return f"lakeio-cache-{self.token}"

    def setup(self, worker) -> None:
        key = (worker.address, self.token)
        memory = worker_memory(worker)
        memory.want(self.cache.memory)
        with _lock:
            if key not in _sources:
                tier = memory.tier if self.cache.memory else None
                _sources[key] = ChunkSource(self.loc, self.manifest, self.cache, memory=tier)
                _served[key] = {"chunks": 0, "bytes": 0, "tasks": 0}
        worker.metrics[METRICS_KEY] = worker_metrics
        _register_prometheus_collector()

    def teardown(self, worker) -> None:
        with _lock:
            source = _sources.pop((worker.address, self.token), None)
            _served.pop((worker.address, self.token), None)
            last = not any(address == worker.address for address, _ in _sources)
        if source is not None and source.disk is not None:
            source.disk.close()
        if source is not None:
            source.close_shared()  # (the node's copy goes with the last process using it)
        if last:  # no lake left on this worker: its memory budget goes too
            release_worker_memory(worker)


def _source(token: str) -> tuple[ChunkSource, dict[str, float]]:
    key = (get_worker().address, token)
    with _lock:
        source, served = _sources.get(key), _served.get(key)
    if source is None or served is None:
        raise RuntimeError(
            f"this worker has no lakeio cache for lake {token}: the LakeCachePlugin was not "
            "registered (use Dataset.loader(cluster=...), which registers it)"
        )
    return source, served


def load_chunks(
    token: str,
    refs: list[tuple[int, int]],
    fields: tuple[str, ...],
    decode: str,
    plan: tuple[str, float, list[float]] | None = None,
) -> dict[str, list]:
    """Chunks ``refs`` ((segment, chunk) pairs) of ``fields`` from this worker's tiers.

    ``decode="worker"`` returns decoded arrays, ``"trainer"`` the stored (compressed, checksummed)
    bytes for the trainer to verify and decode. One list entry per ref, per field.
    ``plan`` is (reader, now, next uses): on the reader's clock (epochs, e.g. 3.25), where it
    is now and when each chunk is needed again by any rank of its job. The worker's plan-aware
    memory tier evicts the chunk that every reader needs furthest ahead of its own present.
    """
    source, served = _source(token)
    if plan is not None:
        reader, now, next_use = plan
        refs_and_times = zip(refs, next_use, strict=True)
        source.schedule(refs_and_times, stored=decode != "worker", reader=reader, now=now)
    items = [(segment, field, chunk) for segment, chunk in refs for field in fields]
    try:
        # decode="trainer": uint8 arrays, which Dask ships without a copy on either side
        # (bytes objects are rebuilt by copying), and the trainer checksums in place
        values = source.get_many(items, stored=decode != "worker")
    except ChunkError as exc:  # which worker met it: its credentials or network may differ
        raise exc.on_worker(_worker_label()) from None
    except ReadError as exc:
        raise ReadError(f"worker {_worker_label()} could not read the lake: {exc}") from exc
    out: dict[str, list] = {f: [] for f in fields}
    nbytes = 0
    for (_, field, _), value in zip(items, values, strict=True):
        out[field].append(value)
        nbytes += int(getattr(value, "nbytes", 0))
    with _lock:
        served["chunks"] += len(refs)
        served["bytes"] += nbytes
        served["tasks"] += 1
    return out


def _worker_label() -> str:
    """The worker's name and address, as the dashboard lists it."""
    worker = get_worker()
    name = str(worker.name)
    return worker.address if name == worker.address else f"{name} ({worker.address})"


def forget_reader(reader: str, dask_worker: Worker | None = None) -> None:
    """For ``client.run``: a closed loader's plan no longer holds chunks in this worker's tier."""
    memory = memory_of((dask_worker or get_worker()).address)
    if memory is not None:
        memory.tier.forget(reader)


def tell_workers_to_forget(client: Client, reader: str, timeout: float = 5.0) -> None:
    """Best effort, bounded by ``timeout``: a worker that does not hear it forgets ``reader``
    after ``lakeio.worker.plan-ttl`` anyway."""
    import asyncio

    async def tell() -> None:
        await asyncio.wait_for(client._run(forget_reader, reader, on_error="ignore"), timeout)

    with contextlib.suppress(Exception):
        client.sync(tell)


_last_snapshot: dict[str, tuple[float, float, float]] = {}


def worker_metrics(worker) -> dict[str, Any]:
    """This worker's lakeio figures, summed over its lakes (sent to the scheduler each heartbeat)."""
    totals = lake_totals(worker.address)
    now = time.monotonic()
    then, chunks, nbytes = _last_snapshot.get(
        worker.address, (now, totals["chunks"], totals["bytes"])
    )
    elapsed = now - then
    totals["chunks_per_s"] = (totals["chunks"] - chunks) / elapsed if elapsed > 0 else 0.0
    totals["bytes_per_s"] = (totals["bytes"] - nbytes) / elapsed if elapsed > 0 else 0.0
    _last_snapshot[worker.address] = (now, totals["chunks"], totals["bytes"])
    return totals


def lake_totals(address: str) -> dict[str, Any]:
    """Requests and hits per tier, origin reads and bytes, chunks and bytes served, on one worker;
    the memory tier's size, capacity and what it shed under memory pressure (one per worker)."""
    with _lock:
        keys = [k for k in _sources if k[0] == address]
        pairs = [(_sources[k], dict(_served[k])) for k in keys]
    totals: dict[str, Any] = dict.fromkeys(
        ("memory_requests", "memory_hits", "memory_bytes", "memory_capacity", "memory_items",
         "memory_shed_bytes", "memory_sheds", "plan_readers", "disk_requests", "disk_hits",
         "origin_reads", "origin_bytes", "chunks", "bytes", "tasks", "access_requests",
         "hit_seconds", "miss_seconds", "origin_latency_s", "origin_in_flight_peak",
         "shared_requests", "shared_hits", "shared_bytes", "shared_capacity"), 0,
    )  # fmt: skip
    memory_budget = memory_of(address)
    if memory_budget is not None:
        totals.update(memory_budget.figures())
    for source, served in pairs:
        stats = source.stats(sizes=False)  # runs on the worker's event loop: no SQLite queries
        memory, disk = stats["memory"] or {}, stats["disk"] or {}
        totals["memory_requests"] += memory.get("requests", 0)
        totals["memory_hits"] += memory.get("hits", 0)
        totals["disk_requests"] += disk.get("requests", 0)
        totals["disk_hits"] += disk.get("hits", 0)
        if stats["shared"] is not None:  # the node's copy of this lake (its workers' together)
            totals["shared_requests"] += stats["shared"]["requests"]
            totals["shared_hits"] += stats["shared"]["hits"]
            totals["shared_bytes"] += stats["shared"]["bytes_held"]
            totals["shared_capacity"] += stats["shared"]["capacity"]
        totals["access_requests"] += stats["requests"]
        totals["hit_seconds"] += stats["hit_seconds"]
        totals["miss_seconds"] += stats["miss_seconds"]
        totals["origin_reads"] += stats["origin_reads"]
        totals["origin_bytes"] += stats["origin_bytes"]
        # how the store answers this worker: its slowest lake's recent latency, and the most
        # reads it had in flight at once (for one lake)
        totals["origin_latency_s"] = max(totals["origin_latency_s"], stats["origin_latency_s"])
        totals["origin_in_flight_peak"] = max(
            totals["origin_in_flight_peak"], stats["origin_in_flight_peak"]
        )
        for name in ("chunks", "bytes", "tasks"):
            totals[name] += int(served[name])
    totals["lakes"] = len(pairs)
    return totals


def worker_stats(dask_worker) -> dict[str, Any]:
    """For ``client.run`` (which passes ``dask_worker``): this worker's totals, for `Loader.stats`."""
    return lake_totals(dask_worker.address)


def gather_worker_stats(client, timeout: float | None = None) -> dict[str, dict[str, Any]]:
    """Every worker's totals, asked of all at once; a worker that does not answer within
    ``timeout`` seconds (``lakeio.stats-timeout``, default 5) is listed with an ``error``
    instead of holding up the rest (a stopped or swapping worker never answers)."""
    import asyncio

    import dask.config

    if timeout is None:
        timeout = float(dask.config.get("lakeio.stats-timeout", 5))

    async def one(address: str) -> tuple[str, dict[str, Any]]:
        try:
            ran = client._run(worker_stats, workers=[address])
            return address, (await asyncio.wait_for(ran, timeout))[address]
        except Exception as exc:  # no answer, gone meanwhile: say so for this worker only
            late = isinstance(exc, (TimeoutError, asyncio.TimeoutError))
            reason = f"no answer within {timeout:g} s" if late else exc
            return address, {"error": f"{reason}"}

    # asked here, not in `everyone`: on the event loop's thread the client counts as
    # asynchronous, and scheduler_info() then returns its cached totals with no workers at all
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])

    async def everyone() -> dict[str, dict[str, Any]]:
        return dict(await asyncio.gather(*(one(w) for w in workers)))

    return client.sync(everyone)


_collector_registered = False


def _register_prometheus_collector() -> None:
    """Expose the totals on the worker's own ``/metrics`` (when prometheus_client is installed)."""
    global _collector_registered
    with _lock:
        if _collector_registered:
            return
        _collector_registered = True
    try:
        from prometheus_client import REGISTRY
    except ImportError:  # pragma: no cover - a declared dependency; dask only serves it if present
        return
    REGISTRY.register(_WorkerCollector())


class _WorkerCollector:
    """The lakeio counters of every worker in this process (normally one), labelled by worker."""

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with _lock:
            addresses = sorted({address for address, _ in _sources})
        requests = CounterMetricFamily(
            "lakeio_cache_requests", "Chunk requests per cache tier", labels=["worker", "tier"]
        )
        hits = CounterMetricFamily(
            "lakeio_cache_hits", "Cache hits per tier", labels=["worker", "tier"]
        )
        families = {
            "origin_bytes": CounterMetricFamily(
                "lakeio_origin_bytes", "Bytes read from the lake's origin store", labels=["worker"]
            ),
            "chunks": CounterMetricFamily(
                "lakeio_served_chunks", "Chunks served to trainers", labels=["worker"]
            ),
            "bytes": CounterMetricFamily(
                "lakeio_served_bytes", "Bytes served to trainers", labels=["worker"]
            ),
            "memory_bytes": GaugeMetricFamily(
                "lakeio_memory_tier_bytes", "Bytes held in the memory tier", labels=["worker"]
            ),
            "memory_shed_bytes": CounterMetricFamily(
                "lakeio_memory_shed_bytes",
                "Bytes the memory tier gave up because the worker neared its memory limit",
                labels=["worker"],
            ),
        }
        for address in addresses:
            totals = lake_totals(address)
            for tier in ("memory", "disk", "shared"):
                requests.add_metric([address, tier], totals[f"{tier}_requests"])
                hits.add_metric([address, tier], totals[f"{tier}_hits"])
            for name, family in families.items():
                family.add_metric([address], totals[name])
        yield requests
        yield hits
        yield from families.values()
