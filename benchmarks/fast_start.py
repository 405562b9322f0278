"""A new loader on a warm cache: how soon its first batch comes, and its epoch against a reused one.

Run: .venv/bin/python benchmarks/fast_start.py [--rounds 20] [--size 64]

One lake of natural photo crops (64x64: 20,000 images, batch 256; 224x224: 4,000, batch 64),
opened once with a memory tier that holds it all, read once to warm it. Then, alternating
within each round: an epoch of a loader made once and reused (``set_epoch``), an epoch of a
loader made for that epoch alone (``dataset.loader(...)``, then iterated), and an epoch of a
memory-mapped .npy of the same images as the reference. Reported: the new loader's time to its
first batch (what ``loader.stats()["first_batch_s"]`` says, and the wall time from making the
loader), and each loader's epoch rate as a share of the memmap's measured beside it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

import lakeio
from lakeio.loader.kernels import copy_rows_kernel
from lakeio.testing.images import photo_crop_arrays

CASES = {64: (20000, 256), 224: (4000, 64)}


def memmap_epoch(mm: np.ndarray, batch: int, epoch: int) -> float:
    order = np.random.default_rng(epoch).permutation(len(mm))
    start, seen = time.perf_counter(), 0
    for i in range(0, len(mm), batch):
        seen += len(torch.from_numpy(mm[np.sort(order[i : i + batch])]))
    return seen / (time.perf_counter() - start)


def loader_epoch(loader) -> tuple[float, float]:
    """(images/s, seconds to the first batch) of one epoch."""
    start, seen, first = time.perf_counter(), 0, None
    for x, _ in loader:
        if first is None:
            first = time.perf_counter() - start
        seen += len(x)
    return seen / (time.perf_counter() - start), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--size", type=int, default=64, choices=sorted(CASES))
    args = parser.parse_args()
    count, batch = CASES[args.size]
    with tempfile.TemporaryDirectory(prefix="lakeio-fast-start-") as work:
        images, labels = photo_crop_arrays(count, (args.size, args.size))
        np.save(f"{work}/raw.npy", images)
        mm = np.load(f"{work}/raw.npy", mmap_mode="r")
        lakeio.ingest(images, f"{work}/lake", labels=labels, codec="lz4", progress=False, echo=None)
        dataset = lakeio.open_dataset(f"{work}/lake", cache=lakeio.Cache(memory="8GB"))
        copy_rows_kernel(wait=True)  # (a process compiles it once; this measures what follows)
        reused = dataset.loader(batch_size=batch, seed=0)
        loader_epoch(reused)  # warms the memory tier
        reused_share, new_share, first_stat, first_wall = [], [], [], []
        for epoch in range(1, args.rounds + 1):
            reused.set_epoch(epoch)
            rate, _ = loader_epoch(reused)
            reused_share.append(rate / memmap_epoch(mm, batch, epoch))
            made = time.perf_counter()
            fresh = dataset.loader(batch_size=batch, seed=0)
            fresh.set_epoch(epoch)
            started = time.perf_counter()
            rate, first = loader_epoch(fresh)
            first_wall.append(started - made + first)
            first_stat.append(fresh.stats()["first_batch_s"])
            new_share.append(rate / memmap_epoch(mm, batch, epoch))
    ms = [1000 * s for s in first_wall]
    print(f"{args.size}x{args.size}, {count} images, batch {batch}, {args.rounds} rounds")
    print(
        f"new loader's first batch: median {statistics.median(ms):.1f} ms "
        f"(max {max(ms):.1f} ms) from dataset.loader(); loader.stats() says median "
        f"{1000 * statistics.median(first_stat):.1f} ms"
    )
    ratio = [n / r for n, r in zip(new_share, reused_share, strict=True)]
    print(
        f"epoch / memmap: reused loader median {statistics.median(reused_share):.1%}, "
        f"new loader median {statistics.median(new_share):.1%}; new / reused, per round: "
        f"median {statistics.median(ratio):.0%} (quartiles {np.quantile(ratio, 0.25):.0%}"
        f"–{np.quantile(ratio, 0.75):.0%})"
    )


if __name__ == "__main__":
    main()
