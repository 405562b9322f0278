"""What a lake's metadata costs as the lake grows: open, append, `lakeio info`, first batch.

Run: .venv/bin/python benchmarks/metadata.py [--sizes 1e4,1e5,3e5] [--plot growth.png] [--out FILE]

Issue 12 asks for a metadata format under which a lake of 14 M images opens in about a second.
This script measures the format lakeio writes today, and a later format the same way: the real
lakes are built and read only through public entry points (``lakeio.ingest(..., mode="append")``,
``lakeio.open_dataset``, the ``lakeio info`` command, ``ds.loader(...)``), and every figure
about bytes is counted on the files themselves, not taken from format internals.

Two parts:

1. **Real lakes** of 1x1x3 uint8 images (real metadata, almost no pixels), ``--classes`` classes,
   built by up to ``--appends`` appends with ``chunk_samples=27`` (224x224's default), so that
   segments and their count grow as in a real 224x224 lake. An append of fewer than
   ``--min-append`` samples (3,456 = 16 ingest tasks x 8 chunks x 27) would make segments
   smaller than a real lake's, and so more of them: small lakes are built with fewer appends
   (1e4 samples: 2 appends), and the table says how many. Labels run sorted by class (as an
   ImageFolder lists files), or hashed with ``--labels shuffled``. Per lake:

   - ``open_dataset`` seconds: median over ``--repeats`` fresh processes (the call alone, after
     ``import lakeio``; files are in the page cache, as on a machine that just wrote them);
   - metadata read on open: every file inside the lake that the opening process opens for
     reading, counted at its full size, caught with a Python audit hook on the ``open`` event
     (``builtins.open``, ``io.open``, ``pathlib``, ``os.open``: fsspec and zarr local stores
     read through these). Exact for whole-file reads (v1 reads its manifest whole); an upper
     bound for a reader that reads ranges. The read() bytes of the whole process during the
     call (/proc/self/io ``rchar``, which also counts modules imported on the way) are shown
     beside it as a cross-check;
   - the peak resident memory added by the call (VmHWM reset before it);
   - one further append of ``--append-samples`` samples (fresh process, Dask client started
     before the clock): seconds of the ``ingest`` call, and the metadata it writes and reads:
     files created or changed outside the new segment folders (a folder the append created that
     holds a Zarr array), by a snapshot of the lake before and after, and reads caught as above;
   - ``lakeio info`` seconds: the whole command, start-up included (``lakeio codecs``, which
     touches no lake, is given under the table; the smallest lake's row is the better floor);
   - seconds from the end of ``open_dataset`` to the first batch of ``ds.loader(256)`` (torch
     imported before the clock, as a training script has it).

2. **Synthetic manifests** (format version 1 only; no pixels, nothing but the manifest on disk),
   made with the format module's own classes, because building 14 M samples for real through v1
   is out of reach: manifest bytes, ``commit_manifest`` seconds, ``read_manifest`` seconds and
   ``open_dataset`` seconds on the manifest-only lake (in process), the whole ``lakeio info``
   command on it (info reads no chunk), and the parse's peak memory.
   Segments are cut as the ingest planner cuts them for the same appends (216 samples at 224x224
   once an append is large). A manifest larger than ``--max-manifest-mb`` is not built whole:
   prefixes of the same lake (its first 1, M/4, M/2 and M segments: the same class list, the
   same segments) are measured and each figure is extrapolated linearly in the segment count,
   which v1 is (dense per-segment class counts; the fits' worst residuals are reported). Such
   rows say "extrapolated", and whether v1's own manifest size limit would refuse to read them.
   Where this part cannot build a v1 manifest (a later format's module), it says so and is
   skipped: part 1 measures any format.

Lakes live in a local temporary folder (``--workdir``), removed at the end unless ``--keep``.
The defaults take about 7 minutes on 2 shared cores; ``--sizes 1.28e6`` builds an ImageNet-1k
sized lake (5,926 segments; under v1 its 100 appends take some 15-20 minutes and leave about
2 GB of manifests, since each append rewrites the whole list).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

PROBE_MARK = "METADATA-PROBE "
FULL_SEGMENT = 16 * 8 * 27  # an append this large fills 16 tasks with 8 chunks of 27 samples
SIZE_224 = (224, 224, 3)  # the synthetic manifests describe a real 224x224 lake
JPEG_BYTES = 110_000  # a typical ImageNet JPEG, for the synthetic source_bytes figures
TARGETS = {"open_s": 1.0, "read_bytes": 20e6, "append_written": 1e6}  # issue 12, at 14 M samples


# -- small helpers ------------------------------------------------------------------------------
def count(text: str) -> int:
    """``1e4``, ``1.28e6``, ``300000`` or ``300_000`` → an int (sizes read best in e-notation)."""
    value = float(text.replace("_", ""))
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(value)


@dataclass(frozen=True)
class Size:
    """One lake size: samples and classes (``N`` or ``N:K`` on the command line)."""

    samples: int
    classes: int


def sizes(text: str, classes: int) -> list[Size]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        n, _, k = part.partition(":")
        out.append(Size(count(n), count(k) if k else classes))
    return out


def human(n: float | None) -> str:
    """Bytes for a table: 43.1 MB (decimal units, as the issue states its targets)."""
    if n is None:
        return "–"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def secs(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.3f}" if s < 1 else f"{s:.3g}" if s < 100 else f"{s:,.0f}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def class_names(classes: int) -> list[str]:
    return [f"n{i:08d}" for i in range(classes)]  # ImageNet synset ids are this long


def append_sizes(samples: int, appends: int, min_append: int) -> list[int]:
    """Samples per append: ``appends`` near-equal parts, fewer if parts would be < min_append."""
    parts = max(1, min(appends, samples // max(1, min_append)))
    base, extra = divmod(samples, parts)
    return [base + (i < extra) for i in range(parts)]


def labels_of(index: np.ndarray, samples: int, classes: int, mode: str) -> np.ndarray:
    """Labels of global sample numbers: sorted runs of one class (ImageFolder order) or hashed."""
    if mode == "sorted":
        return (index * classes // samples) % classes
    return ((index * 2654435761) % 2**32) % classes  # Knuth's multiplicative hash


def payload(start: int, n: int, samples: int, classes: int, mode: str):
    """(images, labels) of samples start..start+n: 1x1x3 pixels spelling the sample number, so
    no two appends hold the same bytes (ingest would call a repeated one up to date)."""
    index = np.arange(start, start + n, dtype=np.int64)
    pixels = np.stack([index & 255, (index >> 8) & 255, (index >> 16) & 255], axis=-1)
    images = pixels.astype(np.uint8).reshape(n, 1, 1, 3)
    return images, labels_of(index, samples, classes, mode).astype(np.int64)


def quiet(*_: object) -> None:
    """``echo=`` for ingest: no dashboard line per append."""


@contextlib.contextmanager
def in_process_client() -> Iterator[Any]:
    """A threads-only Dask client, started once: ingest's own would start a cluster per call."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        yield client


# -- what a process reads: an audit hook on "open" -----------------------------------------------
class OpenAudit:
    """Files under ``root`` this process opens for reading, with their sizes, while active."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root) + os.sep
        self.active = False
        self.reads: list[tuple[str, int]] = []
        sys.addaudithook(self._hook)  # hooks cannot be removed: `active` switches it

    def _hook(self, event: str, args: tuple) -> None:
        if event != "open" or not self.active:
            return
        path, _mode, flags = args
        if path is None or isinstance(path, int) or (flags or 0) & os.O_ACCMODE == os.O_WRONLY:
            return
        full = os.path.abspath(os.fsdecode(path))
        if full.startswith(self.root):
            with contextlib.suppress(OSError):  # an open about to fail reads nothing
                self.reads.append((full, os.stat(full).st_size))

    @contextlib.contextmanager
    def watching(self) -> Iterator[list[tuple[str, int]]]:
        self.reads = []
        self.active = True
        try:
            yield self.reads
        finally:
            self.active = False


def _proc_field(path: str, key: str) -> int:
    """One number from /proc/self/status (kB) or /proc/self/io (bytes); 0 off Linux."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes() -> int:
    return _proc_field("/proc/self/status", "VmRSS:") * 1024


def peak_bytes() -> int:
    return _proc_field("/proc/self/status", "VmHWM:") * 1024


def reset_peak() -> None:
    """Reset VmHWM to the current RSS, so the next peak is the measured call's own."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def read_syscall_bytes() -> int:
    return _proc_field("/proc/self/io", "rchar:")


# -- what an append writes: the lake before and after ------------------------------------------
def snapshot(root: str) -> tuple[dict[str, tuple[int, int, int]], set[str]]:
    """Every file (size, mtime, inode) and folder under ``root``."""
    files, dirs = {}, set()
    for folder, subdirs, names in os.walk(root):
        dirs.update(os.path.join(folder, d) for d in subdirs)
        for name in names:
            path = os.path.join(folder, name)
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(path)
                files[path] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return files, dirs


def _holds_array(folder: str) -> bool:
    """A folder with a Zarr array inside it is data (a segment), whatever else is around it."""
    for parent, _, names in os.walk(folder):
        if "zarr.json" in names:
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(Path(parent, "zarr.json").read_bytes())
                if doc.get("node_type") == "array":
                    return True
    return False


def data_folders(root: str, dirs_before: set[str], dirs_after: set[str]) -> list[str]:
    """The outermost folders the append created that hold Zarr arrays: its new segments."""
    new = sorted(dirs_after - dirs_before)
    outer = [d for d in new if os.path.dirname(d) not in set(new)]
    return [d + os.sep for d in outer if _holds_array(d)]


def metadata_on_disk(lake: str) -> int:
    """Bytes of every file outside the folders that hold Zarr arrays: all versions' metadata."""
    files, dirs = snapshot(lake)
    meta, _, _ = split_by_folder(
        {p: st[0] for p, st in files.items()}, data_folders(lake, set(), dirs)
    )
    return meta


def split_by_folder(paths: dict[str, int], folders: list[str]) -> tuple[int, int, int]:
    """(metadata bytes, files, segment bytes) of ``paths`` (path → bytes)."""
    meta = files = data = 0
    for path, size in paths.items():
        if any(path.startswith(f) for f in folders):
            data += size
        else:
            meta += size
            files += 1
    return meta, files, data


# -- probes: each runs in a fresh process -------------------------------------------------------
def run_probe(kind: str, args: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Run ``probe_<kind>(args)`` in a new interpreter: no module or filesystem cache carries
    over, as for a training rank or a Dask worker opening the lake."""
    cmd = [sys.executable, os.path.abspath(__file__), "--probe", kind, json.dumps(args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(PROBE_MARK):
            return json.loads(line[len(PROBE_MARK) :])
    raise RuntimeError(
        f"probe {kind} failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
    )


def probe_open(args: dict[str, Any]) -> dict[str, Any]:
    """open_dataset: seconds, bytes read, memory; then the loader's first batch."""
    started = time.perf_counter()
    import lakeio

    import_s = time.perf_counter() - started
    import torch  # noqa: F401  (a training script has it already; the loader needs it)

    audit = OpenAudit(args["lake"])
    gc.collect()
    rss0, rchar0 = rss_bytes(), read_syscall_bytes()
    reset_peak()
    with audit.watching() as reads:
        t0 = time.perf_counter()
        ds = lakeio.open_dataset(args["lake"])
        t1 = time.perf_counter()
    rchar1, peak = read_syscall_bytes(), peak_bytes()
    opened = list(reads)
    out: dict[str, Any] = {
        "import_s": import_s,
        "open_s": t1 - t0,
        "read_bytes": sum(size for _, size in opened),
        "read_files": len(opened),
        "largest_reads": sorted(opened, key=lambda r: -r[1])[:3],
        "rchar": rchar1 - rchar0,
        "open_peak_rss": max(0, peak - rss0),
        "samples": len(ds),
    }
    if args.get("profile"):
        out["profile"] = profile_open(args["lake"], args["profile"])
        return out
    with audit.watching() as reads:
        t2 = time.perf_counter()
        with ds.loader(args["batch"]) as loader:
            batch = next(iter(loader))
        t3 = time.perf_counter()
    out["first_batch_s"] = t3 - t1  # from open's return: plan, first chunks, collation
    out["first_batch_call_s"] = t3 - t2
    out["first_batch_read_bytes"] = sum(size for _, size in reads)
    out["batch_rows"] = len(batch[0])
    return out


def profile_open(lake: str, top: int) -> str:
    """cProfile of a second open_dataset in this process, sorted by cumulative time."""
    import cProfile
    import io
    import pstats

    import lakeio

    profiler = cProfile.Profile()
    profiler.runcall(lakeio.open_dataset, lake)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return text.getvalue()


def probe_append(args: dict[str, Any]) -> dict[str, Any]:
    """One further append: seconds of the ingest call; metadata written and read."""
    import lakeio

    lake = args["lake"]
    images, labels = payload(
        args["start"], args["n"], args["samples"], args["classes"], args["labels"]
    )
    names = class_names(args["classes"])
    commit_seconds = time_commit_steps()
    with in_process_client() as client:
        audit = OpenAudit(lake)
        files0, dirs0 = snapshot(lake)
        with audit.watching() as reads:
            t0 = time.perf_counter()
            summary = lakeio.ingest(
                images, lake, labels=labels, classes=names, mode="append", cluster=client,
                progress=False, echo=quiet, **args.get("options", {}),
            )  # fmt: skip
            seconds = time.perf_counter() - t0
        files1, dirs1 = snapshot(lake)
    if summary.written != args["n"]:
        raise RuntimeError(f"append wrote {summary.written} samples, not {args['n']}")
    folders = data_folders(lake, dirs0, dirs1)
    written = {p: st[0] for p, st in files1.items() if files0.get(p) != st}
    w_meta, w_files, w_data = split_by_folder(written, folders)
    read_meta = read_files = 0
    for path, size in reads:
        if not any(path.startswith(f) for f in folders):
            read_meta += size
            read_files += 1
    meta_paths = [(p, s) for p, s in written.items() if not any(p.startswith(f) for f in folders)]
    return {
        "append_s": seconds,
        "commit_s": sum(commit_seconds),
        "written_meta": w_meta,
        "written_meta_files": w_files,
        "written_segments": w_data,
        "new_data_folders": len(folders),
        "read_meta": read_meta,
        "read_meta_files": read_files,
        "largest_writes": sorted(meta_paths, key=lambda r: -r[1])[:3],
    }


def time_commit_steps() -> list[float]:
    """Seconds of what an append does after its segments are written (the commit, then the
    root summary and report), appended to the list returned as they run: the figure to set
    beside other table formats' commit times. Wraps the two steps of lakeio's ingest run;
    an ingest without them (another lakeio version) leaves the list empty."""
    import sys

    run = sys.modules.get("lakeio.ingest.run")
    spent: list[float] = []
    for name in ("publish", "after_commit"):
        step = getattr(run, name, None)
        if step is None:
            continue

        def timed(*a, _step=step, **kw):
            t0 = time.perf_counter()
            try:
                return _step(*a, **kw)
            finally:
                spent.append(time.perf_counter() - t0)

        setattr(run, name, timed)
    return spent


def probe_synthetic(args: dict[str, Any]) -> dict[str, Any]:
    """A v1 manifest made directly: bytes, commit, parse, open_dataset, parse peak memory."""
    import lakeio

    try:
        from lakeio.format.location import Location
        from lakeio.format.manifest import commit_manifest, read_manifest

        t0 = time.perf_counter()
        manifest, segments = synthetic_manifest(args)
        build_s = time.perf_counter() - t0
    except (ImportError, TypeError, AttributeError) as exc:
        return {"skipped": f"this lakeio's format module builds no v1 manifest ({exc})"}
    folder = tempfile.mkdtemp(prefix="manifest-", dir=args["workdir"])
    try:
        loc = Location.of(folder)
        t0 = time.perf_counter()
        committed = commit_manifest(loc, manifest)
        write_s = time.perf_counter() - t0
        path = next(Path(folder).rglob("v*.json"))
        size = path.stat().st_size
        del manifest, committed
        gc.collect()
        parse, opens, peaks = [], [], []
        for _ in range(args["repeats"]):
            gc.collect()
            rss0 = rss_bytes()
            reset_peak()
            t0 = time.perf_counter()
            parsed = read_manifest(loc)
            parse.append(time.perf_counter() - t0)
            peaks.append(max(0, peak_bytes() - rss0))
            del parsed
            gc.collect()
            t0 = time.perf_counter()
            ds = lakeio.open_dataset(folder)
            opens.append(time.perf_counter() - t0)
            del ds
        info_s = timed_command([*args["lakeio_cmd"], "info", folder], args["repeats"])
        upgraded = upgrade_figures(loc, folder, args) if args.get("upgrade") else {}
    except Exception as exc:  # e.g. v1's own size limit on reading a manifest
        return {"segments": segments, "error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "segments": segments,
        "bytes": size,
        "build_s": build_s,
        "write_s": write_s,
        "parse_s": median(parse),
        "open_s": median(opens),
        "info_s": info_s,
        "parse_peak_rss": max(peaks),
        **upgraded,
    }


def upgrade_figures(loc, folder: str, args: dict[str, Any]) -> dict[str, Any]:
    """`lakeio upgrade` of the v1 manifest-only lake (the whole command, once: it commits), then
    the upgraded version as a reader meets it: the metadata bytes it reads and `read_manifest`
    seconds (median of ``repeats``). Empty where this lakeio has no upgrade."""
    from lakeio.format import manifest as fmt

    if not hasattr(fmt, "FRAGMENT_DIR"):
        return {}
    upgrade_s = timed_command([*args["lakeio_cmd"], "upgrade", folder], 1)
    newest = max(Path(folder, fmt.MANIFEST_DIR).glob("v*.json"))
    fragments = list(Path(folder, fmt.FRAGMENT_DIR).glob("*.json"))
    reads = []
    for _ in range(args["repeats"]):
        t0 = time.perf_counter()
        parsed = fmt.read_manifest(loc)
        reads.append(time.perf_counter() - t0)
    if parsed.format_version != 2 or len(parsed.segments) != args["segments_planned"]:
        raise RuntimeError(f"{folder}: the upgraded lake reads as {parsed.format_version}")
    return {
        "upgrade_s": upgrade_s,
        "v2_bytes": newest.stat().st_size + sum(f.stat().st_size for f in fragments),
        "v2_read_s": median(reads),
    }


def segment_rule() -> Callable[[int, int], int]:
    """Samples per segment for an ingest of n samples into a v1 lake, as lakeio cuts them."""
    return lambda n, c: min(8, max(1, math.ceil(math.ceil(n / c) / 16))) * c


def segment_plan(args: dict[str, Any]) -> Iterator[tuple[int, int, int, int]]:
    """(append, index in append, first sample, samples) of each segment, in lake order."""
    rule = segment_rule()
    start = 0
    for a, n in enumerate(args["appends"]):
        per = rule(n, args["chunk_samples"])
        for index, lo in enumerate(range(0, n, per)):
            yield a, index, start + lo, min(per, n - lo)
        start += n


def synthetic_manifest(args: dict[str, Any]):
    """The v1 `Manifest` of the lake the real part would build (first ``limit`` segments)."""
    from lakeio.format.manifest import FieldInfo, Manifest, SegmentEntry
    from lakeio.ingest.options import IngestOptions

    samples, classes, limit = args["samples"], args["classes"], args.get("limit")
    options = IngestOptions(chunk_samples=args["chunk_samples"]).as_dict()
    entries, history, ids = [], [], []
    for a, index, first, n in segment_plan(args):
        if limit is not None and len(entries) >= limit:
            break
        if a >= len(history):
            ids = []
            mode = "append" if a else "create"
            event = {"op": "ingest", "mode": mode, "source": "/data/imagenet/train"}
            stamp = "2026-01-01T00:00:00+00:00"
            history.append({**event, "options": options, "time": stamp, "segments": ids})
        label = labels_of(np.arange(first, first + n), samples, classes, args["labels"])
        digest = hashlib.blake2b(f"{a}/{index}".encode(), digest_size=10).hexdigest()
        sid = f"s{index:06d}-{digest}"
        ids.append(sid)
        decoded = n * math.prod(SIZE_224)
        entries.append(
            SegmentEntry(
                id=sid,
                samples=n,
                class_counts=tuple(np.bincount(label, minlength=classes).tolist()),
                source_bytes=n * JPEG_BYTES,
                decoded_bytes=decoded,
                stored_bytes=decoded * 93 // 100 + 3 * 1009 * index,
            )
        )
    fields = {
        "images": FieldInfo("uint8", SIZE_224, "lz4:5"),
        "labels": FieldInfo("int64", (), "lz4:5"),
        "paths": FieldInfo("str", (), "lz4:5"),
    }
    v1 = {"format_version": 1} if "format_version" in Manifest.__dataclass_fields__ else {}
    manifest = Manifest(
        fields=fields,
        classes=tuple(class_names(classes)),
        chunk_samples=args["chunk_samples"],
        segments=tuple(entries),
        history=tuple(history),
        **v1,
    )
    return manifest, len(entries)


PROBES = {"open": probe_open, "append": probe_append, "synthetic": probe_synthetic}


# -- part 1: real lakes ----------------------------------------------------------------------------
@dataclass
class Options:
    classes: int
    appends: int
    min_append: int
    append_samples: int
    chunk_samples: int
    repeats: int
    batch: int
    labels: str
    max_manifest_bytes: int
    workdir: str
    profile: int = 0
    keep: bool = False
    lakeio_cmd: list[str] = field(default_factory=list)
    format_version: int | None = None  # None: what lakeio writes by default


def format_option(opts: Options) -> dict[str, Any]:
    """``format_version=`` for the ingest that creates a lake, when one was asked for."""
    return {} if opts.format_version is None else {"format_version": opts.format_version}


def lakeio_command() -> list[str]:
    """The installed ``lakeio`` console script, else ``python -m lakeio.cli``."""
    script = Path(sys.executable).with_name("lakeio")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lakeio.cli"]


def timed_command(cmd: list[str], repeats: int) -> float:
    """Median wall seconds of a whole command (start-up, imports, work, exit)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return median(times)


def build_lake(lake: str, size: Size, opts: Options, client, log) -> dict[str, Any]:
    """The lake of ``size`` samples through its appends; seconds and the append sizes."""
    import lakeio

    parts = append_sizes(size.samples, opts.appends, opts.min_append)
    names = class_names(size.classes)
    start, t0 = 0, time.perf_counter()
    for i, n in enumerate(parts):
        images, labels = payload(start, n, size.samples, size.classes, opts.labels)
        lakeio.ingest(
            images, lake, labels=labels, classes=names, mode="append" if i else "create",
            cluster=client, progress=False, echo=quiet,
            **({} if i else {"chunk_samples": opts.chunk_samples, **format_option(opts)}),
        )  # fmt: skip
        start += n
        if (i + 1) % 10 == 0 or i + 1 == len(parts):
            log(
                f"  {size.samples:,}: {i + 1}/{len(parts)} appends, {time.perf_counter() - t0:.0f} s"
            )
    return {"appends": len(parts), "build_s": time.perf_counter() - t0}


def measure_lake(size: Size, opts: Options, client, log) -> dict[str, Any]:
    lake = os.path.join(opts.workdir, f"lake-{size.samples}-{size.classes}.lake")
    row: dict[str, Any] = {"samples": size.samples, "classes": size.classes}
    row |= build_lake(lake, size, opts, client, log)
    row["meta_on_disk"] = metadata_on_disk(lake)
    info = subprocess.run(
        [*opts.lakeio_cmd, "info", "--json", lake], check=True, capture_output=True, text=True
    )
    doc = json.loads(info.stdout)
    row |= {"segments": doc.get("segments"), "version": doc.get("version")}
    if doc.get("samples") != size.samples:
        raise RuntimeError(f"{lake}: lakeio info says {doc.get('samples')} samples")
    probes = [run_probe("open", {"lake": lake, "batch": opts.batch}) for _ in range(opts.repeats)]
    for key in ("open_s", "first_batch_s", "open_peak_rss", "import_s", "rchar"):
        row[key] = median([p[key] for p in probes])
    row |= {k: probes[0][k] for k in ("read_bytes", "read_files", "largest_reads")}
    row["first_batch_read_bytes"] = probes[0]["first_batch_read_bytes"]
    if opts.profile:
        row["profile"] = run_probe("open", {"lake": lake, "profile": opts.profile})["profile"]
    row["info_s"] = timed_command([*opts.lakeio_cmd, "info", lake], opts.repeats)
    appends = []
    for i in range(opts.repeats):  # each adds append_samples more: the lake grows a little
        start = size.samples + i * opts.append_samples
        args = {
            "lake": lake, "start": start, "n": opts.append_samples, "samples": size.samples,
            "classes": size.classes, "labels": opts.labels,
        }  # fmt: skip
        appends.append(run_probe("append", args))
    row["append_s"] = median([a["append_s"] for a in appends])
    row["commit_s"] = median([a.get("commit_s", float("nan")) for a in appends])
    for key in ("written_meta", "written_meta_files", "written_segments", "read_meta"):
        row[key] = appends[0][key]  # the first further append: the lake at exactly its size
    row["largest_writes"] = appends[0]["largest_writes"]
    if not opts.keep:
        shutil.rmtree(lake, ignore_errors=True)
    return row


def baseline_append(opts: Options) -> float:
    """Seconds of the same append into a lake of one small version: the part that does not
    depend on the lake's size (segment writes, planning, Dask)."""
    import lakeio

    lake = os.path.join(opts.workdir, "baseline.lake")
    images, labels = payload(0, opts.append_samples, opts.append_samples, opts.classes, "sorted")
    with in_process_client() as client:
        lakeio.ingest(
            images, lake, labels=labels, classes=class_names(opts.classes), progress=False,
            echo=quiet, cluster=client, chunk_samples=opts.chunk_samples, **format_option(opts),
        )  # fmt: skip
    args = {
        "lake": lake, "n": opts.append_samples, "samples": opts.append_samples,
        "classes": opts.classes, "labels": "sorted",
    }  # fmt: skip
    times = [run_probe("append", {**args, "start": (i + 1) * 10**7}) for i in range(opts.repeats)]
    shutil.rmtree(lake, ignore_errors=True)
    return median([t["append_s"] for t in times])


# -- part 2: synthetic manifests ---------------------------------------------------------------
def synthetic_args(size: Size, opts: Options, limit: int | None) -> dict[str, Any]:
    return {
        "samples": size.samples,
        "classes": size.classes,
        "appends": append_sizes(size.samples, opts.appends, opts.min_append),
        "chunk_samples": opts.chunk_samples,
        "labels": opts.labels,
        "limit": limit,
        "repeats": opts.repeats,
        "workdir": opts.workdir,
        "lakeio_cmd": opts.lakeio_cmd,
    }


FIGURES = ("bytes", "write_s", "parse_s", "open_s", "info_s", "parse_peak_rss")


def measure_synthetic(size: Size, opts: Options, log) -> dict[str, Any]:
    """Measured whole when the manifest fits ``max_manifest_bytes``, else extrapolated."""
    args = synthetic_args(size, opts, None)
    total = sum(1 for _ in segment_plan(args))
    per_segment = size.classes * 7 + 300  # dense counts at 7 bytes a line, plus the rest
    row: dict[str, Any] = {"samples": size.samples, "classes": size.classes, "segments": total}
    if total * per_segment <= opts.max_manifest_bytes:
        result = run_probe("synthetic", {**args, "upgrade": True, "segments_planned": total})
        return row | result | {"how": "measured"}
    top = max(8, min(total, opts.max_manifest_bytes // per_segment))
    prefixes = sorted({1, max(2, top // 4), max(3, top // 2), top})  # 1: the fixed costs
    measured = []
    for m in prefixes:
        log(f"  synthetic {size.samples:,}/{size.classes:,}: prefix of {m:,} of {total:,} segments")
        result = run_probe("synthetic", synthetic_args(size, opts, m))
        if "skipped" in result or "error" in result:
            return row | result
        measured.append(result)
    xs = np.array([r["segments"] for r in measured], dtype=float)
    residual = {}
    for key in FIGURES:
        ys = np.array([r[key] for r in measured], dtype=float)
        slope, intercept = np.polyfit(xs, ys, 1)
        misfit = np.abs(slope * xs + intercept - ys) / max(float(ys.max()), 1e-9)
        residual[key] = float(np.max(misfit))
        row[key] = float(slope * total + intercept)
    shown = ", ".join(f"{int(x):,}" for x in xs)
    seconds = max(v for k, v in residual.items() if k.endswith("_s"))
    row["how"] = (
        f"extrapolated from {shown} segments (fits' worst miss, of the largest: bytes "
        f"{residual['bytes']:.1%}, seconds ≤ {seconds:.0%}, RSS {residual['parse_peak_rss']:.0%})"
    )
    limit = manifest_read_limit()
    if limit and row["bytes"] > limit:
        row["how"] += f"; over v1's {human(limit)} read limit: would not open"
    return row


def manifest_read_limit() -> int | None:
    with contextlib.suppress(ImportError):
        from lakeio.format import manifest

        return getattr(manifest, "MAX_MANIFEST_BYTES", None)
    return None


# -- report ---------------------------------------------------------------------------------------
def format_version() -> str:
    with contextlib.suppress(ImportError):
        from lakeio.format import manifest

        return str(getattr(manifest, "FORMAT_VERSION", "?"))
    return "?"


def largest(rows: list[dict], key: str) -> str:
    """The biggest files of each lake's reads or writes, named from inside the lake."""

    def name(path: str) -> str:
        return path.split(".lake" + os.sep, 1)[-1]

    return "; ".join(", ".join(f"{name(p)} {human(s)}" for p, s in r[key]) for r in rows)


def markdown(real: list[dict], synthetic: list[dict], extra: dict[str, Any], opts: Options) -> str:
    lines = [
        f"### Metadata cost, format version {extra['format']} ({time.strftime('%Y-%m-%d')})",
        "",
    ]
    if real:
        rchar = ", ".join(human(r["rchar"]) for r in real)
        lines += [
            f"Real lakes of 1x1x3 images, chunk_samples {opts.chunk_samples}, labels "
            f"{opts.labels}; median of {opts.repeats} fresh processes; one further append of "
            f"{opts.append_samples:,} samples.",
            "",
            "| samples | classes | appends | segments | build s | meta on disk | open s | "
            "read on open | files | open peak RSS | append s | of which commit s | "
            "append meta written | append meta read | info s | first batch s |",
            "|" + "---:|" * 16,
        ]
        for r in real:
            cells = [
                f"{r['samples']:,}", f"{r['classes']:,}", str(r["appends"]),
                f"{r['segments']:,}", secs(r["build_s"]), human(r["meta_on_disk"]),
                secs(r["open_s"]),
                human(r["read_bytes"]), str(r["read_files"]), human(r["open_peak_rss"]),
                secs(r["append_s"]), secs(r["commit_s"]),
                f"{human(r['written_meta'])} ({r['written_meta_files']} files)",
                human(r["read_meta"]), secs(r["info_s"]), secs(r["first_batch_s"]),
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Floors: `import lakeio` {secs(extra['import_s'])} s (not in open s); "
            f"`lakeio codecs` (start-up, no lake) {secs(extra['cli_floor_s'])} s; the same append "
            f"into a one-version lake {secs(extra['baseline_append_s'])} s. Meta on disk: files "
            "outside the folders that hold Zarr arrays, every version's, after the build.",
            "Read on open: lake files the opening process opened for reading, at full size "
            f"(audit hook). read() bytes of the whole process during the call: {rchar}. "
            f"Largest reads: {largest(real, 'largest_reads')}.",
            "Append meta written: files the append created or changed outside its new segment "
            f"folders. Largest: {largest(real, 'largest_writes')}.",
            "",
        ]
    if synthetic:
        lines += [
            f"Synthetic v1 manifests (224x224 fields, segments as the planner cuts {opts.appends} "
            "appends, nothing else on disk); parse and open in process, median of "
            f"{opts.repeats}.",
            "",
            "| samples | classes | segments | manifest | commit s | read_manifest s | "
            "open_dataset s | lakeio info s | parse peak RSS | `lakeio upgrade` s | "
            "after it: metadata read | after it: read_manifest s | how |",
            "|" + "---:|" * 12 + "---|",
        ]
        for r in synthetic:
            if "bytes" not in r:
                reason = r.get("skipped") or r.get("error")
                lines.append(
                    f"| {r['samples']:,} | {r['classes']:,} | {r['segments']:,} "
                    f"| – | – | – | – | – | – | – | – | – | {reason} |"
                )
                continue
            cells = [
                f"{r['samples']:,}", f"{r['classes']:,}", f"{r['segments']:,}",
                human(r["bytes"]), secs(r["write_s"]), secs(r["parse_s"]), secs(r["open_s"]),
                secs(r["info_s"]), human(r["parse_peak_rss"]),
                secs(r.get("upgrade_s")), human(r.get("v2_bytes")), secs(r.get("v2_read_s")),
                r["how"],
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(path: str, real: list[dict], synthetic: list[dict], fmt: Any = "?") -> None:
    """Open seconds and metadata bytes against samples, log-log, with issue 12's targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    xs = [r["samples"] for r in real]
    if real:
        left.plot(xs, [r["open_s"] for r in real], "o-", label="open_dataset (real lake)")
        left.plot(xs, [r["append_s"] for r in real], "s-", label="one further append")
        left.plot(xs, [r["info_s"] for r in real], "^-", label="lakeio info (whole command)")
        left.plot(xs, [r["first_batch_s"] for r in real], "v-", label="open → first batch")
        right.plot(xs, [r["read_bytes"] for r in real], "o-", label="read on open (real lake)")
        right.plot(xs, [r["written_meta"] for r in real], "s-", label="written by an append")
    for k in sorted({r["classes"] for r in synthetic if "bytes" in r}):
        rows = [r for r in synthetic if r["classes"] == k and "bytes" in r]
        for ax, key, what in ((left, "open_s", "open_dataset"), (right, "bytes", "manifest")):
            ax.plot([r["samples"] for r in rows], [r[key] for r in rows], ":", color="grey")
            done = [r for r in rows if r["how"] == "measured"]
            guess = [r for r in rows if r["how"] != "measured"]
            marker = "D" if k == 1000 else "P"
            if done:
                ax.plot([r["samples"] for r in done], [r[key] for r in done], marker,
                        color="black", label=f"synthetic v1 {what}, {k:,} classes")  # fmt: skip
            if guess:
                ax.plot([r["samples"] for r in guess], [r[key] for r in guess], marker,
                        mfc="none", color="black", label=f"… extrapolated, {k:,} classes")  # fmt: skip
    left.axhline(TARGETS["open_s"], ls="--", color="red", lw=0.8, label="target: open ≤ 1 s")
    right.axhline(TARGETS["read_bytes"], ls="--", color="red", lw=0.8, label="target: read ≤ 20 MB")
    right.axhline(TARGETS["append_written"], ls="-.", color="red", lw=0.8,
                  label="target: append writes ≤ 1 MB")  # fmt: skip
    limit = manifest_read_limit()
    if limit and synthetic:
        right.axhline(limit, ls=":", color="grey", lw=0.8,
                      label=f"v1 refuses to read a manifest over {human(limit)}")  # fmt: skip
    left.set_ylabel("seconds")
    right.set_ylabel("bytes")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("samples in the lake")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"lakeio metadata cost as a lake grows: real lakes in format version {fmt}, "
        "synthetic manifests in version 1"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1e4,1e5,3e5",
                   help="real lakes to build, N or N:CLASSES, comma-separated ('' for none)")  # fmt: skip
    p.add_argument("--synthetic-sizes", default="1e5,3e5,1e6,1.28e6,1.4e7,1.4e7:21841",
                   help="v1 manifests to make directly, N or N:CLASSES ('' for none)")  # fmt: skip
    p.add_argument("--classes", type=count, default=1000, help="classes where a size names none")
    p.add_argument("--appends", type=count, default=100, help="appends that build a lake (at most)")
    p.add_argument("--min-append", type=count, default=FULL_SEGMENT,
                   help="fewest samples per building append: fewer appends for small lakes "
                   "keep segments full-sized (1 forces exactly --appends)")  # fmt: skip
    p.add_argument("--append-samples", type=count, default=FULL_SEGMENT,
                   help="samples in the measured further append")  # fmt: skip
    p.add_argument("--chunk-samples", type=count, default=27, help="27: a 224x224 lake's chunks")
    p.add_argument("--labels", choices=("sorted", "shuffled"), default="sorted")
    p.add_argument("--repeats", type=count, default=3, help="fresh processes per figure (median)")
    p.add_argument("--batch-size", type=count, default=256, help="the loader's batch")
    p.add_argument("--max-manifest-mb", type=float, default=48,
                   help="synthetic manifests above this are extrapolated from prefixes")  # fmt: skip
    p.add_argument("--profile", type=count, default=0, metavar="N",
                   help="also print the top N functions of open_dataset on the largest lake")  # fmt: skip
    p.add_argument("--format-version", type=int, choices=(1, 2),
                   help="format of the real lakes (default: what lakeio writes)")  # fmt: skip
    p.add_argument("--plot", metavar="PATH", help="draw the growth curves (matplotlib)")
    p.add_argument("--out", metavar="FILE", help="append the Markdown and the command line here")
    p.add_argument("--json", metavar="FILE", help="write the measured rows here (to plot later)")
    p.add_argument("--workdir", help="where lakes are built (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the built lakes (to profile them)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--probe"]:  # a measurement in a fresh process (see run_probe)
        result = PROBES[argv[1]](json.loads(argv[2]))
        print(PROBE_MARK + json.dumps(result), flush=True)
        return 0
    ns = parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="lakeio-metadata-", dir=ns.workdir)
    opts = Options(
        classes=ns.classes, appends=ns.appends, min_append=ns.min_append,
        append_samples=ns.append_samples, chunk_samples=ns.chunk_samples,
        repeats=ns.repeats, batch=ns.batch_size, labels=ns.labels,
        max_manifest_bytes=int(ns.max_manifest_mb * 1e6), workdir=workdir,
        profile=ns.profile, keep=ns.keep, lakeio_cmd=lakeio_command(),
        format_version=ns.format_version,
    )  # fmt: skip

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.perf_counter()
    real, synthetic = [], []
    extra: dict[str, Any] = {"format": ns.format_version or format_version()}
    try:
        real_sizes = sizes(ns.sizes, ns.classes)
        for i, size in enumerate(real_sizes):
            log(f"real lake of {size.samples:,} samples, {size.classes:,} classes")
            last = i == len(real_sizes) - 1
            row_opts = opts if last else replace(opts, profile=0)  # profile the largest only
            with in_process_client() as client:
                real.append(measure_lake(size, row_opts, client, log))
        if real:
            extra["import_s"] = median([r["import_s"] for r in real])
            extra["cli_floor_s"] = timed_command([*opts.lakeio_cmd, "codecs"], opts.repeats)
            extra["baseline_append_s"] = baseline_append(opts)
        for size in sizes(ns.synthetic_sizes, ns.classes):
            log(f"synthetic manifest of {size.samples:,} samples, {size.classes:,} classes")
            synthetic.append(measure_synthetic(size, opts, log))
    finally:
        if ns.keep:
            log(f"lakes kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = markdown(real, synthetic, extra, opts)
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    text += f"\nCommand: `{command}` ({time.perf_counter() - started:.0f} s)\n"
    print(text)
    profiles = [r["profile"] for r in real if "profile" in r]
    if profiles:
        print("Profile of open_dataset on the largest lake:\n```\n" + profiles[-1] + "```")
    if ns.out:
        with open(ns.out, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    if ns.json:
        with open(ns.json, "w", encoding="utf-8") as fh:
            json.dump({"real": real, "synthetic": synthetic, "extra": extra}, fh, default=str)
    if ns.plot:
        plot(ns.plot, real, synthetic, extra["format"])
        print(f"plot: {ns.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
