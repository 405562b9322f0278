"""The reliability suite's cases with many more trials than `make test` runs.

Run: .venv/bin/python benchmarks/soak.py [--scale 1] [--out docs/reliability.md]

Each case is the function in `lakeio.testing` that tests/reliability/ calls with a few trials:
real processes, real files, faults injected and counted. The table it writes has one row per
case: trials, faults injected, detected (an error naming the object, a warning, a counted
refetch), recovered (the work went on, or a rerun completed it, with every byte right) and lost
(data missing or wrong). The full-disk cases need root (they mount small tmpfs filesystems in a
private mount namespace); as a non-root user they are left out of the table, saying so.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lakeio.testing.tally import Tally

HEADER = "| case | trials | injected | detected | recovered | lost |\n|---|---|---|---|---|---|"


def _kill(work: Path, scale: float) -> list[Tally]:
    from lakeio.testing.images import write_image_folder
    from lakeio.testing.kill import run_kill_trials

    first, second = work / "first", work / "second"
    write_image_folder(first, 40, size=(32, 32), fmt="png", seed=1, photos=("coffee", "rocket"))
    write_image_folder(second, 400, size=(32, 32), fmt="jpg", seed=2, photos=("chelsea", "coffee"))
    return [run_kill_trials(first, second, work, trials=max(20, int(20 * scale)), seed=1)]


def _corrupt(work: Path, scale: float) -> list[Tally]:
    from lakeio.testing.corrupt import make_lake, run_corrupt_trials

    columns = make_lake(work / "lake")
    return run_corrupt_trials(work / "lake", columns, work, trials=int(50 * scale), seed=1)


def _source_faults(work: Path, scale: float) -> list[Tally]:
    from lakeio.testing.faults import run_source_fault_trials
    from lakeio.testing.images import write_image_folder

    write_image_folder(work / "src", 120, size=(24, 24), fmt="jpg", seed=4)
    return [run_source_fault_trials(work / "src", work, trials=int(20 * scale), seed=1)]


def _crowd(work: Path, scale: float) -> list[Tally]:
    from lakeio.testing.corrupt import make_lake
    from lakeio.testing.crowd import run_crowd

    make_lake(work / "lake")
    return [run_crowd(work / "lake", work, processes=4, epochs=max(3, int(10 * scale)), seed=1)]


def _full_disk(work: Path, scale: float) -> list[Tally]:
    from lakeio.testing.corrupt import make_lake
    from lakeio.testing.full_disk import run_full_disk_tier
    from lakeio.testing.full_disk_ingest import run_full_disk_ingest

    make_lake(work / "lake")
    trials = max(3, int(10 * scale))
    return [
        run_full_disk_tier(work / "lake", work / "tier", trials=trials, seed=1),
        run_full_disk_ingest(work / "ingest", trials=trials, seed=1),
    ]


def _fuzz(work: Path, scale: float) -> list[Tally]:
    from lakeio.testing.fuzzing import run_decode_fuzz

    return [run_decode_fuzz(trials=int(2000 * scale), seed=1)]


def _churn(work: Path, scale: float) -> list[Tally]:
    from lakeio.testing.churn import EVENTS, run_churn_trials

    return [run_churn_trials(work, trials=max(len(EVENTS), int(20 * scale)), seed=1)]


CASES: dict[str, Callable[[Path, float], list[Tally]]] = {
    "kill": _kill,
    "corrupt": _corrupt,
    "source faults": _source_faults,
    "crowd": _crowd,
    "full disk": _full_disk,
    "fuzz": _fuzz,
    "churn": _churn,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="trials × this (default 1)")
    p.add_argument("--only", nargs="*", choices=sorted(CASES), help="run only these cases")
    p.add_argument("--out", help="write the Markdown table here (e.g. docs/reliability.md)")
    args = p.parse_args()
    rows, notes, seconds = [], [], {}
    for name, case in CASES.items():
        if args.only and name not in args.only:
            continue
        if name == "full disk" and os.geteuid() != 0:
            notes.append("full disk: left out (mounting a tmpfs needs root)")
            continue
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"soak-{name.replace(' ', '-')}-") as tmp:
            tallies = case(Path(tmp), args.scale)
        seconds[name] = time.monotonic() - started
        for tally in tallies:
            rows.append(tally.row())
            notes += [f"{tally.case}: {n}" for n in tally.notes if tally.lost]
            print(tally.row(), f"({seconds[name]:.0f} s)", flush=True)
    table = "\n".join([HEADER, *rows])
    print(table)
    if args.out:
        _append(Path(args.out), table, notes, seconds)
    lost = sum(int(r.rstrip(" |").rsplit("|", 1)[1]) for r in rows)
    sys.exit(1 if lost else 0)


def _append(out: Path, table: str, notes: list[str], seconds: dict) -> None:
    """Add this run as a dated section at the end of ``out``, with the command that made it."""
    command = " ".join([".venv/bin/python", "benchmarks/soak.py", *sys.argv[1:]])
    spent = ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items())
    section = [
        f"### Soak run of {datetime.date.today().isoformat()}",
        "",
        f"`{command}` on a {os.cpu_count()}-core {platform.machine()} machine "
        f"({sum(seconds.values()) / 60:.1f} min: {spent}).",
        "",
        table,
        "",
        *(f"- {note}" for note in notes),
    ]
    previous = out.read_text() if out.exists() else ""
    out.write_text(previous.rstrip("\n") + "\n\n" + "\n".join(section).rstrip() + "\n")


if __name__ == "__main__":
    main()
