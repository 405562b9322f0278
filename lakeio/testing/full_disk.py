"""A full disk under the disk tier and under an ingest's destination, on a real, small tmpfs.

Each trial runs in a child process in a mount namespace of its own (``unshare``), with a tmpfs
of a few MB mounted there, so nothing leaks into the host's mounts and the disk really fills: a
filler file leaves a few KB free, and diskcache's SQLite index, its value files and an ingest's
chunk files all meet ENOSPC for real.

- `full_disk_tier` (here): four tiers (`TIERS`) meet a full disk: it fills while one is open,
  one is opened on it, one finds a damaged copy on it, one runs out of inodes. Expected: every
  batch right (served from the origin), the failed writes counted, one `DiskTierWarning` per
  tier folder; once the filler is gone the tiers store again, every value they hold passes its
  checksum, and none has a value file its index does not know.
- `lakeio.testing.full_disk_ingest`: an append that does not fit onto a lake on the tmpfs.

Root runs ``unshare --mount``; anyone else ``unshare --user --map-root-user --mount``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import json
import os
import shutil
import sqlite3
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lakeio.testing.crowd import FIELDS, check_epoch, expected_fields
from lakeio.testing.tally import Tally
from lakeio.testing.tmpfs import fill, spawn_on_tmpfs, unfill

TIER_TMPFS = "size=4m,nr_inodes=4096"
BIG = 64 * 1024 * 1024  # a tier size far above the tmpfs: only the filesystem limits it


# -- the disk tier on a full disk ------------------------------------------------------------

TIERS = {  # the folder of each trial's tier, and what befalls it
    "tier-a": "the disk fills while the tier is open (a value file is cut short)",
    "tier-b": "the tier is opened on a full disk",
    "tier-c": "a damaged cached copy is found while the disk is full",
    "tier-d": "no inode is left for a new lock or value file",
}


def full_disk_tier(
    lake: str | os.PathLike, workdir: str | os.PathLike, seed: int = 0, timeout: float = 120.0
) -> dict[str, Any]:
    """One round of the tier trials (see `TIERS`), on a fresh tmpfs; the child's report."""
    mount = Path(workdir) / f"tier-{seed}"
    return spawn_on_tmpfs(
        mount, TIER_TMPFS, ["tier", os.fspath(lake), "--seed", str(seed)], timeout
    )


def tier_trials(lake: str, mount: str, seed: int) -> dict[str, Any]:
    """In the child, on the tmpfs: the four trials, then tiers a and c again with space back."""
    expected = expected_fields(open_without_tiers(lake))
    leave = int(np.random.default_rng(seed).integers(4096, 40960))  # less than a value file
    tiers = {name: _tier(lake, mount, name) for name in TIERS}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _cache_chunks(tiers["tier-a"], every=2)  # with room: half the lake is stored
        _cache_chunks(tiers["tier-c"], every=1)
        _cache_chunks(tiers["tier-d"], every=2)
        report: dict[str, Any] = {"left_free": leave}
        fill(mount, leave)
        report["tier-a"] = read_epochs(tiers["tier-a"](), expected, 2, seed)
        fill(mount)
        report["damaged"] = _damage_one_value(os.path.join(mount, "tier-c"))
        report["tier-c"] = read_epochs(tiers["tier-c"](), expected, 1, seed)
        report["tier-b"] = read_epochs(tiers["tier-b"], expected, 2, seed)
        unfill(mount)
        with _no_inodes_left(mount):
            report["tier-d"] = read_epochs(tiers["tier-d"](), expected, 1, seed)
        report["space_freed"] = {
            name: _space_freed(tiers[name], expected, os.path.join(mount, name))
            for name in ("tier-a", "tier-c")
        }
    report["warnings"] = {n: sum(f"{mount}/{n}:" in str(w.message) for w in caught) for n in TIERS}
    report["warnings"]["all"] = [f"{w.category.__name__}: {w.message}" for w in caught]
    return report


def _tier(lake: str, mount: str, name: str):
    """A function opening the lake over tier ``name`` (memory tier off: every read reaches it);
    tier-b's is the open itself, deferred until the disk is full."""
    import lakeio

    def reopen():
        cache = lakeio.Cache(memory=0, disk=os.path.join(mount, name), disk_size=BIG)
        return lakeio.open_dataset(lake, cache=cache)

    if name == "tier-b":
        return reopen
    ds = reopen()
    return lambda: ds


def open_without_tiers(lake: str):
    """The lake opened with no memory and no disk tier: every read from the origin."""
    import lakeio

    return lakeio.open_dataset(lake, cache=lakeio.Cache(memory=0, disk=""))


def _cache_chunks(open_ds, every: int) -> None:
    ds = open_ds()
    for chunk in range(0, len(ds.chunk_members()), every):
        ds.load_chunk(chunk, FIELDS)


def _damage_one_value(folder: str) -> str:
    """Flip a byte in the middle of one stored value file, in place (no space needed)."""
    victim = sorted(Path(folder).rglob("*.val"))[0]
    with open(victim, "r+b") as fh:
        fh.seek(victim.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x10]))
    return str(victim)


@contextlib.contextmanager
def _no_inodes_left(mount: str):
    """Empty files until the tmpfs has no inode left (its ``nr_inodes``); removed afterwards."""
    folder = Path(mount, "inodes")
    folder.mkdir()
    try:
        for i in itertools.count():
            (folder / str(i)).touch()
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    try:
        yield
    finally:
        shutil.rmtree(folder)


def _space_freed(open_ds, expected, folder: str) -> dict[str, Any]:
    """A tier again with space back: one epoch stores what is missing, a second must read
    nothing from the origin; then an audit of what the tier holds."""
    ds = open_ds()
    report = read_epochs(ds, expected, 1)
    second = read_epochs(ds, expected, 1)
    for name in ("batches", "wrong", "missing", "errors", "corrupt_refetched", "write_errors"):
        report[name] += second[name]
    report["origin_reads_last_epoch"] = second["origin_reads"]
    report["audit"] = audit_tier(folder)
    return report


def read_epochs(ds, expected, epochs: int = 2, seed: int = 0) -> dict[str, Any]:
    """Run the loader of ``ds`` (or of ``ds()``, opened here so that a failing open counts) for
    ``epochs``, checking every batch; the batches, the cache figures of these epochs, errors."""
    report: dict[str, Any] = {"batches": 0, "wrong": 0, "missing": 0, "errors": []}
    counted = ("origin_reads", "corrupt_refetched", "hits", "requests", "write_errors")
    report |= dict.fromkeys(counted, 0)
    try:
        ds = ds() if callable(ds) else ds
        before = _cache_figures(ds)
        with ds.loader(16, seed=seed, fields=FIELDS) as loader:
            for epoch in range(epochs):
                loader.set_epoch(epoch)
                check_epoch(loader, expected, report)
    except Exception as exc:  # any error is what this case looks for
        report["errors"].append(f"{type(exc).__name__}: {exc}")
        return report
    after = _cache_figures(ds)
    return report | {name: after[name] - before[name] for name in counted}


def _cache_figures(ds) -> dict[str, int]:
    """Origin reads, damaged copies refetched, and the disk tier's hits, requests, failed writes."""
    stats = ds.stats()
    disk = stats["disk"]
    return {
        "origin_reads": stats["origin_reads"],
        "corrupt_refetched": stats["corrupt_refetched"],
        **{name: disk.get(name, 0) for name in ("hits", "requests", "write_errors")},
    }


def audit_tier(folder: str) -> dict[str, Any]:
    """What a tier folder holds: values that fail their checksum, value files its index does not
    know (a write that failed midway, left behind), and values it cannot read back."""
    from lakeio.cache.disk import DiskTier
    from lakeio.errors import CorruptChunkError
    from lakeio.format.chunks import verify_checksum

    with contextlib.closing(sqlite3.connect(f"file:{folder}/cache.db?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT key, filename FROM Cache").fetchall()
    known = {os.path.join(folder, name) for _, name in rows if name}
    files = {str(p) for p in Path(folder).rglob("*.val")}
    tier = DiskTier(folder, BIG)
    bad = unreadable = 0
    for key, _ in rows:
        value = tier.get(key)
        if value is None:
            unreadable += 1
            continue
        try:
            verify_checksum(value, key)
        except CorruptChunkError:
            bad += 1
    tier.close()
    return {"values": len(rows), "bad_values": bad, "unreadable": unreadable,
            "orphan_files": len(files - known)}  # fmt: skip


def tier_tally(report: dict[str, Any]) -> Tally:
    """Four trials a round, one per tier of `TIERS`: detected = its failed writes counted and
    one warning; recovered = every batch right (and, for a and c, clean once space is back)."""
    if "warnings" not in report:  # the child itself failed
        return Tally("full disk: cache tier", 4, 4, 0, 0, 4, [str(report)[:2000]])
    freed = report["space_freed"]
    detected = sum(
        report["warnings"][name] == 1 and report[name].get("write_errors", 0) > 0 for name in TIERS
    )
    recovered = lost = 0
    for name in TIERS:
        losses = _losses(report[name]) + (_losses(freed[name]) if name in freed else 0)
        clean = name not in freed or _clean(freed[name], repaired=int(name == "tier-c"))
        recovered += int(losses == 0 and clean)
        lost += losses
    lost += sum(f["audit"]["bad_values"] for f in freed.values())
    notes = [f"{n}: {json.dumps(_figures(report[n]))}" for n in TIERS]
    notes += [f"{n} once space was freed: {json.dumps(_figures(f))}" for n, f in freed.items()]
    notes.append(f"warnings: {json.dumps(report['warnings']['all'])}")
    return Tally("full disk: cache tier", len(TIERS), len(TIERS), detected, recovered, lost, notes)


def _clean(freed: dict[str, Any], repaired: int) -> bool:
    """Nothing half-written served or left: the audit is clean, at most the deliberately
    damaged copy (if any) was refetched, and the second epoch was all disk hits. (Whether the
    damaged copy is still there once space is back depends on whether SQLite could drop its
    row on the full disk, where its good copy then fits in the damaged one's place: it could,
    once in four runs of the suite.)"""
    audit = freed["audit"]
    return (
        audit["bad_values"] == audit["orphan_files"] == audit["unreadable"] == 0
        and freed["corrupt_refetched"] <= repaired
        and freed["origin_reads_last_epoch"] == 0
        and freed["write_errors"] == 0
    )


def _losses(phase: dict[str, Any]) -> int:
    return phase["wrong"] + phase["missing"] + len(phase["errors"])


def _figures(phase: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in phase.items() if k != "errors"} | {"errors": phase["errors"][:1]}


def run_full_disk_tier(
    lake: str | os.PathLike, workdir: str | os.PathLike, trials: int = 1, seed: int = 0
) -> Tally:
    """``trials`` rounds of the tier trials (each on a fresh tmpfs, its own seed) as a Tally."""
    tally = Tally("full disk: cache tier")
    for round_ in range(trials):
        tally = tally.add(tier_tally(full_disk_tier(lake, workdir, seed + round_)))
    return tally


def main(argv: list[str] | None = None) -> int:
    """The child: run one kind of trial on the tmpfs (already mounted) and write its report."""
    p = argparse.ArgumentParser(prog="python -m lakeio.testing.full_disk")
    p.add_argument("kind", choices=("tier", "ingest"))
    p.add_argument("subject", help="the lake (tier) or the prepared ingest, as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--leave", type=int, default=0, help="bytes left free (ingest)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    mount = str(Path(args.out).with_suffix(""))
    if args.kind == "tier":
        report = tier_trials(args.subject, mount, args.seed)
    else:
        from lakeio.testing.full_disk_ingest import ingest_trial

        report = ingest_trial(json.loads(args.subject), mount, args.leave)
    Path(args.out).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
