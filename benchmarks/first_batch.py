"""A loader's first batch on a lake of millions of samples, each measured in a fresh process.

Run: .venv/bin/python benchmarks/first_batch.py [--samples 1.4e7] [--classes 21841]
     [--repeats 8] [--also DIR] [--out FILE]

Issue 12's target: at 14 M samples in 21,841 classes, a loader's first batch within 2 s of
``open_dataset``. What that costs is the metadata, the epoch's plan (every sample's place and
chunk) and the first window's chunks; not how the lake's files were written. So the lake is
built quickly:

1. one real ingest (``lakeio.ingest``) of ``--part`` samples of 1x1x3 images with labels
   spread over ``--classes`` classes, ``chunk_samples=27`` (a 224x224 lake's), as
   ``benchmarks/metadata.py`` builds its lakes;
2. that part's segment folders hard-linked under new segment ids until the lake holds
   ``--samples`` (the only step that is not a public entry point: the format module's
   ``commit_manifest`` publishes one version that lists them all, with the same fragments and
   class counts an append would give).

Then ``--repeats`` fresh processes each run ``benchmarks/metadata.py``'s open probe: ``import
lakeio`` and torch, ``open_dataset``, then ``next(iter(ds.loader(--batch-size)))``; the figure
is seconds from open's return to the first batch (the median, the range, and every run).

``--also DIR`` measures a second lakeio source tree the same way (e.g. ``git worktree add
/tmp/old <commit>``), its probes alternating with this tree's so both meet the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from metadata import (  # noqa: E402  (a sibling script, not a package)
    PROBE_MARK,
    class_names,
    count,
    in_process_client,
    median,
    payload,
    quiet,
)


def build(lake: str, samples: int, classes: int, part: int, chunk_samples: int) -> dict[str, Any]:
    """The lake: one real ingest of ``part`` samples, then hard-linked copies of its segments."""
    import lakeio
    from lakeio.format.location import Location
    from lakeio.format.manifest import SegmentEntry, commit_manifest, read_manifest

    t0 = time.perf_counter()
    part = min(part, samples)
    images, labels = payload(0, part, samples, classes, "sorted")
    with in_process_client() as client:
        lakeio.ingest(
            images, lake, labels=labels, classes=class_names(classes), cluster=client,
            chunk_samples=chunk_samples, progress=False, echo=quiet,
        )  # fmt: skip
    ingest_s = time.perf_counter() - t0
    loc = Location.of(lake)
    base = read_manifest(loc)
    segments, total, copy = list(base.segments), part, 0
    while total < samples:
        copy += 1
        for segment in base.segments:
            if total >= samples:
                break
            new_id = f"{segment.id}-copy{copy}"
            link_tree(os.path.join(lake, segment.key), os.path.join(lake, "segments", new_id))
            segments.append(SegmentEntry(new_id, segment.samples, segment.class_counts))
            total += segment.samples
    commit_manifest(loc, base.with_segments(segments, {"op": "append", "by": "first_batch.py"}))
    return {
        "samples": total,
        "segments": len(segments),
        "chunks": sum(-(-s.samples // chunk_samples) for s in segments),
        "ingest_s": ingest_s,
        "build_s": time.perf_counter() - t0,
    }


def link_tree(source: str, target: str) -> None:
    """``target``: the folder tree of ``source``, each file a hard link (``cp -al``)."""
    for folder, _, files in os.walk(source):
        into = os.path.join(target, os.path.relpath(folder, source))
        os.makedirs(into, exist_ok=True)
        for name in files:
            os.link(os.path.join(folder, name), os.path.join(into, name))


def probe(lake: str, batch: int, src: str | None) -> dict[str, Any]:
    """One fresh process: open the lake, take the first batch (``metadata.py``'s open probe),
    importing lakeio from ``src`` when given."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    args = json.dumps({"lake": lake, "batch": batch})
    cmd = [sys.executable, str(HERE / "metadata.py"), "--probe", "open", args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(PROBE_MARK):
            return json.loads(line[len(PROBE_MARK) :])
    raise RuntimeError(f"probe failed (exit {done.returncode}):\n{done.stderr[-4000:]}")


def kernel_setting(name: str) -> str:
    """A transparent-huge-page setting of this kernel (what numpy's large arrays meet)."""
    try:
        return Path(f"/sys/kernel/mm/transparent_hugepage/{name}").read_text().strip()
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=count, default=14_000_000)
    p.add_argument("--classes", type=count, default=21841)
    p.add_argument("--part", type=count, default=218_700, help="samples of the real ingest")
    p.add_argument("--chunk-samples", type=count, default=27)
    p.add_argument("--batch-size", type=count, default=256)
    p.add_argument("--repeats", type=count, default=8, help="fresh processes per tree")
    p.add_argument("--also", metavar="DIR", help="another lakeio source tree, measured beside")
    p.add_argument("--workdir", help="where the lake is built (default: a temporary folder)")
    p.add_argument("--out", metavar="FILE", help="append the Markdown and the command here")
    ns = p.parse_args(argv)
    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="lakeio-first-batch-", dir=ns.workdir)
    trees = {"this tree": None} | ({f"`{ns.also}`": ns.also} if ns.also else {})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    try:
        lake = os.path.join(workdir, "lake")
        built = build(lake, ns.samples, ns.classes, ns.part, ns.chunk_samples)
        print(f"built {built['samples']:,} samples in {built['build_s']:.0f} s", file=sys.stderr)
        for i in range(ns.repeats):
            for name, src in trees.items():
                runs[name].append(probe(lake, ns.batch_size, src))
                got = runs[name][-1]
                print(f"{i + 1}/{ns.repeats} {name}: open {got['open_s']:.3f} s, first batch "
                      f"{got['first_batch_s']:.3f} s", file=sys.stderr)  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines = [
        f"Lake: {built['samples']:,} samples of 1x1x3 in {ns.classes:,} classes, "
        f"{built['segments']:,} segments, {built['chunks']:,} chunks of {ns.chunk_samples} "
        f"(built in {built['build_s']:.0f} s). Transparent huge pages: enabled "
        f"`{kernel_setting('enabled')}`, defrag `{kernel_setting('defrag')}`.",
        "",
        f"| lakeio | open_dataset (median) | first batch: median | min - max | "
        f"runs (batch {ns.batch_size}) |",
        "|---|---|---|---|---|",
    ]
    for name, got in runs.items():
        first = [r["first_batch_s"] for r in got]
        lines.append(
            f"| {name} | {median([r['open_s'] for r in got]):.3f} s | {median(first):.2f} s | "
            f"{min(first):.2f} - {max(first):.2f} s | "
            + ", ".join(f"{s:.2f}" for s in first) + " |"
        )  # fmt: skip
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    text = "\n".join(lines) + f"\n\nCommand: `{command}` ({time.perf_counter() - started:.0f} s)\n"
    print(text)
    if ns.out:
        with open(ns.out, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
