"""One node, many ranks: the node's memory and the ranks' combined warm rate (issue 14).

Run: .venv/bin/python benchmarks/node.py [--ranks 4] [--epochs 5] [--cache '{}']

One lake of 20,000 natural 64x64 photo crops (lz4, L = 246 MB decoded). N rank processes on
this machine, each `lakeio.open_dataset(lake, cache=lakeio.Cache(**CACHE))` and a loader with
``rank=r, world_size=N`` (batch 256, seed 0), as N DDP ranks of one node would be. Each rank
says it is ready once its loader is made; then all read ``--epochs`` epochs at once (timed),
and then the same epochs again, checking every batch against the images at `loader.batches()`
(a memmap of the raw images).

The node's memory: the drop of MemAvailable (/proc/meminfo, sampled every 20 ms) from the
moment every rank is ready — N processes that opened the lake and read nothing — to its lowest
while they read. Issue 14's target for a node-shared tier: <= 1.25 x L + N x 64 MB. Beside
it, the ranks' anonymous memory (RssAnon) summed, peak less ready: private memory only (a
tier in shared memory shows in MemAvailable, not there). The
combined warm rate: the sum over ranks of samples per second of each warm epoch (epochs after
the first), median over epochs.

``--kill``: the last rank kills itself with SIGKILL halfway through its first epoch (loads
in flight, maybe a chunk half written to the shared tier) and a new process takes its place;
every batch of the others and of the new one is checked as above, and what is left in
/dev/shm at the end is reported (issue 14: the others complete, the new run finds the tier
consistent, nothing leaks).

``--cache`` is `lakeio.Cache`'s keyword arguments as JSON (default: ``{}``, the default
cache). Each rank's environment has what torchrun would set (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE = N), so the default cache is a memory tier of 2 GiB in each process and,
for N > 1, the node-shared tier of N x 2 GiB; ``{"shared": 0}`` is per-process tiers only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

CHILD = r"""
import json, os, sys, time
import numpy as np
import lakeio
from lakeio.loader.kernels import copy_rows_kernel
lake, raw, rank, world, epochs, cache, die_at = json.loads(sys.argv[1])
copy_rows_kernel(wait=True)
ds = lakeio.open_dataset(lake, cache=lakeio.Cache(**cache))
loader = ds.loader(batch_size=256, seed=0, rank=rank, world_size=world)
images = np.load(raw, mmap_mode="r")
print("ready", flush=True)
sys.stdin.readline()  # go
seconds, samples, bad = [], [], 0
for epoch in range(epochs):  # timed
    loader.set_epoch(epoch)
    seen, began = 0, time.perf_counter()
    for i, (x, _) in enumerate(loader):
        seen += len(x)
        if [epoch, i] == die_at:  # as kill -9 from outside: no finalizer, loads in flight
            os.kill(os.getpid(), 9)
    seconds.append(time.perf_counter() - began)
    samples.append(seen)
for epoch in range(epochs):  # the same epochs again, every batch checked
    loader.set_epoch(epoch)
    expected = loader.batches()
    for i, (x, _) in enumerate(loader):
        if not np.array_equal(x.numpy(), images[expected[i]]):
            bad += 1
print(json.dumps({"seconds": seconds, "samples": samples, "bad_batches": bad}), flush=True)
"""


SHM = f"/dev/shm/lakeio-{os.getuid()}"


def left_in_shm() -> str:
    """What the shared tiers left in the node's shared memory: folders and their bytes."""
    if not os.path.isdir(SHM):
        return "nothing"
    folders = [e for e in os.scandir(SHM) if e.is_dir()]
    total = sum(
        os.path.getsize(os.path.join(d, f))
        for e in folders
        for d, _, files in os.walk(e.path)
        for f in files
    )
    return f"{len(folders)} folders, {total:,} bytes" if folders else "nothing"


def mem_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def rss_anon(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:  # (exited)
        pass
    return 0


def start_rank(lake: str, raw: str, rank: int, ranks: int, epochs: int, cache: dict, die_at):
    """One rank's process, once it says it is ready."""
    torchrun = {"RANK": rank, "WORLD_SIZE": ranks, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": ranks}
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps([lake, raw, rank, ranks, epochs, cache, die_at])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **{k: str(v) for k, v in torchrun.items()}},  # as torchrun sets them
    )
    line = p.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"a rank did not start: {line!r}")
    return p


def run_node(lake: str, raw: str, ranks: int, epochs: int, cache: dict, kill: bool) -> dict:
    """Start ``ranks`` processes, wait until each is ready, let them read together; the node's
    memory drop while they read and each rank's epoch times. ``kill``: the last rank kills
    itself (SIGKILL) halfway through its first epoch, and a new process takes its place at once
    (its epochs checked as the others', its rates not counted)."""
    last = ranks - 1
    die_at = [0, 20000 // ranks // 256 // 2] if kill else None
    procs = [
        start_rank(lake, raw, r, ranks, epochs, cache, die_at if r == last else None)
        for r in range(ranks)
    ]
    time.sleep(0.5)  # (settled)
    ready = mem_available()
    anon_ready = [rss_anon(p.pid) for p in procs]
    lowest, anon_peak = [ready], list(anon_ready)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            lowest[0] = min(lowest[0], mem_available())
            for i, p in enumerate(procs):
                anon_peak[i] = max(anon_peak[i], rss_anon(p.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results, replaced = [], None
    if kill:
        procs[last].wait(timeout=600)
        if procs[last].returncode != -9:
            raise RuntimeError(f"the rank to kill exited with {procs[last].returncode}")
        replaced = start_rank(lake, raw, last, ranks, epochs, cache, None)
        replaced.stdin.write("go\n")
        replaced.stdin.flush()
        procs = procs[:last]
    for p in procs + ([replaced] if replaced else []):
        out, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"a rank failed with exit code {p.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    done.set()
    sampler.join()
    counted = results[: len(procs)]  # (not the replacement's)
    warm = [sum(r["samples"][e] / r["seconds"][e] for r in counted) for e in range(1, epochs)] or [
        sum(r["samples"][0] / r["seconds"][0] for r in counted)
    ]
    return {
        "memory_drop": ready - lowest[0],
        "anon_growth": sum(anon_peak) - sum(anon_ready),
        "warm_rates": warm,
        "bad_batches": sum(r["bad_batches"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ranks", type=int, nargs="+", default=[4])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cache", default="{}", help="lakeio.Cache keyword arguments (JSON)")
    parser.add_argument(
        "--kill",
        action="store_true",
        help="kill the last rank (SIGKILL) halfway through its first epoch; a new one replaces it",
    )
    args = parser.parse_args()
    cache = json.loads(args.cache)
    import lakeio
    from lakeio.testing.images import photo_crop_arrays

    with tempfile.TemporaryDirectory(prefix="lakeio-node-") as work:
        images, labels = photo_crop_arrays(20000, (64, 64))
        raw = os.path.join(work, "raw.npy")
        np.save(raw, images)
        lake = os.path.join(work, "lake")
        lakeio.ingest(images, lake, labels=labels, codec="lz4", progress=False, echo=None)
        decoded = images.nbytes + labels.nbytes
        print(f"lake L = {decoded / 1e6:.0f} MB decoded, {args.epochs} epochs, Cache(**{cache})")
        for ranks in args.ranks:
            r = run_node(lake, raw, ranks, args.epochs, cache, args.kill)
            bound = 1.25 * decoded + ranks * 64e6
            print(
                f"{ranks} ranks: node memory {r['memory_drop'] / 1e6:,.0f} MB while reading "
                f"({r['memory_drop'] / decoded:.2f} L; target <= 1.25 L + {ranks} x 64 MB = "
                f"{bound / 1e6:,.0f} MB; the ranks' private memory grew "
                f"{r['anon_growth'] / 1e6:,.0f} MB), combined warm rate "
                f"{statistics.median(r['warm_rates']):,.0f} img/s "
                f"(epochs {', '.join(f'{x:,.0f}' for x in r['warm_rates'])}), "
                f"batches not equal to the plan's samples: {r['bad_batches']}"
                + (f"; rank {ranks - 1} killed mid-epoch and replaced" if args.kill else "")
                + f"; left in {SHM}: {left_in_shm()}",
                flush=True,
            )


if __name__ == "__main__":
    main()
