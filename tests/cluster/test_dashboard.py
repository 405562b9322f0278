"""The lakeio dashboard page, its JSON and Prometheus metrics, read over HTTP from a real cluster.

One LocalCluster (two worker processes, each with its own dashboard) streams two epochs of a
small lake through ``ds.loader(cluster=client)``; every test then checks what the scheduler's
``/lakeio``, ``/lakeio.json`` and ``/metrics`` (and a worker's ``/metrics``) say against what the
loader itself counted. Work stealing is off so that each chunk is served by its owner in both
epochs: with a memory tier that holds the whole lake, each (chunk, field) is then requested
twice and missed once, and every worker's memory hit rate is exactly 1/2.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from html.parser import HTMLParser
from types import SimpleNamespace

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster
from prometheus_client.parser import text_string_to_metric_families

import lakeio

CHUNKS, CHUNK_SAMPLES, BATCH = 32, 8, 32
FIELDS = ("images", "labels")
SHARED = 64 << 20
MEMORY = 64 << 20  # holds the whole lake many times over on each worker
POLL_S = 15.0  # worker figures reach the scheduler with heartbeats (about once a second)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200, url
        return response.read().decode()


def _poll(fetch, ready, what: str):
    """``fetch()`` until ``ready(value)`` is true, or fail after POLL_S with the last value."""
    deadline = time.monotonic() + POLL_S
    while True:
        value = fetch()
        if ready(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {POLL_S} s; last: {value!r}")
        time.sleep(0.1)


def _lake(path, client) -> None:
    rng = np.random.default_rng(0)
    n = CHUNKS * CHUNK_SAMPLES
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, n)
    lakeio.ingest(
        images, path, labels=labels, cluster=client, chunk_samples=CHUNK_SAMPLES,
        codec="lz4", progress=False, echo=None,
    )  # fmt: skip


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """Two epochs streamed through a 2-worker LocalCluster, left running for the HTTP checks."""
    path = tmp_path_factory.mktemp("dashboard") / "lake"
    with (
        dask.config.set({"distributed.scheduler.work-stealing": False}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0", silence_logs=50
        ) as cluster,
        Client(cluster) as client,
    ):
        _lake(path, client)
        # the workers, two processes of one node, share one decoded copy in a shared tier
        shm = tmp_path_factory.mktemp("shm")
        cache = lakeio.Cache(memory=MEMORY, shared=SHARED, shared_folder=str(shm))
        ds = lakeio.open_dataset(path, cache=cache)
        # exact counts: no loading of a third epoch ahead
        with ds.loader(BATCH, seed=0, cluster=client, prefetch_next_epoch=False) as loader:
            for _ in loader:
                pass
            loader.set_epoch(1)
            for _ in loader:
                pass
            stats = loader.stats()
            info = client.scheduler_info(n_workers=-1)["workers"]
            yield SimpleNamespace(
                client=client,
                loader=loader,
                base=client.dashboard_link.rsplit("/", 1)[0],
                chunks=len(ds.chunk_members()),
                shm=shm,
                stats=stats,
                batches_per_epoch=len(loader),
                worker_metrics={
                    address: f"http://127.0.0.1:{w['services']['dashboard']}/metrics"
                    for address, w in info.items()
                },
            )


def _settled(streamed) -> dict:
    """/lakeio.json once it shows both epochs: all chunks served, trainer done, rates back to 0."""

    def ready(figures) -> bool:
        workers, trainers = figures["workers"], figures["trainers"]
        return (
            set(workers) == set(streamed.worker_metrics)
            and sum(w["chunks"] for w in workers.values()) == 2 * streamed.chunks
            and all(w["chunks_per_s"] == 0 for w in workers.values())
            and len(trainers) == 1
            and next(iter(trainers.values()))["batches"] == streamed.stats["batches"]
        )

    return _poll(lambda: json.loads(_get(streamed.base + "/lakeio.json")), ready, "two epochs")


def test_json_figures_add_up_to_what_the_loader_counted(streamed):
    figures = _settled(streamed)
    workers, loader_workers = figures["workers"], streamed.stats["workers"]
    assert set(workers) == set(loader_workers)
    assert streamed.chunks == CHUNKS
    served = sum(w["chunks"] for w in workers.values())
    assert served == sum(w["chunks"] for w in loader_workers.values()) == 2 * CHUNKS
    for address, w in workers.items():
        for name in ("chunks", "bytes", "tasks", "memory_requests", "memory_hits", "origin_reads"):
            assert w[name] == loader_workers[address][name], (address, name)
        assert w["chunks"] > 0  # affinity spreads the chunks over both workers
        # Each chunk twice (once per epoch) on its owner, one memory lookup per field each time:
        # the first misses and reads the origin (there is no disk tier), the second hits.
        assert w["memory_requests"] == len(FIELDS) * w["chunks"]
        assert w["origin_reads"] == w["memory_requests"] - w["memory_hits"]
        assert w["memory_hits"] == w["origin_reads"] == w["chunks"]
        assert w["memory_hit_rate"] == w["memory_hits"] / w["memory_requests"] == 0.5
        assert w["disk_requests"] == 0 and w["disk_hit_rate"] is None
        assert w["memory_capacity"] == MEMORY
        # the memory tier holds mappings of the node's shared copy: charged nothing there
        assert w["memory_bytes"] == 0 and w["memory_items"] == w["memory_hits"]
        assert w["bytes"] > 0 and w["chunks_per_s"] == 0  # streaming is over
        assert w["origin_latency_s"] == loader_workers[address]["origin_latency_s"] > 0
        # each memory miss asked the node's shared tier, which had not got it: the chunk's owner
        # is the only worker that reads it
        assert w["shared_requests"] == w["origin_reads"] and w["shared_hits"] == 0
        assert w["shared_hit_rate"] == 0.0 and w["shared_capacity"] == SHARED
        assert w["origin_in_flight_peak"] == loader_workers[address]["origin_in_flight_peak"]
        assert w["origin_in_flight_peak"] >= 1
    assert sum(w["origin_reads"] for w in workers.values()) == len(FIELDS) * CHUNKS
    # the node's copy, as every worker sees it: what its chunk files hold
    files = [os.path.join(d, f) for d, _, names in os.walk(streamed.shm) for f in names]
    on_node = sum(os.path.getsize(f) for f in files if os.sep + "chunks" + os.sep in f)
    assert on_node > 0 and {w["shared_bytes"] for w in workers.values()} == {on_node}

    (trainer,) = figures["trainers"].values()
    assert trainer["epoch"] == 1
    assert trainer["batches"] == streamed.stats["batches"] == 2 * streamed.batches_per_epoch
    assert trainer["images_per_s"] > 0
    # The end-of-epoch report is the loader's own figures at that moment.
    assert trainer["images_per_s"] == pytest.approx(streamed.stats["samples_per_s"])
    assert trainer["stall_fraction"] == pytest.approx(streamed.stats["stall_fraction"])
    assert 0 <= trainer["stall_fraction"] <= 1
    assert trainer["age_s"] >= 0


class _Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts (header cells included)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _records(table: list[list[str]]) -> dict[str, dict[str, str]]:
    """A table's rows by their first cell, as header → cell text."""
    header, *rows = table
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def test_html_page_shows_every_worker_and_the_trainer(streamed):
    figures = _settled(streamed)
    page = _get(streamed.base + "/lakeio")
    for address in streamed.worker_metrics:
        assert address in page
    parser = _Tables()
    parser.feed(page)
    trainers_table, workers_table = parser.tables
    rows = _records(workers_table)
    assert set(rows) == set(figures["workers"])
    for address, w in figures["workers"].items():
        row = rows[address]
        assert row["memory hit rate"] == "50.0%"
        assert row["disk hit rate"] == "—"
        assert row["origin reads"] == f"{w['origin_reads']:,}"
        assert row["read latency ms (recent)"] == f"{1000 * w['origin_latency_s']:,.0f}"
        assert row["reads in flight (peak)"] == f"{w['origin_in_flight_peak']:,}"
        assert row["chunks served"] == f"{w['chunks']:,}"
        assert row["chunks/s"] == "0.0"
        assert row["MB served"] == f"{w['bytes'] / 1e6:,.1f}"
        assert row["memory tier MB (used / budget)"].endswith(f"/ {MEMORY / 1e6:,.1f}")
        assert row["shared hit rate"] == "0.0%"
        assert row["shared tier MB (the node's: used / budget)"] == (
            f"{w['shared_bytes'] / 1e6:,.1f} / {SHARED / 1e6:,.1f}"
        )
    (trainer_id,) = figures["trainers"]
    trainer = _records(trainers_table)[trainer_id]
    assert trainer["epoch (from 0)"] == "1"
    assert trainer["batches"] == f"{streamed.stats['batches']:,}"
    assert float(trainer["images/s"].replace(",", "")) > 0


def _samples(text: str, family: str) -> dict[tuple, float]:
    """The samples of one metric family, keyed by their sorted (label, value) pairs."""
    out = {}
    for metric in text_string_to_metric_families(text):
        if metric.name == family:
            for sample in metric.samples:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_scheduler_metrics_match_the_json(streamed):
    figures = _settled(streamed)
    text = _get(streamed.base + "/metrics")
    hit = _samples(text, "lakeio_worker_cache_hit_ratio")
    mine = {k: v for k, v in hit.items() if dict(k)["worker"] in figures["workers"]}
    assert mine == {
        ((("tier", tier), ("worker", address))): w[f"{tier}_hit_rate"]
        for address, w in figures["workers"].items()
        for tier in ("memory", "shared")
    }  # no disk tier: no disk line
    assert sorted(set(mine.values())) == [0.0, 0.5]  # (the shared tier's: nothing read twice)
    rate = _samples(text, "lakeio_worker_served_chunks_per_second")
    for address in figures["workers"]:
        assert rate[(("worker", address),)] == 0.0
    (trainer_id, trainer), *_ = figures["trainers"].items()
    images = _samples(text, "lakeio_trainer_images_per_second")
    stall = _samples(text, "lakeio_trainer_stall_ratio")
    assert images[(("trainer", trainer_id),)] == pytest.approx(trainer["images_per_s"])
    assert stall[(("trainer", trainer_id),)] == pytest.approx(trainer["stall_fraction"])


def test_worker_metrics_count_what_that_worker_served(streamed):
    address, url = sorted(streamed.worker_metrics.items())[0]
    expected = streamed.stats["workers"][address]
    text = _get(url)
    me = ("worker", address)
    assert _samples(text, "lakeio_served_chunks") == {(me,): expected["chunks"]}
    assert _samples(text, "lakeio_served_bytes") == {(me,): expected["bytes"]}
    assert _samples(text, "lakeio_cache_requests") == {
        (("tier", "memory"), me): expected["memory_requests"],
        (("tier", "disk"), me): 0,
        (("tier", "shared"), me): expected["shared_requests"],
    }
    assert _samples(text, "lakeio_cache_hits") == {
        (("tier", "memory"), me): expected["memory_hits"],
        (("tier", "disk"), me): 0,
        (("tier", "shared"), me): 0,
    }


def test_a_closed_loader_leaves_the_page(streamed):
    """Runs last: closing the loader removes its trainer row (and its /metrics lines)."""
    (trainer_id,) = _settled(streamed)["trainers"]
    streamed.loader.close()
    _poll(
        lambda: json.loads(_get(streamed.base + "/lakeio.json"))["trainers"],
        lambda trainers: trainers == {},
        "the trainer row gone",
    )
    images = _samples(_get(streamed.base + "/metrics"), "lakeio_trainer_images_per_second")
    assert (("trainer", trainer_id),) not in images
