"""One memory number: peak RSS growth of a process reading a lake 4x larger than Cache(memory=X).

Run: .venv/bin/python benchmarks/memory_budget.py [--epochs 3]

One lake of 20,000 natural 64x64 photo crops (lz4, 246 MB decoded). Each case runs in a fresh
process: it opens the lake, compiles the gather, makes the loader, resets the kernel's peak-RSS
mark (/proc/self/clear_refs), reads the epochs, and reports VmHWM less the RSS before reading,
and the peak of anonymous memory (RssAnon, sampled at every batch) less its value before: the
memmap the shares are measured against maps file pages into the process too.
Cases (X = a quarter of the lake):

- X, default loader: the prefetch window sits inside X (shrunk to fit, with a warning);
- X, prefetch as before: ``prefetch_bytes`` = two windows of 32 chunks, outside the budget, as
  every loader was before (what the issue measured: ~500 MB for X = 64 MB);
- X plus a disk tier holding the whole lake ("small budgets"): the warm rate, against a
  memory-mapped .npy of the same images read in the same process right after each epoch.

Target: growth <= X + 64 MB + the batches in flight; the small-budget warm rate >= 20% of the
memmap's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import numpy as np

CHILD = r"""
import json, sys, time, warnings
import numpy as np, torch, lakeio
from lakeio.loader.kernels import copy_rows_kernel
lake, raw, budget, disk, prefetch, epochs = json.loads(sys.argv[1])

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

copy_rows_kernel(wait=True)
cache = lakeio.Cache(memory=budget, disk=disk, disk_size="4GB") if disk else lakeio.Cache(memory=budget)
ds = lakeio.open_dataset(lake, cache=cache)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loader = ds.loader(batch_size=256, seed=0, prefetch_bytes=prefetch)
mm = np.load(raw, mmap_mode="r")
order = np.random.default_rng(0).permutation(len(mm))
for i in range(0, len(mm), 256):  # the memmap's pages in the page cache, not in this process
    mm[np.sort(order[i : i + 256])]
start = rss("VmRSS:")
anon_start, anon_peak = rss("RssAnon:"), 0
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
shares, rates = [], []
for epoch in range(epochs):
    loader.set_epoch(epoch)
    t, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += len(x)
        anon_peak = max(anon_peak, rss("RssAnon:"))
    rate = seen / (time.perf_counter() - t)
    rates.append(rate)
    order = np.random.default_rng(epoch).permutation(len(mm))
    t = time.perf_counter()
    for i in range(0, len(mm), 256):
        torch.from_numpy(mm[np.sort(order[i : i + 256])])
    shares.append(rate / (len(mm) / (time.perf_counter() - t)))
print(json.dumps({"growth": rss("VmHWM:") - start, "anon": anon_peak - anon_start, "window": loader.plan.window,
                  "warnings": [str(w.message) for w in caught], "shares": shares,
                  "rates": rates}))
"""


def run_case(lake, raw, budget, disk, prefetch, epochs):
    args = json.dumps([lake, raw, budget, disk, prefetch, epochs])
    out = subprocess.run(
        [sys.executable, "-c", CHILD, args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--only", default="", help="run the cases whose name has this text")
    args = parser.parse_args()
    import lakeio
    from lakeio.testing.images import photo_crop_arrays

    with tempfile.TemporaryDirectory(prefix="lakeio-memory-") as work:
        images, labels = photo_crop_arrays(20000, (64, 64))
        np.save(f"{work}/raw.npy", images)
        lake = f"{work}/lake"
        lakeio.ingest(images, lake, labels=labels, codec="lz4", progress=False, echo=None)
        lake_bytes = images.nbytes + labels.nbytes
        budget = lake_bytes // 4
        chunk = lakeio.open_dataset(lake).chunk_nbytes(("images", "labels"))
        batch = 256 * (images[0].nbytes + 8)
        print(f"lake {lake_bytes / 2**20:.0f} MiB decoded, X = {budget / 2**20:.0f} MiB, "
              f"chunk {chunk / 2**20:.1f} MiB, batch {batch / 2**20:.1f} MiB, "
              f"{args.epochs} epochs")  # fmt: skip
        cases = {
            "X, default loader": (None, None),
            "X, prefetch as before (2 windows of 32 chunks, outside X)": (None, 64 * chunk),
            "X + a disk tier holding the lake": (f"{work}/disk-tier", None),
        }
        for name, (disk, prefetch) in cases.items():
            if args.only not in name:
                continue
            started = time.perf_counter()
            r = run_case(lake, f"{work}/raw.npy", budget, disk, prefetch, args.epochs)
            warm = r["shares"][1:] or r["shares"]
            rate = float(np.median(r["rates"][1:] or r["rates"]))
            print(
                f"{name}: peak RSS growth {r['growth'] / 2**20:.0f} MiB, of anonymous memory "
                f"{r['anon'] / 2**20:.0f} MiB "
                f"(X + 64 MiB = {(budget + 2**26) / 2**20:.0f} MiB), window {r['window']} "
                f"chunks, warm epochs {', '.join(f'{s:.0%}' for s in warm)} of the memmap "
                f"(median {np.median(warm):.0%}; {rate:,.0f} img/s) "
                f"({time.perf_counter() - started:.0f} s)"
            )
            for message in r["warnings"]:
                print(f"    warning: {message}")


if __name__ == "__main__":
    main()
