"""An ingest whose destination fills up, on a real, small tmpfs (see `lakeio.testing.full_disk`).

A lake's v1 is copied onto a fresh tmpfs, a filler file leaves less room than the append needs,
and ``lakeio ingest --append`` runs. Expected: one clear line from the CLI (the destination,
"full", nothing committed), v1 intact and verified, no ``*.partial`` file; once the filler is
gone the same command resumes and commits a v2 equal to an uninterrupted append (made
beforehand on the ordinary disk).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lakeio.testing.tally import Tally
from lakeio.testing.tmpfs import fill, spawn_on_tmpfs, unfill

CLI_OPTIONS = ["--workers", "1", "--chunk-samples", "16", "--quiet"]


def cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """The ``lakeio`` command line in a process of its own."""
    command = [sys.executable, "-m", "lakeio.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def prepare_ingest(workdir: str | os.PathLike, v1: int = 48, v2: int = 400) -> dict[str, Any]:
    """Two image folders, v1 of a reference lake kept aside, and that lake after an
    uninterrupted append of the second folder (what a resumed append must equal)."""
    from lakeio.testing.images import write_image_folder

    work = Path(workdir)
    first, second = work / "src-v1", work / "src-v2"
    write_image_folder(first, v1, size=(32, 32), fmt="png", seed=1, photos=("coffee", "rocket"))
    write_image_folder(second, v2, size=(32, 32), fmt="png", seed=2, photos=("chelsea", "coffee"))
    reference, snapshot = work / "reference", work / "reference-v1"
    for args in ([first, reference], [second, reference, "--append"]):
        done = cli("ingest", *map(str, args), *CLI_OPTIONS)
        if done.returncode != 0:
            raise RuntimeError(f"preparing the reference lake failed: {done.stderr[-2000:]}")
        if not snapshot.exists():  # v1 as it was, copied onto each trial's tmpfs
            shutil.copytree(reference, snapshot)
    return {"first": str(first), "second": str(second), "reference": str(reference),
            "snapshot": str(snapshot)}  # fmt: skip


def full_disk_ingest(
    prepared: dict[str, Any], workdir: str | os.PathLike, seed: int = 0, timeout: float = 180.0
) -> dict[str, Any]:
    """One trial (see the module docstring), on a fresh tmpfs; the child's report."""
    import lakeio

    ref = lakeio.open_dataset(prepared["reference"])
    v1 = ref.manifest.segments[: len(lakeio.open_dataset(prepared["snapshot"]).manifest.segments)]
    v1_bytes = sum(s.stored_bytes for s in v1)
    append_bytes = sum(s.stored_bytes for s in ref.manifest.segments) - v1_bytes
    leave = int(append_bytes * np.random.default_rng(seed).uniform(0.15, 0.6))
    size = f"size={(v1_bytes + append_bytes) // (1 << 20) * 2 + 2}m"
    mount = Path(workdir) / f"ingest-{seed}"
    args = ["ingest", json.dumps(prepared), "--leave", str(leave)]
    report = spawn_on_tmpfs(mount, size, args, timeout)
    return report | {"lake": str(mount / "lake"), "left_free": leave, "append_bytes": append_bytes}


def ingest_trial(prepared: dict[str, Any], mount: str, leave: int) -> dict[str, Any]:
    """In the child, on the tmpfs: v1 there, the disk filled, the append, space freed, again."""
    lake = os.path.join(mount, "lake")
    shutil.copytree(prepared["snapshot"], lake)
    fill(mount, leave)
    failed = cli("ingest", prepared["second"], lake, "--append", *CLI_OPTIONS)
    report: dict[str, Any] = {"failed": _outcome(failed)}
    report["after_failure"] = lake_state(lake, prepared["reference"], version=1)
    unfill(mount)
    resumed = cli("ingest", prepared["second"], lake, "--append", *CLI_OPTIONS)
    report["resumed"] = _outcome(resumed)
    report["after_resume"] = lake_state(lake, prepared["reference"], version=2)
    return report


def _outcome(done: subprocess.CompletedProcess) -> dict[str, Any]:
    errors = [line for line in done.stderr.splitlines() if line.startswith("lakeio: error:")]
    return {"returncode": done.returncode, "error_lines": errors,
            "traceback": "Traceback" in done.stderr, "stdout": done.stdout[-1000:]}  # fmt: skip


def lake_state(lake: str, reference: str, version: int) -> dict[str, Any]:
    """The lake's versions, whether it verifies, and whether the given version equals the
    reference's (segments and every field's values); the ``*.partial`` files under it."""
    import lakeio
    from lakeio.verify import verify_lake

    manifests = sorted(p.name for p in Path(lake, "_lakeio", "manifests").glob("v*.json"))
    state: dict[str, Any] = {"manifests": manifests}
    state["partials"] = sum(1 for _ in Path(lake).rglob("*.partial"))
    try:
        ds = lakeio.open_dataset(lake)
        ref = lakeio.open_dataset(reference, version=version)
        state["version"] = ds.version
        state["verified"] = verify_lake(ds).ok
        state["same_segments"] = [s.id for s in ds.manifest.segments] == [
            s.id for s in ref.manifest.segments
        ]
        ours, theirs = ds.to_dask(), ref.to_dask()
        state["same_values"] = all(
            np.array_equal(ours[f].compute(), theirs[f].compute()) for f in ref.fields
        )
    except Exception as exc:
        state["error"] = f"{type(exc).__name__}: {exc}"
    return state


def ingest_tally(report: dict[str, Any]) -> Tally:
    """One trial: detected = one clear line; recovered = v1 intact, no debris, v2 as expected."""
    if report.get("errors"):
        return Tally("full disk: ingest", 1, 1, 0, 0, 1, [str(report["errors"])[:2000]])
    failed, before, after = report["failed"], report["after_failure"], report["after_resume"]
    line = failed["error_lines"][0] if len(failed["error_lines"]) == 1 else ""
    clear = "the destination is full" in line and "Nothing was committed" in line
    detected = failed["returncode"] == 1 and clear and report["lake"] in line
    detected = detected and not failed["traceback"]
    intact = before.get("version") == 1 and before.get("verified") and before.get("same_values")
    resumed = report["resumed"]["returncode"] == 0 and after.get("version") == 2
    equal = bool(after.get("verified") and after.get("same_segments") and after.get("same_values"))
    debris = before["partials"] + after["partials"]
    recovered = int(bool(intact and resumed and equal) and debris == 0)
    lost = int(not intact) + int(resumed and not equal)
    notes = [
        f"left {report['left_free']:,} B free for a {report['append_bytes']:,} B append; "
        f"error: {line or failed['error_lines']}; partials {debris}",
        f"after failure: {json.dumps(before)}; after resume: {json.dumps(after)}",
    ]
    return Tally("full disk: ingest", 1, 1, int(detected), recovered, lost, notes)


def run_full_disk_ingest(workdir: str | os.PathLike, trials: int = 1, seed: int = 0) -> Tally:
    """``trials`` ingest trials (each on a fresh tmpfs, leaving a different amount free)."""
    prepared = prepare_ingest(Path(workdir) / "prepared")
    tally = Tally("full disk: ingest")
    for trial in range(trials):
        tally = tally.add(ingest_tally(full_disk_ingest(prepared, workdir, seed + trial)))
    return tally
