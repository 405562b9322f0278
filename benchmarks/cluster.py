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
                      a trivial task; waves of 16, fetched in parallel straight from the
                      workers (what Dask's transport delivers with nothing else to do)

Loader and ceiling are timed over the same bytes (several epochs back to back, a second or
more: one epoch here is a fraction of a second, at the mercy of one hiccup), alternating, for
``--rounds`` rounds; the tables give medians, and the CPU seconds each spent per GB delivered
in the trainer's process and in the workers.

``--link GBIT`` measures loader and ceiling over a loopback shaped to GBIT Gbit/s (as between
two machines, where the network rather than the CPU is the limit).

Then the affinity experiment: a lake 1.5x one worker's memory budget on 2 workers, the second
epoch's hit rate with affinity (each chunk always loaded by its owner) and without (Dask places
loads anywhere). Ratios are what to read; absolute numbers on shared machines are noise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
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


EPOCHS_TIMED = 8  # per round: ~1-3 s of loading on these lakes


def epochs_rate(loader, first: int, epochs: int = EPOCHS_TIMED) -> tuple[int, float]:
    """Samples and seconds of ``epochs`` warm epochs back to back, from epoch ``first``."""
    samples = 0
    start = time.perf_counter()
    for epoch in range(first, first + epochs):
        loader.set_epoch(epoch)
        samples += sum(len(labels) for _, labels in loader)
    return samples, time.perf_counter() - start


def cpu_seconds(client: Client | None = None) -> tuple[float, float]:
    """CPU seconds used so far by this process and by the client's workers."""
    here = sum(os.times()[:2])
    if client is None:
        return here, 0.0
    return here, sum(client.run(lambda: sum(os.times()[:2])).values())


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


def best_ceiling(client: Client, on_workers, tasks: int, nbytes: int) -> dict:
    """The fastest of `gather_ceiling` over `CEILING_IN_FLIGHT` (too few in flight waits on
    latency, too many crowds memory): its bytes/s, CPU seconds per GB, and tasks in flight."""
    best: dict = {"bytes_per_s": 0.0}
    for in_flight in CEILING_IN_FLIGHT:
        cpu0 = cpu_seconds(client)
        start = time.perf_counter()
        gather_ceiling(client, on_workers, tasks, in_flight)
        rate = nbytes / (time.perf_counter() - start)
        cpu1 = cpu_seconds(client)
        if rate > best["bytes_per_s"]:
            cpu = tuple((b - a) / nbytes * 1e9 for a, b in zip(cpu0, cpu1, strict=True))
            best = {"bytes_per_s": rate, "cpu": cpu, "in_flight": in_flight}
    return best


def cluster_rates(path: str, batch: int, workers: int, rounds: int) -> dict[str, dict]:
    """Loader and ceiling, alternating for ``rounds`` rounds of the same bytes each: medians."""
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
            runs = []
            for r in range(rounds):
                # nothing else runs meanwhile: each round's loader is closed before the ceiling
                # (a loader left open would load its next epoch in the background)
                ceiling = best_ceiling(client, on_workers, tasks, ceiling_bytes)
                with ds.loader(batch, seed=0, cluster=client, decode=decode) as loader:
                    cpu1 = cpu_seconds(client)
                    samples, loader_s = epochs_rate(loader, 1 + r * EPOCHS_TIMED)
                    cpu2 = cpu_seconds(client)
                runs.append(
                    {
                        "rate": samples / loader_s,
                        "bytes_per_s": shipped / loader_s,
                        "ceiling_bytes_per_s": ceiling["bytes_per_s"],
                        "ratio": (shipped / loader_s) / ceiling["bytes_per_s"],
                        "loader_cpu": ((cpu2[0] - cpu1[0]) / shipped * 1e9,
                                       (cpu2[1] - cpu1[1]) / shipped * 1e9),
                        "ceiling_cpu": ceiling["cpu"],
                        "in_flight": ceiling["in_flight"],
                    }
                )  # fmt: skip
            del on_workers
            out[decode] = {
                **{k: _median([run[k] for run in runs]) for k in runs[0]},
                "ratios": [run["ratio"] for run in runs],
                "in_flights": [run["in_flight"] for run in runs],
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
    loader = ds.loader(batch, seed=0)
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
    the loopback interface (tc token bucket; needs root) and restore it on the way out. On one
    machine the loopback moves several GB/s and costs CPU on both ends; between machines the
    link is usually the limit (10 GbE: 1.25 GB/s). None: the loopback as it is."""
    if gbit is None:
        yield
        return
    if os.geteuid() != 0 or shutil.which("tc") is None:
        raise SystemExit("--link needs root and tc (iproute2) to shape the loopback interface")
    shape = ["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", f"{gbit}gbit"]
    subprocess.run([*shape, "burst", "4mb", "latency", "50ms"], check=True)
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)


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
    work = tempfile.mkdtemp(prefix="lakeio-cluster-bench-")
    lines = [
        "| lake | loader | img/s (warm) | / in process | MB/s into trainer | ceiling MB/s (best tasks in flight) | / ceiling (each round) | MB per task |",
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
                    for w in ((2,) if args.link else (1, 2))
                }
            for decode, r in by_workers[2].items():
                each = ", ".join(f"{x:.0%}" for x in r["ratios"])
                lines.append(
                    f"| {name} | cluster, 2 workers, decode={decode} | {r['rate']:,.0f} | "
                    f"{r['rate'] / local:.2f} | {r['bytes_per_s'] / 1e6:,.0f} | "
                    f"{r['ceiling_bytes_per_s'] / 1e6:,.0f} "
                    f"({'/'.join(str(k) for k in r['in_flights'])}) | "
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
        if args.link:
            text = "\n".join(lines) + "\n\n" + "\n".join(cpu) + "\n"
            print(text)
            if args.out:
                with open(args.out, "w") as fh:
                    fh.write(text)
            return
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as c,
            Client(c) as client,
        ):
            client.run(warm_worker)
            affinity = affinity_case(work, client)
        aff_lines = [
            "| placement | lake MB | budget MB per worker | epoch-2 requests | hits | hit rate | miss rate | origin reads | hit time ms | miss penalty ms | avg access time ms | img/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, a in affinity.items():
            aff_lines.append(
                f"| {name} | {a['lake_mb']:.1f} | {a['budget_mb']:.1f} | {a['memory_requests']} | "
                f"{a['memory_hits']} | {a['hit_rate']:.2f} | {1 - a['hit_rate']:.2f} | "
                f"{a['origin_reads']} | {a['hit_time_ms']:.3f} | {a['miss_penalty_ms']:.2f} | "
                f"{a['aat_ms']:.3f} | {a['rate']:,.0f} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = (
        "\n".join(lines)
        + "\n\n"
        + "\n".join(cpu)
        + "\n\n"
        + "\n".join(scaling)
        + "\n\n"
        + "\n".join(aff_lines)
        + "\n"
    )
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
