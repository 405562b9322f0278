"""The crowd: several processes share one disk tier half the lake's size, epoch after epoch.

Every reader is a real OS process (``python -m lakeio.testing.crowd``) that opens the lake with
a small memory tier over the shared disk tier, runs its loader as one DDP rank of the crowd and
compares every batch with the lake's samples at the indices `Loader.batches` gives (read once,
bypassing every cache). The tier is too small to hold the lake, so chunks are culled while
other processes read them and fetched again: that churn is the fault this case injects. A
reader that gets a wrong batch, too few batches or an error counts as data lost.

    tally = run_crowd("pets.lake", "/tmp/crowd", processes=4, epochs=3)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lakeio.cache.disk import DiskTier
from lakeio.testing.tally import Tally

FIELDS = ("images", "labels")


@dataclass
class CrowdRun:
    """What every reader of one crowd run reported, plus the tier's size limit."""

    processes: int
    epochs: int
    disk_size: int
    lake_bytes: int
    chunk_keys: int  # distinct chunk objects the readers load (chunks x fields)
    readers: list[dict[str, Any]] = field(default_factory=list)
    final_bytes_held: int = 0  # the shared tier's size once every reader is done

    @property
    def origin_reads(self) -> int:
        return sum(r.get("origin_reads", 0) for r in self.readers)

    @property
    def refetches(self) -> int:
        """Origin reads beyond the first of each chunk: chunks culled from the shared tier while
        the crowd still needed them (the per-key lock makes concurrent misses fetch once)."""
        return max(0, self.origin_reads - self.chunk_keys)

    @property
    def lost(self) -> int:
        """Wrong or missing batches, plus readers that failed or never reported."""
        lost = self.processes - len(self.readers)
        for r in self.readers:
            lost += r.get("wrong", 0) + r.get("missing", 0) + len(r.get("errors", []))
        return lost

    def tally(self) -> Tally:
        """Trials are reader-epochs; the injected faults are the refetches the churn caused."""
        injected, lost = self.refetches, self.lost
        hits = sum(r.get("disk_hits", 0) for r in self.readers)
        requests = sum(r.get("disk_requests", 0) for r in self.readers)
        notes = [
            f"{self.processes} processes x {self.epochs} epochs, disk tier {self.disk_size:,} B "
            f"for a {self.lake_bytes:,} B lake: {self.origin_reads} origin reads "
            f"({self.chunk_keys} chunk objects), disk hits {hits} of {requests}, "
            f"{self.final_bytes_held:,} B held at the end",
            *(f"rank {r['rank']}: {json.dumps(_brief(r))}" for r in self.readers),
        ]
        return Tally(
            case="crowd",
            trials=self.processes * self.epochs,
            injected=injected,
            detected=injected,  # each one was a counted disk-tier miss served by the origin
            recovered=max(0, injected - lost),
            lost=lost,
            notes=notes,
        )


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("batches", "wrong", "missing", "origin_reads", "disk_hits", "disk_requests")
    return {k: report.get(k) for k in keys} | {"errors": report.get("errors", [])[:1]}


def lake_stored_bytes(lake: str | os.PathLike) -> int:
    """The bytes the lake's committed segments store (its manifest's figure)."""
    import lakeio

    return sum(s.stored_bytes for s in lakeio.open_dataset(lake).manifest.segments)


def crowd(
    lake: str | os.PathLike,
    workdir: str | os.PathLike,
    processes: int = 4,
    epochs: int = 3,
    seed: int = 0,
    batch_size: int = 16,
    timeout: float = 300.0,
) -> CrowdRun:
    """Run ``processes`` reader processes over one shared disk tier of half the lake's size."""
    import lakeio

    manifest = lakeio.open_dataset(lake).manifest
    lake_bytes = sum(s.stored_bytes for s in manifest.segments)
    chunks = sum(-(-s.samples // manifest.chunk_samples) for s in manifest.segments)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    run = CrowdRun(processes, epochs, lake_bytes // 2, lake_bytes, chunks * len(FIELDS))
    common = [os.fspath(lake), str(work / "disk"), "--disk-size", str(run.disk_size)]
    common += ["--world", str(processes), "--epochs", str(epochs), "--seed", str(seed)]
    common += ["--batch-size", str(batch_size)]
    outs = [work / f"rank{rank}.json" for rank in range(processes)]
    for stale in [*outs, *(work / "ready").glob("*")]:
        stale.unlink(missing_ok=True)
    reader = [sys.executable, "-m", "lakeio.testing.crowd", *common]
    procs = [
        subprocess.Popen(
            [*reader, "--rank", str(rank), "--out", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for rank, out in enumerate(outs)
    ]
    deadline = time.monotonic() + timeout
    for rank, (proc, out) in enumerate(zip(procs, outs, strict=True)):
        run.readers.append(_collect(proc, out, rank, deadline))
    tier = DiskTier(work / "disk", run.disk_size)
    run.final_bytes_held = tier.stats().bytes_held
    tier.close()
    return run


def _collect(proc: subprocess.Popen, out: Path, rank: int, deadline: float) -> dict[str, Any]:
    """The reader's JSON report, or a report of how it failed (killed after the deadline)."""
    try:
        _, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        return {"rank": rank, "errors": ["reader timed out"], "stderr": stderr.decode()[-2000:]}
    if proc.returncode != 0 or not out.exists():
        tail = stderr.decode(errors="replace")[-2000:]
        return {"rank": rank, "errors": [f"exit status {proc.returncode}: {tail}"]}
    return json.loads(out.read_text())


def run_crowd(
    lake: str | os.PathLike,
    workdir: str | os.PathLike,
    processes: int = 4,
    epochs: int = 3,
    seed: int = 0,
) -> Tally:
    """The crowd case as a `Tally` (see the module docstring)."""
    return crowd(lake, workdir, processes, epochs, seed).tally()


def expected_fields(ds) -> dict[str, np.ndarray]:
    """Every field of ``ds`` read whole (open it without tiers to read straight from the origin)."""
    arrays = ds.to_dask()
    return {name: arrays[name].compute(scheduler="threads") for name in FIELDS}


def read_as_rank(args: argparse.Namespace) -> dict[str, Any]:
    """One reader: every epoch's batches checked against the lake, plus its cache figures."""
    import lakeio

    report: dict[str, Any] = {"rank": args.rank, "batches": 0, "wrong": 0, "missing": 0}
    report["errors"] = []
    plain = lakeio.open_dataset(args.lake, cache=lakeio.Cache(memory=0, disk=""))
    expected = expected_fields(plain)
    # a memory tier of two chunks: nearly every chunk of every epoch comes from the disk tier
    memory = 2 * plain.chunk_nbytes(FIELDS)
    cache = lakeio.Cache(memory=memory, disk=args.disk, disk_size=args.disk_size)
    ds = lakeio.open_dataset(args.lake, cache=cache)
    loader = ds.loader(
        args.batch_size, seed=args.seed, rank=args.rank, world_size=args.world, fields=FIELDS
    )
    _barrier(Path(args.out).parent / "ready", args.rank, args.world)
    started = time.perf_counter()
    try:
        for epoch in range(args.epochs):
            loader.set_epoch(epoch)
            check_epoch(loader, expected, report)
    except Exception as exc:  # the figure this case exists for: any error is a loss
        report["errors"].append(f"{type(exc).__name__}: {exc}")
    finally:
        loader.close()
    stats = ds.stats()
    report.update(
        seconds=round(time.perf_counter() - started, 3),
        origin_reads=stats["origin_reads"],
        corrupt_refetched=stats["corrupt_refetched"],
        disk_hits=stats["disk"]["hits"],
        disk_requests=stats["disk"]["requests"],
        disk_bytes_held=stats["disk"]["bytes_held"],
        disk_write_errors=stats["disk"].get("write_errors", 0),
    )
    return report


def _barrier(folder: Path, rank: int, world: int, timeout: float = 120.0) -> None:
    """Wait until every reader is ready, so that they read at the same time (a reader starts in
    seconds — torch's import — and without this they would mostly take turns)."""
    folder.mkdir(exist_ok=True)
    (folder / str(rank)).touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.iterdir())) < world and time.monotonic() < deadline:
        time.sleep(0.01)


def check_epoch(loader, expected: dict[str, np.ndarray], report: dict[str, Any]) -> None:
    """Compare each batch with the expected samples at the indices the plan gives."""
    plan = loader.batches()
    got = 0
    for images, labels in loader:
        indices = plan[got] if got < len(plan) else np.arange(0)  # an extra batch is wrong
        got += 1
        same = np.array_equal(images.numpy(), expected["images"][indices]) and np.array_equal(
            labels.numpy(), expected["labels"][indices]
        )
        report["wrong"] += int(not same)
    report["batches"] += got
    report["missing"] += max(0, len(plan) - got)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lakeio.testing.crowd")
    p.add_argument("lake")
    p.add_argument("disk", help="the shared disk tier's folder")
    p.add_argument("--disk-size", type=int, required=True)
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--world", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", required=True, help="where to write this reader's JSON report")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one reader of the crowd and write its report (exit 0 even when it found losses)."""
    args = _parse(argv)
    report = read_as_rank(args)
    Path(args.out).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
