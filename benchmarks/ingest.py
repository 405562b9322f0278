"""Ingest throughput against the single-process Pillow decode limit, and a codec table.

Run: .venv/bin/python benchmarks/ingest.py [--out docs/benchmarks-ingest.md]

Everything is measured in one run on the same files: JPEG folders of natural photo crops at
64x64 and 224x224; a plain single-process loop (read file, Pillow decode, to RGB ndarray) is the
decode limit a user gets without lakeio; lakeio ingest on a LocalCluster of 1 and 2 worker
processes (cluster start-up excluded, reported separately). Ratios matter, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the image counts")
    parser.add_argument("--out", help="write the markdown tables here too")
    parser.add_argument(
        "--lake-dir", help="write the lakes under this folder (default: next to the images)"
    )
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="lakeio-bench-")
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
