"""Filling an empty disk tier during a first epoch from a bucket that is the slow side.

Run: .venv/bin/python benchmarks/objectstore_disk.py [--rounds 3] [--in-flight 8]

moto's S3 server and the fault proxy run in a process of their own (as a real bucket's server
is not on the training machine), the proxy adding 50 ms and capping each response at 10 MB/s;
the loader keeps ``--in-flight`` requests out. A first epoch of a 64x64 lake (20,000 natural
crops, lz4) is timed with no disk tier, with an empty one filled behind the reads (the
default) and with one filled in line (``lakeio.cache.write-behind: 0``), rounds alternating
the order. Also printed: the CPU time of the loader's process and of the server's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time

import numpy as np

SETTINGS = ("no disk tier", "disk tier filled behind the reads", "disk tier filled in line")


def _serve(ready, stop) -> None:
    from lakeio.testing.s3proxy import FaultProxy, ProxyFaults
    from lakeio.testing.s3server import moto_bucket

    with (
        moto_bucket("lakeio-bench", key="bench", secret="bench") as options,
        FaultProxy(options["endpoint_url"], ProxyFaults(latency=0.05, bandwidth=10e6)) as proxy,
    ):
        ready.put((options, proxy.endpoint))
        stop.wait()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def _epoch(url: str, options: dict, setting: str) -> tuple[float, float]:
    """(seconds, loader CPU seconds) of one first epoch; a disk tier's writes are flushed
    outside the clock (what is left to store when the epoch ends is printed)."""
    import dask.config

    import lakeio

    disk = setting != "no disk tier"
    behind = 0 if setting.endswith("in line") else 64 << 20
    with tempfile.TemporaryDirectory(prefix="lakeio-bench-disk-") as tmp:
        cache = lakeio.Cache(memory=0, disk=tmp if disk else None, disk_size="4GB")
        ds = lakeio.open_dataset(url, storage_options=options, cache=cache)
        with (
            dask.config.set({"lakeio.cache.write-behind": behind}),
            ds.loader(256, seed=0, prefetch_next_epoch=False) as loader,
        ):
            started, cpu = time.perf_counter(), time.process_time()
            for _ in loader:
                pass
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        if disk:
            left = ds.source.disk._behind.queued_bytes()
            ds.source.disk.close()
            print(f"  {setting}: {left / 1e6:.0f} MB still to store at the end", flush=True)
    return seconds, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--in-flight", type=int, default=8, help="lakeio.read.max-in-flight")
    args = p.parse_args()

    import dask.config

    import lakeio
    from lakeio.testing.images import photo_crops

    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(ready, stop))
    server.start()
    try:
        options, endpoint = ready.get(timeout=120)
        pairs = list(photo_crops(20000, (64, 64), seed=64))
        images = np.stack([p for p, _ in pairs])
        labels = np.array([label for _, label in pairs])
        url = "s3://lakeio-bench/disk"
        lakeio.ingest(images, url, labels=labels, codec="lz4", storage_options=options,
                      progress=False, echo=None)  # fmt: skip
        through = {**options, "endpoint_url": endpoint}
        times: dict[str, list[float]] = {s: [] for s in SETTINGS}
        shares: dict[str, list[float]] = {s: [] for s in SETTINGS}
        with dask.config.set({"lakeio.read.max-in-flight": args.in_flight}):
            _epoch(url, through, "no disk tier")  # warm-up, untimed
            for round_ in range(args.rounds):
                order = SETTINGS if round_ % 2 == 0 else tuple(reversed(SETTINGS))
                this_round = {}
                for setting in order:
                    server_cpu = _cpu_seconds(server.pid)
                    seconds, cpu = _epoch(url, through, setting)
                    server_cpu = _cpu_seconds(server.pid) - server_cpu
                    print(f"round {round_ + 1}, {setting}: {seconds:.2f} s, CPU {cpu:.2f} s "
                          f"(server {server_cpu:.2f} s)", flush=True)  # fmt: skip
                    this_round[setting] = seconds
                    times[setting].append(seconds)
                for setting, seconds in this_round.items():
                    shares[setting].append(this_round["no disk tier"] / seconds)
    finally:
        stop.set()
        server.join(30)
    print("| first epoch, +50 ms and 10 MB/s per request | s (median) | share of no disk tier |")
    print("|---|---|---|")
    for setting in SETTINGS:
        share = shares[setting]
        print(f"| {setting} | {statistics.median(times[setting]):.2f} | "
              f"{statistics.median(share):.2f} ({min(share):.2f}–{max(share):.2f}) |")  # fmt: skip


if __name__ == "__main__":
    main()
