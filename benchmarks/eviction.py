"""Memory-tier eviction: plain LRU against plan-aware eviction, on shuffled epochs.

Run: .venv/bin/python benchmarks/eviction.py

A lake of 20,000 64x64 photo crops (59 chunks); the memory tier gets 50%, 67% and 90% of the
lake's decoded size; four shuffled epochs; the hit rate of each epoch after the first. With
each chunk read once per epoch, no policy can beat the budget's share of the lake.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

import lakeio
from lakeio.testing.images import photo_crops


def epoch_hit_rates(url: str, policy: str, budget: int, epochs: int = 4) -> list[float]:
    ds = lakeio.open_dataset(url, cache=lakeio.Cache(memory=budget, eviction=policy))
    # per-epoch hit rates: no loading of the next epoch's chunks inside this epoch's interval
    loader = ds.loader(batch_size=256, seed=0, prefetch_next_epoch=False)
    rates = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        before = ds.source.memory.stats()
        for _ in loader:
            pass
        after = ds.source.memory.stats()
        rates.append((after.hits - before.hits) / (after.requests - before.requests))
    return rates[1:]


def main() -> None:
    work = tempfile.mkdtemp(prefix="lakeio-eviction-")
    try:
        pairs = list(photo_crops(20000, (64, 64), seed=0))
        images = np.stack([p for p, _ in pairs])
        labels = np.array([label for _, label in pairs])
        url = os.path.join(work, "lake")
        lakeio.ingest(images, url, labels=labels, workers=2, progress=False, echo=None)
        ds = lakeio.open_dataset(url)
        lake_bytes = len(ds.index.chunks()) * ds.chunk_nbytes(("images", "labels"))
        print(
            "| memory budget (share of the lake) | LRU hit rate, epochs 2-4 | plan-aware hit rate, epochs 2-4 |"
        )
        print("|---|---|---|")
        for share in (0.5, 0.67, 0.9):
            budget = int(lake_bytes * share)
            lru = epoch_hit_rates(url, "lru", budget)
            plan = epoch_hit_rates(url, "plan", budget)
            print(
                f"| {share:.0%} | {', '.join(f'{r:.2f}' for r in lru)} | {', '.join(f'{r:.2f}' for r in plan)} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
