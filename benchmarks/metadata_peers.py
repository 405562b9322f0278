"""Lance and Icechunk under the same appends as benchmarks/metadata.py: commit time and open time.

Setup: bash benchmarks/peers-setup.sh   (builds .venv-peers with pylance, icechunk and zarr>=3)
Run:   nice -n 10 .venv-peers/bin/python benchmarks/metadata_peers.py \
           [--sizes 1.28e6:1000,1.4e7:21841] [--appends 100] [--out FILE]

Issue 12 asks how lakeio's metadata compares, for the same appends, with two formats that also
keep versions of a growing table. This script does not import lakeio. For each size
(``samples:classes``) it builds, per system, a lake of ``--appends`` equal appends of rows that
look like lakeio's benchmark lakes (benchmarks/metadata.py): a 1x1x3 uint8 image, an int64 label
sorted by class as an ImageFolder listing gives them (``label = row * classes // samples``) and a
path string (``n{label:08d}/{row:08d}.JPEG``).

- **Lance** (pylance): one Arrow table per append (``image`` fixed_size_binary(3), ``label``
  int64, ``path`` string), ``lance.write_dataset(table, uri, mode="append")`` with default
  settings. Data files are under ``data/``; everything else (``_versions/``, ``_transactions/``,
  ...) is counted as metadata.
- **Icechunk**: a repository on ``local_filesystem_storage`` with three Zarr v3 arrays
  ``images`` (n,1,1,3) uint8, ``labels`` (n,) int64, ``paths`` (n,) string, all chunked by 27
  rows (lakeio's chunk at 224x224). An append opens a writable session on ``main``, resizes the
  three arrays, writes the new rows and commits once. The repository's
  ``inline_chunk_threshold_bytes`` is set to 0: with the default (512 B) this test's tiny chunks
  would be stored inside the manifests, which real 4 MiB image chunks never are. Chunk files are
  under ``chunks/``; everything else (``snapshots/``, ``manifests/``, ``transactions/``,
  ``refs/``, ``config.yaml``) is counted as metadata.

Measured per system and size:

- seconds of each append (data generation excluded: the rows are made before the clock); for
  Icechunk also ``session.commit()`` alone. Reported: the median of the last 10 appends, and one
  more append (the 101st) made after the open measurements;
- metadata bytes each append wrote: files created or changed outside the data folder, found by a
  listing (size, mtime) of the lake before and after the append;
- open in a fresh process (modules imported before the clock), median of ``--repeats`` processes:
  Lance ``lance.dataset(uri).count_rows()``; Icechunk ``Repository.open``, ``readonly_session
  ("main")``, ``zarr.open_group(session.store, mode="r")`` and the three arrays' shapes;
- in the same process, the first batch of 256 random rows after open: Lance ``take``; Icechunk an
  orthogonal index of each array (which loads each array's chunk manifest, then the chunks);
- bytes read on open: a Python audit hook on ``open`` counts files under the lake opened through
  Python (both libraries read through Rust, so this stays 0 and is shown only to say so); the
  figure used is the process's ``/proc/self/io`` ``rchar`` delta over the call (all read()
  bytes of the process, so an upper bound on what was read from the lake).

Budget: an Icechunk lake whose projected build time passes ``--build-budget-s`` is built only for
its first K appends (the same appends the full lake starts with). Then open and first batch are
measured after K/2 and K appends, and every figure is extrapolated linearly in the append count
to ``--appends`` (per-append figures from a line fitted to appends K/2..K); such rows say so.
Lakes live under a temporary folder in /tmp, removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("ICECHUNK_LOG", "error")  # icechunk warns on every local-storage open

BATCH = 256
CHUNK_ROWS = 27
DATA_DIRS = {"lance": "data", "icechunk": "chunks"}


# ---------------------------------------------------------------------------------------------
# rows: the same for both systems


def make_rows(start: int, count: int, samples: int, classes: int):
    import numpy as np

    rows = np.arange(start, start + count, dtype=np.int64)
    labels = np.minimum(rows * classes // samples, classes - 1)  # the 101st append stays in range
    pixels = (rows % 251).astype(np.uint8)
    images = np.repeat(pixels, 3).reshape(count, 1, 1, 3)
    paths = [
        f"n{label:08d}/{row:08d}.JPEG"
        for label, row in zip(labels.tolist(), rows.tolist(), strict=True)
    ]
    return images, labels, paths


# ---------------------------------------------------------------------------------------------
# metadata files: a listing outside the data folder


def listing(lake: Path, data_dir: str) -> dict[str, tuple[int, int]]:
    out = {}
    if not lake.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(lake):
        if Path(dirpath) == lake and data_dir in dirnames:
            dirnames.remove(data_dir)
        for name in filenames:
            full = os.path.join(dirpath, name)
            st = os.stat(full)
            out[os.path.relpath(full, lake)] = (st.st_size, st.st_mtime_ns)
    return out


def written(before: dict, after: dict) -> tuple[int, int]:
    """(bytes, files) created or changed between two listings."""
    changed = [k for k, v in after.items() if before.get(k) != v]
    return sum(after[k][0] for k in changed), len(changed)


def dir_bytes(path: Path) -> tuple[int, int]:
    total = files = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            total += os.stat(os.path.join(dirpath, name)).st_size
            files += 1
    return total, files


# ---------------------------------------------------------------------------------------------
# the two writers


class LanceLake:
    name = "lance"

    def __init__(self, path: Path):
        import lance
        import pyarrow as pa

        self.lance, self.pa, self.path = lance, pa, path
        self.schema = pa.schema(
            [("image", pa.binary(3)), ("label", pa.int64()), ("path", pa.string())]
        )

    def prepare(self, images, labels, paths):
        pa = self.pa
        n = len(labels)
        image = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(3), n, [None, pa.py_buffer(images.tobytes())]
        )
        return pa.Table.from_arrays(
            [image, pa.array(labels, pa.int64()), pa.array(paths, pa.string())], schema=self.schema
        )

    def append(self, table) -> tuple[float, float | None]:
        t0 = time.perf_counter()
        self.lance.write_dataset(table, str(self.path), mode="append")
        return time.perf_counter() - t0, None

    def describe(self) -> str:
        ds = self.lance.dataset(str(self.path))
        frags = ds.get_fragments()
        files = sum(len(f.data_files()) for f in frags)
        return (
            f"Lance: version {ds.version}, {len(frags)} fragments ({files} data files; "
            f"max_rows_per_file default 1,048,576, so one fragment per append), "
            f"data storage version {ds.data_storage_version}"
        )


class IcechunkLake:
    name = "icechunk"

    def __init__(self, path: Path):
        import icechunk
        import numpy as np
        import zarr

        self.ic, self.zarr, self.np, self.path = icechunk, zarr, np, path
        config = icechunk.RepositoryConfig.default()
        config.inline_chunk_threshold_bytes = 0
        self.repo = icechunk.Repository.create(
            icechunk.local_filesystem_storage(str(path)), config=config
        )
        session = self.repo.writable_session("main")
        group = zarr.open_group(session.store, mode="w")
        group.create_array(
            "images", shape=(0, 1, 1, 3), chunks=(CHUNK_ROWS, 1, 1, 3), dtype="uint8"
        )
        group.create_array("labels", shape=(0,), chunks=(CHUNK_ROWS,), dtype="int64")
        group.create_array("paths", shape=(0,), chunks=(CHUNK_ROWS,), dtype=str)
        session.commit("create the arrays")

    def prepare(self, images, labels, paths):
        return images, labels, self.np.array(paths, dtype=object)

    def append(self, data) -> tuple[float, float | None]:
        images, labels, paths = data
        t0 = time.perf_counter()
        session = self.repo.writable_session("main")
        group = self.zarr.open_group(session.store, mode="r+")
        n = len(labels)
        start = group["labels"].shape[0]
        for name, values in (("images", images), ("labels", labels), ("paths", paths)):
            array = group[name]
            array.resize((start + n, *array.shape[1:]))
            array[start : start + n] = values
        t1 = time.perf_counter()
        session.commit(f"append rows {start}..{start + n}")
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1

    def describe(self) -> str:
        manifests = len(os.listdir(self.path / "manifests"))
        snapshots = len(os.listdir(self.path / "snapshots"))
        return (
            f"Icechunk: {snapshots} snapshots, {manifests} manifest files "
            f"(a new manifest per array per commit), chunks of {CHUNK_ROWS} rows, inline threshold 0"
        )


WRITERS = {"lance": LanceLake, "icechunk": IcechunkLake}


# ---------------------------------------------------------------------------------------------
# the fresh process that opens a lake (run as: metadata_peers.py --child SYSTEM PATH SEED)


def rchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return -1


def child(system: str, path: str, seed: int) -> None:
    import numpy as np

    if system == "lance":
        import lance
        import pyarrow  # noqa: F401
    else:
        import icechunk
        import zarr

    root = os.path.realpath(path)
    seen: set[str] = set()

    def hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            p = os.fsdecode(args[0])
            if p.startswith(root):
                seen.add(p)

    sys.addaudithook(hook)
    r0 = rchar()
    t0 = time.perf_counter()
    if system == "lance":
        ds = lance.dataset(path)
        rows = ds.count_rows()
    else:
        repo = icechunk.Repository.open(icechunk.local_filesystem_storage(path))
        session = repo.readonly_session("main")
        group = zarr.open_group(session.store, mode="r")
        arrays = [group[name] for name in ("images", "labels", "paths")]
        shapes = [a.shape for a in arrays]
        rows = shapes[0][0]
    t1 = time.perf_counter()
    r1 = rchar()
    audit_open = sum(os.path.getsize(p) for p in seen if os.path.isfile(p))
    idx = np.sort(np.random.default_rng(seed).choice(rows, BATCH, replace=False))
    t2 = time.perf_counter()
    if system == "lance":
        batch = ds.take(idx.tolist(), columns=["image", "label", "path"])
        got = batch.num_rows
    else:
        got_arrays = [a.oindex[idx] for a in arrays]
        got = len(got_arrays[1])
    t3 = time.perf_counter()
    r3 = rchar()
    assert got == BATCH, got
    print(
        json.dumps(
            {
                "rows": int(rows),
                "open_s": t1 - t0,
                "rchar_open": r1 - r0,
                "audit_open": audit_open,
                "batch_s": t3 - t2,
                "rchar_batch": r3 - r1,
            }
        )
    )


def measure_open(system: str, path: Path, repeats: int) -> dict:
    runs = []
    for i in range(repeats):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", system, str(path), str(i)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed:\n{out.stderr[-3000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


# ---------------------------------------------------------------------------------------------
# one lake


@dataclass
class Result:
    system: str
    samples: int
    classes: int
    appends: int
    built: int  # appends actually made (== appends unless extrapolated)
    append_s: list[float] = field(default_factory=list)
    commit_s: list[float | None] = field(default_factory=list)
    meta_bytes: list[int] = field(default_factory=list)
    meta_files: list[int] = field(default_factory=list)
    opens: dict[int, dict] = field(default_factory=dict)  # appends made -> open figures
    next_append: tuple[float, float | None, int] | None = None  # after the last built one
    build_s: float = 0.0
    meta_on_disk: tuple[int, int] = (0, 0)
    data_on_disk: tuple[int, int] = (0, 0)
    describe: str = ""


def fit_at(xs: list[float], ys: list[float], x: float) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((a - mx) ** 2 for a in xs)
    slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my + slope * (x - mx)


def build(system: str, samples: int, classes: int, appends: int, workdir: Path, args) -> Result:
    per = samples // appends
    path = workdir / f"{system}-{samples}"
    res = Result(system, samples, classes, appends, appends)
    writer = WRITERS[system](path)
    data_dir = DATA_DIRS[system]
    before = listing(path, data_dir)
    t_start = time.perf_counter()
    limit = appends
    for k in range(appends):
        if k >= limit:
            break
        data = writer.prepare(*make_rows(k * per, per, samples, classes))
        append_s, commit_s = writer.append(data)
        after = listing(path, data_dir)
        b, f = written(before, after)
        before = after
        res.append_s.append(append_s)
        res.commit_s.append(commit_s)
        res.meta_bytes.append(b)
        res.meta_files.append(f)
        elapsed = time.perf_counter() - t_start
        if k + 1 in (1, 10) or (k + 1) % 25 == 0:
            print(
                f"  {system} {samples:,}: append {k + 1}/{appends} {append_s:.3f} s, "
                f"{b:,} metadata bytes, {elapsed:.0f} s so far",
                flush=True,
            )
        # projected build time: a line through the append times so far
        if k == 9 and limit == appends:
            mean = max(elapsed / 10, 1e-3)
            projected = mean * appends * 1.15  # later appends commit a little more
            if projected > args.build_budget_s:
                limit = max(20, min(appends, int(args.build_budget_s / (mean * 1.3))))
                limit -= limit % 2
                res.built = limit
                print(
                    f"  projected {projected:.0f} s > budget {args.build_budget_s:.0f} s: "
                    f"building the first {limit} appends and extrapolating",
                    flush=True,
                )
        if res.built < appends and k + 1 == limit // 2:
            res.opens[k + 1] = measure_open(system, path, args.repeats)
    res.build_s = time.perf_counter() - t_start
    res.opens[res.built] = measure_open(system, path, args.repeats)
    # one more append (the 101st for a full lake)
    k = res.built
    data = writer.prepare(*make_rows(k * per, per, samples, classes))
    append_s, commit_s = writer.append(data)
    after = listing(path, data_dir)
    res.next_append = (append_s, commit_s, written(before, after)[0])
    res.describe = writer.describe()
    res.data_on_disk = dir_bytes(path / data_dir)
    meta_total = 0
    for b, _ in after.values():
        meta_total += b
    res.meta_on_disk = (meta_total, len(after))
    del writer
    if not args.keep:
        shutil.rmtree(path, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------------------------
# the table


def fmt_s(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_b(x: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= size:
            return f"{x / size:.1f} {unit}"
    return f"{x:.0f} B"


def summarize(r: Result) -> dict:
    """Figures for the table; extrapolated to r.appends where the lake was built only in part."""
    n, k = r.appends, r.built
    if k == n:
        last = slice(n - 10, n)
        out = {
            "append": statistics.median(r.append_s[last]),
            "commit": statistics.median(r.commit_s[last]) if r.commit_s[0] is not None else None,
            "meta": statistics.median(r.meta_bytes[last]),
            "next_append": r.next_append[0],
            "next_commit": r.next_append[1],
            "next_meta": r.next_append[2],
            **r.opens[k],
        }
        return out
    xs = list(range(k // 2, k))
    ys = lambda series: [series[i] for i in xs]  # noqa: E731
    mid = (n - 10 + n - 1) / 2  # the median of appends n-10..n-1 (0-based) on a line
    out = {"meta": fit_at(xs, ys(r.meta_bytes), mid), "next_meta": fit_at(xs, ys(r.meta_bytes), n)}
    if r.commit_s[0] is not None:
        # writing the rows costs the same in every append (the same number of chunks); only the
        # commit grows with the lake: the median write part plus a line through the commits
        # (a line through whole-append times is swamped by the noise of the write part)
        write = statistics.median(r.append_s[i] - r.commit_s[i] for i in xs)
        out["commit"] = fit_at(xs, ys(r.commit_s), mid)
        out["next_commit"] = fit_at(xs, ys(r.commit_s), n)
        out["append"] = write + out["commit"]
        out["next_append"] = write + out["next_commit"]
    else:
        out["commit"] = out["next_commit"] = None
        out["append"] = fit_at(xs, ys(r.append_s), mid)
        out["next_append"] = fit_at(xs, ys(r.append_s), n)
    (ka, a), (kb, b) = sorted(r.opens.items())
    for key in a:  # a falling line (noise) is not extrapolated: the lower measurement stands
        out[key] = max(a[key] + (b[key] - a[key]) * (n - ka) / (kb - ka), min(a[key], b[key]))
    return out


def table(results: list[Result]) -> str:
    head = (
        "| system | samples | classes | appends | append s (median of last 10) "
        "| one more append s (the 101st) | metadata written per append (last 10; 101st) | open s "
        "| first batch s | read on open (rchar; audit hook) |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    lines = []
    for r in results:
        s = summarize(r)
        mark = "" if r.built == r.appends else "*"
        append = fmt_s(s["append"]) + mark
        nxt = fmt_s(s["next_append"]) + mark
        if s["commit"] is not None:
            append += f" (commit {fmt_s(s['commit'])})"
            nxt += f" (commit {fmt_s(s['next_commit'])})"
        appends = f"{r.appends}" if r.built == r.appends else f"{r.appends}* (built {r.built})"
        lines.append(
            f"| {r.system} | {r.samples:,} | {r.classes:,} | {appends} | {append} | {nxt} "
            f"| {fmt_b(s['meta'])}; {fmt_b(s['next_meta'])}{mark} | {fmt_s(s['open_s'])}{mark} "
            f"| {fmt_s(s['batch_s'])}{mark} "
            f"| {fmt_b(s['rchar_open'])}{mark}; {fmt_b(s['audit_open'])} |"
        )
    return head + "\n".join(lines) + "\n"


def notes(results: list[Result]) -> str:
    out = []
    for r in results:
        first = r.meta_bytes[0]
        last = r.meta_bytes[r.built - 1]
        line = (
            f"- {r.system} {r.samples:,}: built {r.built} appends in {r.build_s:.0f} s; metadata "
            f"written by append 1: {fmt_b(first)} ({r.meta_files[0]} files), by append "
            f"{r.built}: {fmt_b(last)} ({r.meta_files[r.built - 1]} files); on disk after "
            f"{r.built + 1} appends: metadata {fmt_b(r.meta_on_disk[0])} in {r.meta_on_disk[1]:,} "
            f"files, data {fmt_b(r.data_on_disk[0])} in {r.data_on_disk[1]:,} files. "
            f"{r.describe}."
        )
        for k, o in sorted(r.opens.items()):
            line += (
                f" After {k} appends: open {o['open_s']:.3f} s (rchar {fmt_b(o['rchar_open'])}), "
                f"first batch {o['batch_s']:.3f} s (rchar {fmt_b(o['rchar_batch'])})."
            )
        if r.built < r.appends:
            a, c, b = r.next_append
            line += (
                f" Append {r.built + 1} (measured): {a:.3f} s"
                + (f" (commit {c:.3f} s)" if c is not None else "")
                + f", {fmt_b(b)} of metadata."
            )
        out.append(line)
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1.28e6:1000,1.4e7:21841", help="samples:classes,...")
    p.add_argument("--appends", type=int, default=100)
    p.add_argument("--systems", default="lance,icechunk")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per open measurement")
    p.add_argument(
        "--build-budget-s",
        type=float,
        default=900,
        help="build a lake only in part (and extrapolate) when its projected build is longer",
    )
    p.add_argument("--workdir", default="/tmp")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--out", help="also write the markdown here")
    p.add_argument("--json", help="write every append's figures here")
    p.add_argument("--child", nargs=3, metavar=("SYSTEM", "PATH", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return

    import icechunk
    import lance
    import pyarrow
    import zarr

    sizes = []
    for item in args.sizes.split(","):
        samples, classes = item.split(":")
        sizes.append((int(float(samples)), int(classes)))
    t0 = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="metadata-peers-", dir=args.workdir))
    results = []
    try:
        for samples, classes in sizes:
            if samples % args.appends:
                sys.exit(f"{samples} samples do not split into {args.appends} equal appends")
            for system in args.systems.split(","):
                print(f"== {system}: {samples:,} samples, {classes:,} classes", flush=True)
                results.append(build(system, samples, classes, args.appends, workdir, args))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - t0
    versions = (
        f"pylance {lance.__version__}, pyarrow {pyarrow.__version__}, icechunk "
        f"{icechunk.__version__}, zarr {zarr.__version__}, Python {sys.version.split()[0]}"
    )
    md = (
        f"Command: `{shlex.join([os.path.relpath(sys.executable), *sys.argv])}`  \n"
        f"Versions: {versions}; {os.cpu_count()} cores; took {total:.0f} s.\n\n"
        + table(results)
        + "\n* extrapolated linearly in the append count from a lake built only in part "
        "(see the notes).\n\n" + notes(results)
    )
    print(md)
    if args.out:
        Path(args.out).write_text(md)
    if args.json:
        Path(args.json).write_text(
            json.dumps([{**r.__dict__, "opens": list(r.opens.items())} for r in results], indent=1)
        )


if __name__ == "__main__":
    main()
