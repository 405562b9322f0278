"""Loading through a Dask cluster: what it delivers into the trainer, against what it could.

Run: .venv/bin/python benchmarks/cluster.py [--scale 1.0] [--rounds 3] [--link GBIT] [--out FILE]

All in one run on the same lakes of natural photo crops (64x64 and 224x224, lz4), warm epochs
(every worker's memory tier holds its chunks), shuffled, uint8 tensors in the trainer:

- in process:        ds.loader(...) without a cluster (the default path), memory tier warm
- cluster, N workers: ds.loader(..., cluster=client) on a LocalCluster of N single-threaded
                      worker processes, decode="trainer" (stored bytes shipped) and "worker"
- ceiling:           a plain client.gather of as many same-size blocks from the same workers:
                      each block is the lake's own data shaped like a load result (stored
                      bytes or decoded chunks), placed on every worker beforehand and echoed by
                      a trivial task, fetched straight from the workers, each wave while the
                      next runs, with 2, 4, 8 or 16 tasks in flight: the ceiling is the best
                      setting (what Dask's transport delivers with nothing else to do)

Loader and ceiling are timed over the same bytes (8 epochs back to back, 1-5 s: one epoch here
is a fraction of a second, at the mercy of one hiccup), for ``--rounds`` rounds, which of the
two goes first alternating; the tables give medians (the ceiling: the best setting's median),
each round's ratio, and the CPU seconds spent per GB delivered in the trainer's process and in
the workers. The ratio depends on the task size (the ceiling's blocks are the loader's tasks),
so it compares loader and transport, not task sizes: compare those by MB/s.

``--link GBIT`` measures loader and ceiling over a loopback shaped to GBIT Gbit/s (as between
two machines, where the network rather than the CPU is the limit). One token bucket shapes all
loopback traffic, the scheduler's messages included.

Then the affinity experiment: a lake 1.5x one worker's memory budget on 2 workers, the second
epoch's hit rate with affinity (each chunk always loaded by its owner) and without (Dask places
loads anywhere). Ratios are what to read; absolute numbers on shared machines are noise.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

import numpy as np
from distributed import Client, LocalCluster

import lakeio
from lakeio.cluster.connect import warm_worker
from lakeio.testing.images import photo_crops

CASES = [((64, 64), 20000, 256), ((224, 224), 4000, 64)]


def make_lake(work: str, size: tuple[int, int], count: int, client: Client, name: str = "") -> str:
    pairs = list(photo_crops(count, size, seed=0))
    images = np.stack([p for p, _ in pairs])
    labels = np.array([label for _, label in pairs])
    path = os.path.join(work, name or f"lake-{size[0]}")
    lakeio.ingest(images, path, labels=labels, cluster=client, progress=False, echo=None)
    return path


EPOCHS_TIMED = 8  # per round: ~1-5 s of loading on these lakes


def epochs_rate(loader, first: int, epochs: int = EPOCHS_TIMED) -> tuple[int, float]:
    """Samples and seconds of ``epochs`` warm epochs back to back, from epoch ``first``.

    Each epoch's first chunks load while the one before ends (the loader's default), except
    after the last: loading an epoch nobody times would move bytes the rate does not count."""
    ahead = loader.stream.prefetch_next_epoch
    samples = 0
    start = time.perf_counter()
    try:
        for epoch in range(first, first + epochs):
            if epoch == first + epochs - 1:
                loader.stream = dataclasses.replace(loader.stream, prefetch_next_epoch=False)
            loader.set_epoch(epoch)
            samples += sum(len(labels) for _, labels in loader)
    finally:
        loader.stream = dataclasses.replace(loader.stream, prefetch_next_epoch=ahead)
    return samples, time.perf_counter() - start


def cpu_seconds(client: Client) -> tuple[float, float]:
    """CPU seconds used so far by this process and by the client's workers."""
    return sum(os.times()[:2]), sum(client.run(lambda: sum(os.times()[:2])).values())


def cpu_per_gb(before: tuple, after: tuple, nbytes: float) -> tuple[float, ...]:
    """CPU seconds per GB between two `cpu_seconds` readings, here and in the workers."""
    return tuple((b - a) / nbytes * 1e9 for a, b in zip(before, after, strict=True))


def _echo(payload):
    return payload


def real_payload(ds, decode: str, nbytes: int) -> dict[str, list]:
    """About ``nbytes`` of the lake's own data, shaped as a load task's result: a list of
    decoded (decode="worker") or stored ("trainer") chunks per field. Content matters: on this
    machine Dask moved random bytes at a quarter of the rate of natural-image bytes."""
    out: dict[str, list] = {"images": [], "labels": []}
    size = 0
    for ref in ds._chunk_table[0]:
        for field in out:
            if decode == "trainer":
                value = ds.source.get_raw(ref.segment, field, ref.chunk)
            else:
                value = np.array(ds.source.get(ref.segment, field, ref.chunk))
            out[field].append(value)
            size += value.nbytes
        if size >= nbytes:
            break
    return out


CEILING_IN_FLIGHT = (2, 4, 8, 16)  # tasks in flight; the ceiling is the best of these


def gather_ceiling(client: Client, on_workers, tasks: int, in_flight: int) -> None:
    """``tasks`` plain tasks each returning the payload ``on_workers`` (placed on every worker
    beforehand), in waves of ``in_flight``, each wave fetched while the next one runs."""
    submitted, wave = 0, []
    while submitted < tasks or wave:
        ahead = [
            client.submit(_echo, on_workers, pure=False)
            for _ in range(min(in_flight, tasks - submitted))
        ]
        submitted += len(ahead)
        if wave:
            client.gather(wave, direct=True)
        wave = ahead


def ceiling_round(client: Client, on_workers, tasks: int, nbytes: int) -> dict[int, tuple]:
    """One timing of `gather_ceiling` at each of `CEILING_IN_FLIGHT` (too few in flight wait on
    latency, too many crowd memory): tasks in flight → (bytes/s, CPU seconds per GB here and
    in the workers)."""
    out = {}
    for in_flight in CEILING_IN_FLIGHT:
        cpu0 = cpu_seconds(client)
        start = time.perf_counter()
        gather_ceiling(client, on_workers, tasks, in_flight)
        rate = nbytes / (time.perf_counter() - start)
        cpu1 = cpu_seconds(client)
        out[in_flight] = (rate, cpu_per_gb(cpu0, cpu1, nbytes))
    return out


def loader_round(ds, batch: int, client: Client, decode: str, first: int, nbytes: float) -> dict:
    """One timing of the cluster loader (a fresh one, closed afterwards so that nothing of it
    runs during the ceiling's timing): images/s, bytes/s, CPU seconds per GB."""
    with ds.loader(batch, seed=0, cluster=client, decode=decode) as loader:
        cpu0 = cpu_seconds(client)
        samples, seconds = epochs_rate(loader, first)
        cpu1 = cpu_seconds(client)
    return {
        "rate": samples / seconds,
        "bytes_per_s": nbytes / seconds,
        "cpu": cpu_per_gb(cpu0, cpu1, nbytes),
    }


def cluster_rates(path: str, batch: int, workers: int, rounds: int) -> dict[str, dict]:
    """Loader and ceiling over the same bytes, ``rounds`` rounds (which goes first alternates).
    The ceiling is the best tasks-in-flight setting by its median over the rounds; ratios are
    each round's loader, and the loader's median, against that median."""
    out = {}
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.run(warm_worker)
        ds = lakeio.open_dataset(path, cache=lakeio.Cache(memory="8GB"))
        for decode in ("trainer", "worker"):
            shipped = _shipped_bytes_per_epoch(ds, decode) * EPOCHS_TIMED
            with ds.loader(batch, seed=0, cluster=client, decode=decode) as loader:
                epochs_rate(loader, 0, 1)  # fills every worker's memory tier
                tasks = loader.stats()["cluster_tasks"] * EPOCHS_TIMED
            payload = real_payload(ds, decode, int(shipped / tasks))
            ceiling_bytes = tasks * sum(_nbytes(v) for v in payload.values())
            [on_workers] = client.scatter([payload], broadcast=True, hash=False)
            loads, ceilings = [], []
            for r in range(rounds):
                first = 1 + r * EPOCHS_TIMED
                if r % 2:
                    loads.append(loader_round(ds, batch, client, decode, first, shipped))
                ceilings.append(ceiling_round(client, on_workers, tasks, ceiling_bytes))
                if not r % 2:
                    loads.append(loader_round(ds, batch, client, decode, first, shipped))
            del on_workers
            medians = {
                k: (_median([c[k][0] for c in ceilings]), _median([c[k][1] for c in ceilings]))
                for k in CEILING_IN_FLIGHT
            }
            in_flight = max(medians, key=lambda k: medians[k][0])
            ceiling, ceiling_cpu = medians[in_flight]
            loader_bps = _median([run["bytes_per_s"] for run in loads])
            out[decode] = {
                "rate": _median([run["rate"] for run in loads]),
                "bytes_per_s": loader_bps,
                "ceiling_bytes_per_s": ceiling,
                "ratio": loader_bps / ceiling,
                "ratios": [run["bytes_per_s"] / ceiling for run in loads],
                "in_flight": in_flight,
                "loader_cpu": _median([run["cpu"] for run in loads]),
                "ceiling_cpu": ceiling_cpu,
                "task_mb": shipped / tasks / 1e6,
            }
    return out


def _median(values: list):
    if isinstance(values[0], tuple):
        return tuple(statistics.median(v) for v in zip(*values, strict=True))
    return statistics.median(values)


def _nbytes(arrays: list) -> int:
    return sum(a.nbytes for a in arrays)


def _shipped_bytes_per_epoch(ds, decode: str) -> float:
    m = ds.manifest
    if decode == "worker":
        return len(ds.chunk_members()) * ds.chunk_nbytes(("images", "labels"))
    return sum(s.stored_bytes for s in m.segments)  # labels and paths included: close enough


def in_process_rate(path: str, batch: int, rounds: int) -> float:
    ds = lakeio.open_dataset(path, cache=lakeio.Cache(memory="8GB"))
    with ds.loader(batch, seed=0) as loader:
        epochs_rate(loader, 0, 1)
        rates = []
        for r in range(rounds):
            samples, seconds = epochs_rate(loader, 1 + r * EPOCHS_TIMED)
            rates.append(samples / seconds)
    return statistics.median(rates)


AFFINITY_RUNS = [
    # (label, lake size / one worker's memory budget, affinity, eviction)
    ("affinity", 1.5, True, "plan"),
    ("no affinity", 1.5, False, "plan"),
    ("affinity, lake 3x a worker's budget, LRU", 3.0, True, "lru"),
    ("affinity, lake 3x a worker's budget, plan-aware", 3.0, True, "plan"),
]


def affinity_case(work: str, client: Client) -> dict[str, dict]:
    """Second-epoch hit rates on 2 workers: a lake 1.5x one worker's memory budget with and
    without affinity; and one 3x (more than the cluster holds) under LRU and plan-aware eviction."""
    path = make_lake(work, (64, 64), 6000, client, name="lake-affinity")
    probe = lakeio.open_dataset(path)
    total = len(probe.chunk_members()) * probe.chunk_nbytes(("images", "labels"))
    out = {}
    for label, factor, affinity, eviction in AFFINITY_RUNS:
        budget = int(total / factor)
        client.restart()  # empty every worker's memory tier
        ds = lakeio.open_dataset(path, cache=lakeio.Cache(memory=budget, eviction=eviction))
        loader = ds.loader(
            256, seed=0, cluster=client, decode="worker", affinity=affinity,
            prefetch_next_epoch=False,  # epoch 2's requests counted within epoch 2
        )  # fmt: skip
        with loader:
            loader.set_epoch(0)
            for _ in loader:
                pass
            before = loader.stats()["workers"]
            loader.set_epoch(1)
            start = time.perf_counter()
            for _ in loader:
                pass
            elapsed = time.perf_counter() - start
            after = loader.stats()["workers"]
        delta = {
            k: sum(after[w][k] - before[w][k] for w in after)
            for k in (
                "memory_requests",
                "memory_hits",
                "origin_reads",
                "hit_seconds",
                "miss_seconds",
            )
        }
        misses = delta["memory_requests"] - delta["memory_hits"]
        hit_rate = delta["memory_hits"] / max(1, delta["memory_requests"])
        hit_time = delta["hit_seconds"] / max(1, delta["memory_hits"])
        miss_penalty = delta["miss_seconds"] / misses if misses else 0.0
        out[label] = {
            **delta,
            "hit_rate": hit_rate,
            "hit_time_ms": 1e3 * hit_time,
            "miss_penalty_ms": 1e3 * miss_penalty,
            "aat_ms": 1e3 * (hit_time + (1 - hit_rate) * miss_penalty),
            "rate": len(ds) / elapsed,
            "budget_mb": budget / 1e6,
            "lake_mb": total / 1e6,
        }
    return out


@contextlib.contextmanager
def link_limit(gbit: float | None):
    """Emulate a network link of ``gbit`` Gbit/s between the trainer and the workers: shape
    the loopback interface (tc token bucket; needs root) and restore it on the way out (also on
    SIGTERM and SIGHUP). On one machine the loopback moves several GB/s and costs CPU on both
    ends; between machines the link is usually the limit (10 GbE: 1.25 GB/s). None: the
    loopback as it is."""
    if gbit is None:
        yield
        return
    undo = ["tc", "qdisc", "del", "dev", "lo", "root"]
    shape = ["tc", "qdisc", "replace", "dev", "lo", "root", "tbf", "rate", f"{gbit}gbit"]
    subprocess.run([*shape, "burst", "4mb", "latency", "50ms"], check=True)
    print(f"loopback shaped to {gbit:g} Gbit/s; if this run is killed, undo with: {' '.join(undo)}")
    handlers = {sig: signal.signal(sig, _exit_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        subprocess.run(undo, check=False)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _exit_on_signal(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


def _check_link(gbit: float | None) -> None:
    """Refuse a --link that cannot work before any lake is built."""
    if gbit is None:
        return
    if gbit <= 0:
        raise SystemExit(f"--link must be a positive rate in Gbit/s, not {gbit}")
    if os.geteuid() != 0 or shutil.which("tc") is None:
        raise SystemExit("--link needs root and tc (iproute2) to shape the loopback interface")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the image counts")
    parser.add_argument("--rounds", type=int, default=3, help="loader/ceiling rounds (median)")
    parser.add_argument(
        "--link", type=float, metavar="GBIT",
        help="emulate a link of GBIT Gbit/s between trainer and workers (shapes the loopback "
        "interface with tc while the cluster is measured; needs root); only the throughput tables",
    )  # fmt: skip
    parser.add_argument("--out", help="also write the markdown tables here")
    args = parser.parse_args()
    _check_link(args.link)
    work = tempfile.mkdtemp(prefix="lakeio-cluster-bench-")
    lines = [
        "| lake | loader | img/s (warm) | / in process | MB/s into trainer | ceiling MB/s (tasks in flight) | / ceiling (each round) | MB per task |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cpu = [
        "| lake | decode | trainer CPU s/GB: loader | ceiling | workers CPU s/GB: loader | ceiling |",
        "|---|---|---|---|---|---|",
    ]
    scaling = [
        "| lake | decode | 1 worker img/s | 2 workers img/s | speedup S | efficiency E |",
        "|---|---|---|---|---|---|",
    ]
    try:
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as c,
            Client(c) as client,
        ):
            lakes = [
                (size, batch, make_lake(work, size, int(count * args.scale), client))
                for size, count, batch in CASES
            ]
        for size, batch, path in lakes:
            name = f"{size[0]}x{size[1]}"
            local = in_process_rate(path, batch, args.rounds)
            lines.append(f"| {name} | in process | {local:,.0f} | 1.00 | | | | |")
            with link_limit(args.link):
                by_workers = {
                    w: cluster_rates(path, batch, w, args.rounds)
                    for w in ((2,) if args.link is not None else (1, 2))
                }
            for decode, r in by_workers[2].items():
                each = ", ".join(f"{x:.0%}" for x in r["ratios"])
                lines.append(
                    f"| {name} | cluster, 2 workers, decode={decode} | {r['rate']:,.0f} | "
                    f"{r['rate'] / local:.2f} | {r['bytes_per_s'] / 1e6:,.0f} | "
                    f"{r['ceiling_bytes_per_s'] / 1e6:,.0f} ({r['in_flight']}) | "
                    f"**{r['ratio']:.0%}** ({each}) | {r['task_mb']:.1f} |"
                )
                cpu.append(
                    f"| {name} | {decode} | {r['loader_cpu'][0]:.2f} | {r['ceiling_cpu'][0]:.2f} | "
                    f"{r['loader_cpu'][1]:.2f} | {r['ceiling_cpu'][1]:.2f} |"
                )
                if 1 not in by_workers:
                    continue
                one = by_workers[1][decode]["rate"]
                speedup = r["rate"] / one
                scaling.append(
                    f"| {name} | {decode} | {one:,.0f} | {r['rate']:,.0f} | {speedup:.2f} | {speedup / 2:.2f} |"
                )
            print("\n".join(lines[-3:]), flush=True)
        tables = [lines, cpu]
        if args.link is None:
            tables += [scaling, affinity_table(work)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n\n".join("\n".join(table) for table in tables) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


def affinity_table(work: str) -> list[str]:
    """The affinity experiment (`affinity_case`) on a fresh 2-worker cluster, as table rows."""
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as c,
        Client(c) as client,
    ):
        client.run(warm_worker)
        affinity = affinity_case(work, client)
    rows = [
        "| placement | lake MB | budget MB per worker | epoch-2 requests | hits | hit rate | miss rate | origin reads | hit time ms | miss penalty ms | avg access time ms | img/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in affinity.items():
        rows.append(
            f"| {name} | {a['lake_mb']:.1f} | {a['budget_mb']:.1f} | {a['memory_requests']} | "
            f"{a['memory_hits']} | {a['hit_rate']:.2f} | {1 - a['hit_rate']:.2f} | "
            f"{a['origin_reads']} | {a['hit_time_ms']:.3f} | {a['miss_penalty_ms']:.2f} | "
            f"{a['aat_ms']:.3f} | {a['rate']:,.0f} |"
        )
    return rows


if __name__ == "__main__":
    main()
