"""The "kill" reliability case: ``kill -9`` of an appending ingest at seeded random moments.

Each trial copies a one-version lake, starts ``lakeio ingest SECOND LAKE --append`` in a
process group of its own (the CLI, its LocalCluster and its workers), kills the whole group
with SIGKILL at a random moment of the run, reruns the same command, and compares the lake
with one appended without interruption, chunk file by chunk file. Throughout, a reader process
opens the lake and reads random samples in a loop; every sample it sees must equal the
reference lake's sample of the same source path (never an error, never a torn version).

Run as ``python -m lakeio.testing.kill reader LAKE REFERENCE STOPFILE OUT.json`` it is that
reader.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from lakeio.testing.tally import Tally

INGEST_OPTIONS = ("--workers", "1", "--chunk-samples", "4", "--size", "32x32", "--quiet")


def _lakeio() -> list[str]:
    return [str(Path(sys.executable).with_name("lakeio"))]


def _ingest(src: Path, lake: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*_lakeio(), "ingest", str(src), str(lake), *extra, *INGEST_OPTIONS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen, what: str) -> None:
    _, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {err.decode()[-2000:]}")


def lake_files(lake: Path) -> dict[str, bytes]:
    """The committed lake, file by file: every chunk and array metadata of every segment the
    newest manifest lists (temp files of killed writes included: a rerun must clear them), and
    that segment list. Left out: each segment's group zarr.json, whose summary holds the
    seconds the task took."""
    import lakeio

    ds = lakeio.open_dataset(lake)
    files = {"segments": json.dumps([s.id for s in ds.manifest.segments]).encode()}
    for seg in ds.manifest.segments:
        root = lake / "segments" / seg.id
        for path in sorted(root.rglob("*")):
            if path.is_file() and path != root / "zarr.json":
                files[str(path.relative_to(lake))] = path.read_bytes()
    return files


def run_kill_trials(first: Path, second: Path, workdir: Path, trials: int, seed: int = 0) -> Tally:
    """``trials`` kills of an append of ``second`` onto a lake of ``first`` (image folders)."""
    reference, base = workdir / "reference", workdir / "base"
    _finish(_ingest(first, reference), "reference ingest")
    _finish(_ingest(first, base), "base ingest")
    writing, span = _time_append(second, reference)
    want = lake_files(reference)
    rng = random.Random(seed)
    tally = Tally("kill -9 of an appending ingest")
    for trial in range(trials):
        delay = rng.uniform(0, span - writing)  # after the first segment, up to the commit
        outcome = _one_kill(base, second, reference, workdir / f"trial{trial}", want, delay)
        tally = tally.add(outcome)
    return tally


def _time_append(second: Path, lake: Path) -> tuple[float, float]:
    """Run the append once, watching it: (seconds until its first segment was complete,
    seconds until it finished). Kills are then aimed at the part of the run that writes."""
    before = _complete_segments(lake)
    started, writing = time.monotonic(), None
    proc = _ingest(second, lake, "--append")
    while proc.poll() is None:
        if writing is None and _complete_segments(lake) > before:
            writing = time.monotonic() - started
        time.sleep(0.02)
    span = time.monotonic() - started
    _finish(proc, "reference append")
    return (writing if writing is not None else 0.5 * span), span


def _one_kill(base, second, reference, lake, want, delay: float) -> Tally:
    shutil.copytree(base, lake)
    stop, out = lake.with_suffix(".stop"), lake.with_suffix(".reads.json")
    reader = subprocess.Popen(
        [sys.executable, "-m", "lakeio.testing.kill", "reader", str(lake), str(reference),
         str(stop), str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        before = _complete_segments(base)
        proc = _ingest(second, lake, "--append")
        while proc.poll() is None and _complete_segments(lake) == before:
            time.sleep(0.01)  # the start-up (cluster, listing, probing) is not the target
        time.sleep(delay)
        killed = proc.poll() is None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        midway = _complete_segments(lake) - before  # written, not committed
        _finish(_ingest(second, lake, "--append"), "rerun after the kill")
        time.sleep(0.3)  # the reader sees the finished lake too
    finally:
        stop.touch()
        _, reader_err = reader.communicate(timeout=120)
    reads = json.loads(out.read_text()) if out.exists() else {"error": reader_err.decode()[-500:]}
    same = lake_files(lake) == want
    ok = same and not reads.get("error") and reads.get("torn", 1) == 0
    notes = [f"{lake.name}: killed {delay:.2f}s into the writing, {midway} segments written, "
             f"reader {reads}, same lake {same}"]  # fmt: skip
    return Tally(
        "kill -9 of an appending ingest", trials=1, injected=int(killed),
        detected=int(killed and midway > 0), recovered=int(killed and ok), lost=int(not ok),
        notes=notes,
    )  # fmt: skip


def _complete_segments(lake: Path) -> int:
    from lakeio.format.location import Location
    from lakeio.format.segment import read_segment_summary

    folder, loc = lake / "segments", Location.of(lake)
    names = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    return sum(read_segment_summary(loc, name) is not None for name in names)


def read_while_killed(lake: Path, reference: Path, stop: Path) -> dict:
    """Open ``lake`` and read random samples until ``stop`` exists; each must equal the
    reference's sample of the same path, and the lake must have one of its committed sizes."""
    import lakeio

    ref = lakeio.open_dataset(reference)
    ref_paths = ref.to_dask()["paths"].compute().tolist()
    where = {p: i for i, p in enumerate(ref_paths)}
    sizes = {len(lakeio.open_dataset(reference, version=v)) for v in (1, 2)}
    rng = random.Random(0)
    counts = {"opens": 0, "samples": 0, "torn": 0, "versions": []}
    while not stop.exists():
        ds = lakeio.open_dataset(lake, cache=lakeio.Cache(memory=0))
        counts["opens"] += 1
        if len(ds) not in sizes:
            counts["torn"] += 1
        if ds.manifest.version not in counts["versions"]:
            counts["versions"].append(ds.manifest.version)
        for i in rng.sample(range(len(ds)), 8):
            got = ds.sample(i, ("images", "labels", "paths"))
            expected = ref.sample(where[got["paths"]], ("images", "labels"))
            same = (got["images"] == expected["images"]).all() and got["labels"] == expected[
                "labels"
            ]
            counts["torn"] += int(not same)
            counts["samples"] += 1
    return counts


def _reader_main(argv: list[str]) -> None:
    lake, reference, stop, out = map(Path, argv)
    try:
        counts = read_while_killed(lake, reference, stop)
    except Exception as exc:  # reported to the trial, which counts it as a loss
        counts = {"error": f"{type(exc).__name__}: {exc}"}
    out.write_text(json.dumps(counts))


if __name__ == "__main__" and sys.argv[1:2] == ["reader"]:
    _reader_main(sys.argv[2:])
