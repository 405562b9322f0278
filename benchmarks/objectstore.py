"""A lake in a bucket: the first epoch through the fault proxy, with latency and faults added.

Run: .venv/bin/python benchmarks/objectstore.py [--scale 1] [--rounds 3] [--out FILE]

moto's S3 server on 127.0.0.1 holds two lakes of natural photo crops (64x64 and 224x224, lz4,
default chunking); `lakeio.testing.s3proxy.FaultProxy` sits in front. For each lake, a first
epoch (a new loader and an empty memory tier each time, no disk tier) is timed through the
proxy at each added latency (0, 20, 50, 100 ms per request), then at 0 ms with a 100 MB/s cap
per response, then with a 503 on every 4th request and a dropped connection on every 9th, and at +50 ms
filling an empty disk tier (compared with +50 ms without one: the tier is filled behind the
reads, so the bucket, not the disk, should set the pace).
Rounds alternate the order of the settings; the table gives each setting's median epoch time
and its rate as a share of the same lake's 0 ms epoch in the same round (the ratio the issue's
targets are stated in). Also printed: the loader's threads, and the proxy's counts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np

SETTINGS = {
    "+0 ms": {},
    "+20 ms": {"latency": 0.02},
    "+50 ms": {"latency": 0.05},
    "+100 ms": {"latency": 0.1},
    "+0 ms, 100 MB/s per request": {"bandwidth": 100e6},
    "+0 ms, 503 every 4th, reset every 9th": {"slowdown_every": 4, "reset_every": 9},
    "+50 ms, filling an empty disk tier": {"latency": 0.05},
    "+50 ms, filling an empty disk tier in line": {"latency": 0.05},
}
# compared with "+50 ms" without a disk tier; "in line": each reader stores its own chunk
WITH_DISK = {"+50 ms, filling an empty disk tier", "+50 ms, filling an empty disk tier in line"}
ONE_BY_ONE = "+50 ms, a chunk's fields one after the other"  # with --fields
FAULTY = "+0 ms, 503 every 4th, reset every 9th"


def _lake(url: str, options: dict, n: int, size: int) -> int:
    import lakeio
    from lakeio.testing.images import photo_crops

    pairs = list(photo_crops(n, (size, size), seed=size))
    images = np.stack([p for p, _ in pairs])
    labels = np.array([label for _, label in pairs])
    lakeio.ingest(images, url, labels=labels, codec="lz4", storage_options=options,
                  progress=False, echo=None)  # fmt: skip
    return images.nbytes


def _epoch(url: str, options: dict, disk: bool, one_by_one: bool = False) -> tuple[float, dict]:
    """A first epoch: a new loader, an empty memory tier, and no disk tier or an empty one.
    ``one_by_one``: each chunk's fields fetched one after the other, as before lakeio fetched
    them at once (the measurement behind keeping small fields one object per chunk)."""
    import lakeio
    from lakeio.cache.source import ChunkSource

    if one_by_one:
        get_many = ChunkSource.get_many
        ChunkSource.get_many = lambda self, items, stored=False: [  # type: ignore[method-assign]
            (self.get_raw if stored else self.get)(*item) for item in items
        ]
        try:
            return _epoch(url, options, disk)
        finally:
            ChunkSource.get_many = get_many  # type: ignore[method-assign]

    with tempfile.TemporaryDirectory(prefix="lakeio-bench-disk-") as tmp:
        cache = lakeio.Cache(memory=0, disk=tmp if disk else None, disk_size="4GB")
        ds = lakeio.open_dataset(url, storage_options=options, cache=cache)
        with ds.loader(256, seed=0, prefetch_next_epoch=False) as loader:
            started = time.perf_counter()
            for _ in loader:
                pass
            seconds = time.perf_counter() - started
            stats = loader.stats()
        if disk:  # what the writer still had to store when the epoch ended
            waiting = ds.source.disk._behind.queued_bytes()
            ds.source.disk.close()
            stats["disk_backlog_bytes"] = waiting
    return seconds, stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="lake sizes x this")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", help="append the Markdown table to this file")
    p.add_argument("--plot", help="draw rate against latency into this PNG")
    p.add_argument("--fields", action="store_true",
                   help="also time +50 ms with each chunk's fields fetched one by one")  # fmt: skip
    args = p.parse_args()
    if args.fields:
        SETTINGS[ONE_BY_ONE] = {"latency": 0.05}

    import dask.config

    from lakeio.testing.s3proxy import FaultProxy, ProxyFaults
    from lakeio.testing.s3server import moto_bucket

    lakes = {
        "64x64": (int(20000 * args.scale), 64),
        "224x224": (int(2000 * args.scale), 224),
    }
    rows = []
    medians: dict[str, dict[str, float]] = {}
    with moto_bucket("lakeio-bench", key="bench", secret="bench") as options:
        for name, (n, size) in lakes.items():
            url = f"s3://lakeio-bench/{name}"
            nbytes = _lake(url, options, n, size)
            times: dict[str, list[float]] = {s: [] for s in SETTINGS}
            shares: dict[str, list[float]] = {s: [] for s in SETTINGS}
            counts: dict[str, dict] = {}
            with FaultProxy(options["endpoint_url"]) as proxy:  # warm-up, untimed: the first
                _epoch(url, {**options, "endpoint_url": proxy.endpoint}, False)  # epoch is slow
            for round_ in range(args.rounds):
                order = list(SETTINGS) if round_ % 2 == 0 else list(reversed(SETTINGS))
                this_round = {}
                for setting in order:
                    with FaultProxy(
                        options["endpoint_url"], ProxyFaults(**SETTINGS[setting])
                    ) as proxy:
                        through = {**options, "endpoint_url": proxy.endpoint}
                        behind = 0 if setting.endswith("in line") else 64 << 20
                        with dask.config.set({"lakeio.cache.write-behind": behind}):
                            seconds, stats = _epoch(
                                url, through, setting in WITH_DISK, setting == ONE_BY_ONE
                            )
                        counts[setting] = proxy.counts
                        counts[setting]["threads"] = stats["load_threads"]
                    this_round[setting] = seconds
                    times[setting].append(seconds)
                for setting, seconds in this_round.items():
                    base = "+50 ms" if setting in WITH_DISK | {ONE_BY_ONE} else "+0 ms"
                    shares[setting].append(this_round[base] / seconds)
                print(f"{name} round {round_ + 1}: " + ", ".join(
                    f"{s} {t:.2f} s" for s, t in this_round.items()), flush=True)  # fmt: skip
            medians[name] = {k: statistics.median(v) for k, v in times.items()}
            lost = medians[name][FAULTY] - medians[name]["+0 ms"]
            print(f"{name}: time lost to {counts[FAULTY].get('slowdown', 0)} 503s and "
                  f"{counts[FAULTY].get('reset', 0)} resets: {lost:.2f} s per epoch")  # fmt: skip
            for setting in SETTINGS:
                median = statistics.median(times[setting])
                c = counts[setting]
                faults = sum(c.get(k, 0) for k in ("slowdown", "reset", "truncated"))
                rows.append(
                    f"| {name} | {setting} | {median:.2f} | {nbytes / median / 1e6:,.0f} | "
                    f"{statistics.median(shares[setting]):.2f} "
                    f"({min(shares[setting]):.2f}–{max(shares[setting]):.2f}) | "
                    f"{c.get('requests', 0):,} | {faults:,} |"
                )
    table = "\n".join([
        "| lake | through the proxy | first epoch, s (median) | decoded MB/s | share of +0 ms: median (range over rounds)¹ | requests | faults injected |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    table += ("\n\n¹ the disk-tier and fields-one-by-one rows: share of the plain +50 ms epoch "
              "of the same round")  # fmt: skip
    command = " ".join([".venv/bin/python", "benchmarks/objectstore.py", *sys.argv[1:]])
    print(table)
    if args.plot:
        _plot(medians, args.plot)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(f"\n`{command}`:\n\n{table}\n")


def _plot(medians: dict[str, dict[str, float]], path: str) -> None:
    """First-epoch time against added latency, one line per lake, as a share of +0 ms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latencies = [("+0 ms", 0), ("+20 ms", 20), ("+50 ms", 50), ("+100 ms", 100)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, m in medians.items():
        ax.plot([ms for _, ms in latencies], [m["+0 ms"] / m[s] for s, _ in latencies],
                marker="o", label=f"lakeio, {name}")  # fmt: skip
    ax.axhline(0.8, color="grey", linestyle="--", linewidth=1, label="target (80%)")
    ax.set_xlabel("latency added per request (ms)")
    ax.set_ylabel("first-epoch rate / rate at +0 ms")
    ax.set_ylim(0, 1.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
