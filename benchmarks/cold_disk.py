"""A first epoch into an empty disk tier, against this machine's rate of copying the lake's files.

Run: .venv/bin/python benchmarks/cold_disk.py [--rounds 3]

One local lake of 20,000 natural 64x64 photo crops (lz4). Each round, alternating:

- copy: every chunk file of the lake copied into a fresh folder (``shutil.copyfile``, one file
  after the other, then ``fsync`` of nothing: the tier does not fsync either) — what a disk
  tier must at least do, the bound this machine sets;
- cold epoch: a loader's first epoch with ``Cache(disk=<fresh folder>)`` (memory tier on),
  which reads, checks and decodes each chunk and stores its bytes in the tier behind the reads
  (timed until the last of them is stored);
- no tier: the same first epoch without a disk tier (what the reads and decodes cost alone).

Both read the lake's files from the page cache (read once before the rounds). Reported: each
as stored MB/s, and the cold epoch as a share of the copy in the same round (the target: 80%).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time


def chunk_files(lake: str) -> list[str]:
    found = []
    for root, _, names in os.walk(os.path.join(lake, "segments")):
        found += [os.path.join(root, n) for n in names if n.startswith("c.")]
    return sorted(found)


def copy_rate(files: list[str], into: str) -> float:
    os.makedirs(into)
    start, total = time.perf_counter(), 0
    for i, path in enumerate(files):
        shutil.copyfile(path, os.path.join(into, f"{i:06d}"))
        total += os.path.getsize(path)
    return total / (time.perf_counter() - start)


def cold_epoch_rate(lake: str, tier: str | None, stored: int) -> tuple[float, dict, dict]:
    """The epoch's rate (stored bytes/s), the source's stats, and the CPU seconds it took
    (``user``, ``sys``: what bounds a first epoch on a machine of two cores)."""
    import lakeio

    cache = lakeio.Cache(disk=tier, disk_size="4GB") if tier else lakeio.Cache()
    ds = lakeio.open_dataset(lake, cache=cache)
    loader = ds.loader(batch_size=256, seed=0, prefetch_next_epoch=False)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in loader:
        pass
    if ds.source.disk is not None:  # the clock stops once the tier holds what the epoch read
        ds.source.disk.flush()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    loader.close()
    cpu = {"user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime}
    return stored / seconds, ds.source.stats(), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import lakeio
    from lakeio.loader.kernels import copy_rows_kernel
    from lakeio.testing.images import photo_crop_arrays

    with tempfile.TemporaryDirectory(prefix="lakeio-cold-disk-") as work:
        images, labels = photo_crop_arrays(20000, (64, 64))
        lake = os.path.join(work, "lake")
        lakeio.ingest(images, lake, labels=labels, codec="lz4", progress=False, echo=None)
        files = chunk_files(lake)
        stored = sum(os.path.getsize(f) for f in files)
        for f in files:  # into the page cache: both sides read from memory
            with open(f, "rb") as fh:
                fh.read()
        copy_rows_kernel(wait=True)
        print(f"{len(files)} chunk files, {stored / 1e6:.0f} MB stored, {args.rounds} rounds")
        copies, epochs, shares = [], [], []
        for r in range(args.rounds):
            rates, cpu = {}, {}
            kinds = ("copy", "epoch", "no tier")
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                into = os.path.join(work, f"{kind}-{r}".replace(" ", "-"))
                # a deleted folder's blocks are discarded as the journal commits (this disk is
                # mounted with `discard`): file creation stalls behind it for a while, so the
                # last run's deletions are committed before the clock starts
                os.sync()
                if kind == "copy":
                    rates[kind] = copy_rate(files, into)
                elif kind == "epoch":
                    rates[kind], stats, cpu[kind] = cold_epoch_rate(lake, into, stored)
                else:  # the first epoch's reads and decodes alone, no tier to fill
                    rates[kind], _, cpu[kind] = cold_epoch_rate(lake, None, stored)
                shutil.rmtree(into, ignore_errors=True)
            copies.append(rates["copy"])
            epochs.append(rates["epoch"])
            shares.append(rates["epoch"] / rates["copy"])
            print(
                f"round {r}: copy {rates['copy'] / 1e6:.0f} MB/s, cold epoch into the tier "
                f"{rates['epoch'] / 1e6:.0f} MB/s ({shares[-1]:.0%}), first epoch with no "
                f"disk tier {rates['no tier'] / 1e6:.0f} MB/s; the tier holds "
                f"{stats['disk']['items']} entries; CPU s user/sys: into the tier "
                f"{cpu['epoch']['user']:.2f}/{cpu['epoch']['sys']:.2f}, no tier "
                f"{cpu['no tier']['user']:.2f}/{cpu['no tier']['sys']:.2f}"
            )
        print(
            f"median: copy {statistics.median(copies) / 1e6:.0f} MB/s, cold epoch "
            f"{statistics.median(epochs) / 1e6:.0f} MB/s, share {statistics.median(shares):.0%}"
        )


if __name__ == "__main__":
    main()
