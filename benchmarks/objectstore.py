"""A lake in a bucket: the first epoch through the fault proxy, with latency and faults added.

Run: .venv/bin/python benchmarks/objectstore.py [--scale 1] [--rounds 3] [--out FILE]

moto's S3 server on 127.0.0.1 holds two lakes of natural photo crops (64x64 and 224x224, lz4,
default chunking); `lakeio.testing.s3proxy.FaultProxy` sits in front. For each lake, a first
epoch (a new loader and an empty memory tier each time, no disk tier) is timed through the
proxy at each added latency (0, 20, 50, 100 ms per request), then at 0 ms with a 100 MB/s cap
per response, then with a 503 on every 4th request and a dropped connection on every 9th.
Rounds alternate the order of the settings; the table gives each setting's median epoch time
and its rate as a share of the same lake's 0 ms epoch in the same round (the ratio the issue's
targets are stated in). Also printed: the loader's threads, and the proxy's counts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

SETTINGS = {
    "+0 ms": {},
    "+20 ms": {"latency": 0.02},
    "+50 ms": {"latency": 0.05},
    "+100 ms": {"latency": 0.1},
    "+0 ms, 100 MB/s per request": {"bandwidth": 100e6},
    "+0 ms, 503 every 4th, reset every 9th": {"slowdown_every": 4, "reset_every": 9},
}


def _lake(url: str, options: dict, n: int, size: int) -> int:
    import lakeio
    from lakeio.testing.images import photo_crops

    pairs = list(photo_crops(n, (size, size), seed=size))
    images = np.stack([p for p, _ in pairs])
    labels = np.array([label for _, label in pairs])
    lakeio.ingest(images, url, labels=labels, codec="lz4", storage_options=options,
                  progress=False, echo=None)  # fmt: skip
    return images.nbytes


def _epoch(url: str, options: dict) -> tuple[float, dict]:
    import lakeio

    ds = lakeio.open_dataset(url, storage_options=options, cache=lakeio.Cache(memory=0))
    loader = ds.loader(256, seed=0, prefetch_next_epoch=False)
    started = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - started, loader.stats()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="lake sizes x this")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", help="append the Markdown table to this file")
    args = p.parse_args()

    from lakeio.testing.s3proxy import FaultProxy, ProxyFaults
    from lakeio.testing.s3server import moto_bucket

    lakes = {
        "64x64": (int(20000 * args.scale), 64),
        "224x224": (int(2000 * args.scale), 224),
    }
    rows = []
    with moto_bucket("lakeio-bench", key="bench", secret="bench") as options:
        for name, (n, size) in lakes.items():
            url = f"s3://lakeio-bench/{name}"
            nbytes = _lake(url, options, n, size)
            times: dict[str, list[float]] = {s: [] for s in SETTINGS}
            shares: dict[str, list[float]] = {s: [] for s in SETTINGS}
            counts: dict[str, dict] = {}
            for round_ in range(args.rounds):
                order = list(SETTINGS) if round_ % 2 == 0 else list(reversed(SETTINGS))
                this_round = {}
                for setting in order:
                    with FaultProxy(
                        options["endpoint_url"], ProxyFaults(**SETTINGS[setting])
                    ) as proxy:
                        seconds, _ = _epoch(url, {**options, "endpoint_url": proxy.endpoint})
                        counts[setting] = proxy.counts
                    this_round[setting] = seconds
                    times[setting].append(seconds)
                for setting, seconds in this_round.items():
                    shares[setting].append(this_round["+0 ms"] / seconds)
                print(f"{name} round {round_ + 1}: " + ", ".join(
                    f"{s} {t:.2f} s" for s, t in this_round.items()), flush=True)  # fmt: skip
            for setting in SETTINGS:
                median = statistics.median(times[setting])
                c = counts[setting]
                faults = sum(c.get(k, 0) for k in ("slowdown", "reset", "truncated"))
                rows.append(
                    f"| {name} | {setting} | {median:.2f} | {nbytes / median / 1e6:,.0f} | "
                    f"{min(shares[setting]):.2f}–{max(shares[setting]):.2f} | "
                    f"{c.get('requests', 0):,} | {faults:,} |"
                )
    table = "\n".join([
        "| lake | through the proxy | first epoch, s (median) | decoded MB/s | share of +0 ms (per round) | requests | faults injected |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    command = " ".join([".venv/bin/python", "benchmarks/objectstore.py", *sys.argv[1:]])
    print(table)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(f"\n`{command}`:\n\n{table}\n")


if __name__ == "__main__":
    main()
