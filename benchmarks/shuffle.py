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

Then 4 DDP ranks (issue 14): the default sharding, "epoch" (each rank a quarter of each epoch's
global order, so every rank reads every chunk over a few epochs), against "chunks" (rank r
keeps chunks r, r+4, r+8, ... every epoch, shuffled in windows of its own chunks: a node's
ranks hold one copy of the lake between them with no shared tier). Per window: label TV of a
rank's batch (what BatchNorm sees without SyncBatchNorm) and of the global batch (the four
ranks' batches of one step, what the averaged gradient sees), and the share of the samples a
rank has seen after 5 epochs.
"""

from __future__ import annotations

import numpy as np

from lakeio.loader.plan import PlanSpec, batch_slices, global_order, rank_orders

N, CLASSES, CHUNK, BATCH, RANKS, EPOCHS, SEEDS = 20000, 10, 341, 256, 4, 5, 10


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
    print(
        f"\n{RANKS} ranks, batch {BATCH} each ({RANKS * BATCH} a step), mean ± sd over seeds "
        f"0-{SEEDS - 1}\n"
    )
    print(
        "| sharding | window | rank batch TV | global batch TV | samples a rank sees in 5 epochs |"
    )
    print("|---|---|---|---|---|")
    for window in (4, 8, 32):
        for sharding in ("epoch", "chunks"):
            rank_tv, step_tv, seen = [], [], []
            for seed in range(SEEDS):
                spec = PlanSpec(
                    BATCH, seed=seed, window=window, world_size=RANKS, sharding=sharding
                )
                per_epoch = [rank_orders(chunks, spec, epoch) for epoch in range(EPOCHS)]
                r, g = ranks_quality(list(per_epoch[0]), labels)
                rank_tv.append(r)
                step_tv.append(g)
                seen += [len(set(np.concatenate([e[r] for e in per_epoch]).tolist())) / N
                         for r in range(RANKS)]  # fmt: skip
            print(
                f"| `{sharding!r}` | {window} | {np.mean(rank_tv):.3f} ± {np.std(rank_tv):.3f} | "
                f"{np.mean(step_tv):.3f} ± {np.std(step_tv):.3f} | {np.mean(seen):.0%} |"
            )


def ranks_quality(orders: list[np.ndarray], labels: np.ndarray) -> tuple[float, float]:
    """Label TV of each rank's batches, and of each step's batches of all ranks together."""
    overall = np.bincount(labels, minlength=CLASSES) / len(labels)
    steps = min(len(o) for o in orders) // BATCH
    rank_tv, step_tv = [], []
    for i in range(steps):
        batches = [o[i * BATCH : (i + 1) * BATCH] for o in orders]
        for b in batches:
            hist = np.bincount(labels[b], minlength=CLASSES) / BATCH
            rank_tv.append(0.5 * np.abs(hist - overall).sum())
        hist = np.bincount(labels[np.concatenate(batches)], minlength=CLASSES) / (RANKS * BATCH)
        step_tv.append(0.5 * np.abs(hist - overall).sum())
    return float(np.mean(rank_tv)), float(np.mean(step_tv))


if __name__ == "__main__":
    main()
