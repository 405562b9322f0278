"""Ingest throughput against the single-process Pillow decode limit, and a codec table.

Run: .venv/bin/python benchmarks/ingest.py [--out docs/benchmarks-ingest.md]
     .venv-peers/bin/python benchmarks/ingest.py --only split   # the fixed cost and the
         per-image rate, beside FFCV's DatasetWriter (FFCV is in the peers environment)

Everything is measured in one run on the same files: JPEG folders of natural photo crops at
64x64 and 224x224; a plain single-process loop (read file, Pillow decode, to RGB ndarray) is the
decode limit a user gets without lakeio; lakeio ingest on a LocalCluster of 1 and 2 worker
processes (cluster start-up excluded, reported separately). Ratios matter, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster
from PIL import Image

import lakeio
from lakeio.cluster.connect import warm_worker
from lakeio.format.chunks import decompress
from lakeio.format.codecs import parse_codec
from lakeio.testing.images import write_image_folder

CASES = [((64, 64), 20000), ((224, 224), 3000)]
CODECS = [
    "none",
    "lz4",
    "zstd:1",
    "zstd:3",
    "zstd:9",
    "gzip:6",
    "blosc-lz4:5:bitshuffle",
    "blosc-zstd:1:noshuffle",
    "blosc-zstd:5:bitshuffle",
]


def pil_decode_loop(root: str) -> tuple[float, int]:
    """The baseline: one process reading and decoding every file with Pillow."""
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    start = time.perf_counter()
    total = 0
    for path in files:
        with open(path, "rb") as fh, Image.open(fh) as im:
            total += np.asarray(im.convert("RGB")).shape[0]
    return time.perf_counter() - start, len(files)


def pil_to_zarr_loop(root: str, dest: str, size: tuple[int, int]) -> float:
    """What a user writes by hand: decode with Pillow, write chunks into one zarr array (lz4)."""
    import zarr

    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    per_chunk = max(1, (4 << 20) // (size[0] * size[1] * 3))
    start = time.perf_counter()
    array = zarr.create_array(
        dest, shape=(len(files), *size, 3), chunks=(per_chunk, *size, 3), dtype="uint8",
        compressors=parse_codec("lz4").compressors(),
    )  # fmt: skip
    batch = np.empty((per_chunk, *size, 3), dtype=np.uint8)
    for first in range(0, len(files), per_chunk):
        names = files[first : first + per_chunk]
        for i, path in enumerate(names):
            with open(path, "rb") as fh, Image.open(fh) as im:
                batch[i] = np.asarray(im.convert("RGB"))
        array[first : first + len(names)] = batch[: len(names)]
    return time.perf_counter() - start


def lakeio_ingest(root: str, dest: str, workers: int) -> tuple[float, float, int]:
    start = time.perf_counter()
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.run(warm_worker)
        startup = time.perf_counter() - start
        t0 = time.perf_counter()
        summary = lakeio.ingest(root, dest, cluster=client, progress=False, echo=None)
        return time.perf_counter() - t0, startup, summary.written


def codec_table(images: np.ndarray) -> list[tuple]:
    """Ratio and (de)compression speed per codec over 4 MiB chunks of natural images."""
    import numcodecs
    from zarr.codecs import BloscCodec  # noqa: F401  (zarr's codecs wrap these numcodecs ones)

    per_chunk = max(1, (4 << 20) // images[0].nbytes)
    chunks = [
        np.ascontiguousarray(images[i : i + per_chunk]) for i in range(0, len(images), per_chunk)
    ]
    raw_bytes = sum(c.nbytes for c in chunks)
    rows = []
    for spec_text in CODECS:
        spec = parse_codec(spec_text)
        if spec.name == "none":
            encode = bytes
        elif spec.name == "zstd":
            encode = numcodecs.Zstd(level=spec.level).encode
        elif spec.name == "gzip":
            encode = numcodecs.GZip(level=spec.level).encode
        else:
            cname = "lz4" if spec.name == "lz4" else spec.name.split("-")[1]
            shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[spec.shuffle]
            encode = numcodecs.Blosc(cname=cname, clevel=spec.level, shuffle=shuffle).encode
        t_enc = t_dec = float("inf")
        for _ in range(3):  # best of three: the first pass pays for page faults
            t0 = time.perf_counter()
            encoded = [bytes(encode(c)) for c in chunks]
            t_enc = min(t_enc, time.perf_counter() - t0)
            t0 = time.perf_counter()
            for e, c in zip(encoded, chunks, strict=True):
                assert len(decompress(e, spec, "bench")) == c.nbytes
            t_dec = min(t_dec, time.perf_counter() - t0)
        stored = sum(len(e) for e in encoded)
        rows.append(
            (spec_text, raw_bytes / stored, raw_bytes / t_enc / 1e6, raw_bytes / t_dec / 1e6)
        )
    return rows


# --- The fixed cost and the per-image rate -----------------------------------------------------
#
# A run's time is (fixed cost) + (images / per-image rate). Both tools ingest the first SMALL
# files of a folder and then the whole folder; the rate is the slope between the two, the fixed
# cost what the small run takes beyond its images. The CLI's fixed cost is the wall time of
# `lakeio ingest` on the small folder in a fresh process, imports included, as a user meets it.

SMALL = 10
LAKEIO_CLI = str(Path(sys.executable).with_name("lakeio"))
FORCE_PROCESSES = {"DASK_LAKEIO__INGEST__IN_PROCESS_BELOW": "0"}


def _files(root: str) -> list[tuple[str, int]]:
    classes = sorted(os.listdir(root))
    return [
        (os.path.join(root, c, f), label)
        for label, c in enumerate(classes)
        for f in sorted(os.listdir(os.path.join(root, c)))
    ]


def _first_files(root: str, dest: str, count: int) -> str:
    """A folder holding the first ``count`` files of ``root`` (same classes, hard links)."""
    for path, _ in _files(root)[:count]:
        target = os.path.join(dest, os.path.relpath(path, root))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.link(path, target)
    return dest


def cli_wall_s(src: str, dest: str, env: dict) -> float:
    """Wall time of one `lakeio ingest` in a fresh process (what a user waits for)."""
    shutil.rmtree(dest, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([LAKEIO_CLI, "ingest", src, dest, "--quiet"], check=True, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def lakeio_run_s(src: str, dest: str) -> float:
    """`lakeio.ingest` with its own LocalCluster of 2 worker processes, start-up included."""
    import dask.config

    shutil.rmtree(dest, ignore_errors=True)
    start = time.perf_counter()
    with dask.config.set({"lakeio.ingest.in-process-below": 0}):
        lakeio.ingest(src, dest, workers=2, progress=False, echo=None)
    return time.perf_counter() - start


class _PillowFolder:
    """What an FFCV user writes: an indexed dataset of (PIL image, label), like ImageFolder."""

    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        path, label = self.files[i]
        with Image.open(path) as im:
            return im.convert("RGB"), label


def ffcv_run_s(files, dest: str) -> float:
    """FFCV's DatasetWriter with 2 workers, raw pixels (RGBImageField's default), same files."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    if os.path.exists(dest):
        os.remove(dest)
    start = time.perf_counter()
    fields = {"image": RGBImageField(), "label": IntField()}
    DatasetWriter(dest, fields, num_workers=2).from_indexed_dataset(_PillowFolder(files))
    return time.perf_counter() - start


def _has_ffcv() -> bool:
    try:
        import ffcv.writer  # noqa: F401
    except ImportError:
        return False
    return True


def split_table(work: str, scale: float, rounds: int) -> list[str]:
    """Fixed cost and per-image rate of lakeio (and FFCV where installed), rounds alternating."""
    lines = [
        "| images | tool | fixed cost s | per-image rate img/s (2 workers) | rate / FFCV's |",
        "|---|---|---|---|---|",
    ]
    ffcv = _has_ffcv()
    for size, count in CASES:
        count = int(count * scale)
        root = os.path.join(work, f"split-{size[0]}")
        write_image_folder(root, count, size=size, fmt="jpg", seed=1)
        small = _first_files(root, os.path.join(work, f"split-{size[0]}-small"), SMALL)
        files = _files(root)
        runs: dict[str, list[tuple[float, float]]] = {"lakeio": [], "FFCV": []}
        lakeio_run_s(small, os.path.join(work, "split-lake"))  # this process's first imports
        if ffcv:
            ffcv_run_s(files[:SMALL], os.path.join(work, "split.beton"))
        for _ in range(rounds):
            lake = os.path.join(work, "split-lake")
            runs["lakeio"].append((lakeio_run_s(small, lake), lakeio_run_s(root, lake)))
            if ffcv:
                beton = os.path.join(work, "split.beton")
                runs["FFCV"].append((ffcv_run_s(files[:SMALL], beton), ffcv_run_s(files, beton)))
        rates = {
            tool: [(count - SMALL) / (big - little) for little, big in pairs]
            for tool, pairs in runs.items()
            if pairs
        }
        for tool, pairs in runs.items():
            if not pairs:
                continue
            fixed = [
                little - SMALL / rate for (little, _), rate in zip(pairs, rates[tool], strict=True)
            ]
            ratio = "—"
            if tool == "lakeio" and "FFCV" in rates:
                per_round = [a / b for a, b in zip(rates["lakeio"], rates["FFCV"], strict=True)]
                ratio = f"{statistics.median(per_round):.2f}x ({min(per_round):.2f}–{max(per_round):.2f})"
            lines.append(
                f"| {size[0]}x{size[1]} JPEG, {count} | {tool} | {statistics.median(fixed):.2f} | "
                f"{statistics.median(rates[tool]):,.0f} | {ratio} |"
            )
            print(lines[-1], flush=True)
    cli_lines = cli_fixed_cost(work, rounds * 2)
    return [*lines, "", *cli_lines]


def cli_fixed_cost(work: str, rounds: int) -> list[str]:
    """`lakeio ingest` of 10 JPEGs from a shell: the small-job path against worker processes."""
    src = os.path.join(work, "cli-small")
    write_image_folder(src, SMALL, size=(64, 64), fmt="jpg", seed=2)
    dest = os.path.join(work, "cli-lake")
    # Python's default writes .pyc files; this machine sets PYTHONDONTWRITEBYTECODE=1, which
    # would make every run compile lakeio's modules again (~0.1 s) where a user's would not.
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    variants = {
        "threads in this process (default below 2,000 files)": cached,
        "worker processes and the dashboard (before)": {**cached, **FORCE_PROCESSES},
    }
    cli_wall_s(src, dest, cached)  # writes the .pyc files a user's first run would
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, env in variants.items():
            times[name].append(cli_wall_s(src, dest, env))
    lines = ["| `lakeio ingest` of 10 JPEGs | wall s, median | min–max |", "|---|---|---|"]
    for name, t in times.items():
        lines.append(f"| {name} | {statistics.median(t):.2f} | {min(t):.2f}–{max(t):.2f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the image counts")
    parser.add_argument("--out", help="write the markdown tables here too")
    parser.add_argument(
        "--only", choices=["split"], help="only the fixed cost and per-image rate tables"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds for --only split")
    parser.add_argument(
        "--lake-dir", help="write the lakes under this folder (default: next to the images)"
    )
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="lakeio-bench-")
    if args.only == "split":
        try:
            lines = split_table(work, args.scale, args.rounds)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if args.out:
            with open(args.out, "w") as fh:
                fh.write("\n".join(lines) + "\n")
        return
    lines = [
        "| images | count | Pillow decode loop img/s | Pillow + zarr write loop img/s | lakeio 1 worker img/s | lakeio 2 workers img/s | 2 workers / decode loop | 2 workers / Pillow + zarr | 2 workers / 1 worker | cluster start s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    try:
        for size, count in CASES:
            count = int(count * args.scale)
            root = os.path.join(work, f"jpeg-{size[0]}")
            write_image_folder(root, count, size=size, fmt="jpg", seed=0)
            pil_t, n = pil_decode_loop(root)
            pil_t, n = min(pil_t, pil_decode_loop(root)[0]), n  # warm page cache, best of two
            rates = {}
            startup = 0.0
            for workers in (1, 2):
                dest = os.path.join(
                    args.lake_dir or work, f"lake-{size[0]}-{workers}-{os.getpid()}"
                )
                t, startup, written = lakeio_ingest(root, dest, workers)
                assert written == n
                rates[workers] = n / t
            pil_rate = n / pil_t
            zarr_dest = os.path.join(args.lake_dir or work, f"zarr-{size[0]}-{os.getpid()}")
            zarr_rate = n / pil_to_zarr_loop(root, zarr_dest, size)
            lines.append(
                f"| {size[0]}x{size[1]} JPEG | {n} | {pil_rate:,.0f} | {zarr_rate:,.0f} | {rates[1]:,.0f} | "
                f"{rates[2]:,.0f} | {rates[2] / pil_rate:.2f}x | {rates[2] / zarr_rate:.2f}x | "
                f"{rates[2] / rates[1]:.2f}x | {startup:.1f} |"
            )
            print(lines[-1], flush=True)
        ds = lakeio.open_dataset(os.path.join(args.lake_dir or work, f"lake-64-1-{os.getpid()}"))
        images = ds.to_dask()["images"].compute()
        codec_lines = ["| codec | ratio | compress MB/s | decompress MB/s |", "|---|---|---|---|"]
        for spec, ratio, enc, dec in codec_table(images):
            if spec == "none":  # nothing to do but copy: speeds are not meaningful
                codec_lines.append(f"| `{spec}` | {ratio:.2f} | — | — |")
            else:
                codec_lines.append(f"| `{spec}` | {ratio:.2f} | {enc:,.0f} | {dec:,.0f} |")
        print("\n".join(codec_lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.lake_dir:
            for name in os.listdir(args.lake_dir):
                if name.endswith(f"-{os.getpid()}"):
                    shutil.rmtree(os.path.join(args.lake_dir, name), ignore_errors=True)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n\n" + "\n".join(codec_lines) + "\n")


if __name__ == "__main__":
    main()
