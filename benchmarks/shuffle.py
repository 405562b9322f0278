"""Shuffle quality of the windowed chunk shuffle against a full random permutation.

Run: .venv/bin/python benchmarks/shuffle.py

Pure computation on the plan (no I/O). The lake is laid out the way an ImageFolder ingest lays
it out — sorted by class, so each chunk holds one or two classes — which is the hard case for
any chunk-wise shuffle. For each window size (chunks shuffled together):

- label TV: total-variation distance between each batch's label histogram and the dataset's,
  averaged over batches (0 = every batch perfectly mixed; a full permutation is not 0 either,
  because of sampling noise in a finite batch);
- gap: mean |position difference| of consecutive samples, as a fraction of N (a full
  permutation gives ~1/3);
- memory: decoded bytes the window holds (chunks of 4 MiB).
"""

from __future__ import annotations

import numpy as np

from lakeio.loader.plan import PlanSpec, batch_slices, global_order

N, CLASSES, CHUNK, BATCH = 20000, 10, 341, 256


def quality(order: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    overall = np.bincount(labels, minlength=CLASSES) / len(labels)
    tv = []
    for batch in batch_slices(order, BATCH)[:-1]:
        hist = np.bincount(labels[batch], minlength=CLASSES) / len(batch)
        tv.append(0.5 * np.abs(hist - overall).sum())
    gap = np.abs(np.diff(order)).mean() / len(order)
    return float(np.mean(tv)), float(gap)


def main() -> None:
    labels = np.repeat(np.arange(CLASSES), N // CLASSES)
    chunks = [np.arange(s, min(s + CHUNK, N)) for s in range(0, N, CHUNK)]
    print(
        f"{N} samples sorted by class ({CLASSES} classes), {len(chunks)} chunks of {CHUNK}, batch {BATCH}\n"
    )
    print("| shuffle | label TV per batch | consecutive gap / N | memory held |")
    print("|---|---|---|---|")
    for window in (1, 2, 4, 8, 16, 32):
        tv, gap = quality(global_order(chunks, PlanSpec(BATCH, window=window), 0), labels)
        print(f"| lakeio, window {window} chunks | {tv:.3f} | {gap:.3f} | {window * 4} MiB |")
    tv, gap = quality(np.random.default_rng(0).permutation(N), labels)
    print(f"| full random permutation | {tv:.3f} | {gap:.3f} | whole dataset (random access) |")
    tv, gap = quality(np.arange(N), labels)
    print(f"| no shuffle | {tv:.3f} | {gap:.3f} | 1 chunk |")


if __name__ == "__main__":
    main()
