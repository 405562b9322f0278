"""Shuffled epochs into uint8 tensors with the data loaders lakeio competes with.

Setup: bash benchmarks/peers-setup.sh   (builds .venv-peers; never touches .venv)
Run:   .venv-peers/bin/python benchmarks/peers.py [--scale 1.0] [--epochs 4] [--only WORDS]
           [--out benchmarks/peers-results.md]

On the same natural images (lakeio.testing.images.photo_crops, seed 0) as benchmarks/loader.py:
64x64 (20,000 images, batch 256) and 224x224 (4,000 images, batch 64). Each library writes its
own format into a temp dir, then shuffled epochs are timed with its recommended loader
(num_workers=2 where it has workers), consuming uint8 image tensors in this process; each warm
epoch is read against a memmap epoch timed right after it (the machine's speed drifts):

- memmap:      raw uncompressed .npy, np.load(mmap_mode="r"), sorted index per shuffled batch
- WebDataset:  tar shards of JPEG q90, WebDataset(...).shuffle(1000).decode("rgb8").batched(B), WebLoader
- LitData:     optimize() with ld.Jpeg(quality=90), StreamingDataset(shuffle=True) + StreamingDataLoader
- MosaicML:    MDSWriter ("jpeg" column, q90 files), StreamingDataset(shuffle=True) + DataLoader
- FFCV:        DatasetWriter + RGBImageField, Loader(order=RANDOM, os_cache=True),
               SimpleRGBImageDecoder + ToTensor; three write modes: raw (RGBImageField's default,
               FFCV's CIFAR recipe), jpg q90, and proportion 0.5 q90 (FFCV's ImageNet recipe)
- lakeio:      lakeio.ingest (lz4, zstd:3), one ds.loader(...) held across epochs, Cache(memory=8GB)

A library that does not import (see .venv-peers/install-status.txt) or fails is reported, not fatal.
Images/s per epoch; the ratio to memmap is what to read (absolute numbers on shared machines are noise).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import multiprocessing
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np
import torch
from PIL import Image

CASES = [((64, 64), 20000, 256), ((224, 224), 4000, 64)]
WORKERS = 2
QUALITY = 90


def load_photo_crops():
    """lakeio.testing.images.photo_crops without importing lakeio's package __init__ (which pulls
    in zarr and dask, left out of .venv-peers on purpose); the module needs only numpy, Pillow
    and scikit-image."""
    spec = importlib.util.find_spec("lakeio")
    root = (
        spec.submodule_search_locations[0]
        if spec and spec.submodule_search_locations
        else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lakeio")
    )
    path = os.path.join(root, "testing", "images.py")
    module_spec = importlib.util.spec_from_file_location("_lakeio_testing_images", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.photo_crops


def timed_epoch(batches, epoch, n):
    """Images/s of one epoch; batches(epoch) -> iterable of uint8 image tensors."""
    start, seen = time.perf_counter(), 0
    for x in batches(epoch):
        assert x.dtype == torch.uint8, x.dtype
        seen += x.shape[0]
    rate = seen / (time.perf_counter() - start)
    if seen != n:
        raise RuntimeError(f"epoch {epoch} yielded {seen} images, expected {n}")
    return rate


def measure(batches, reference, n, epochs):
    """The first epoch's rate, then each warm epoch's rate with the reference (memmap) epoch
    timed right after it: this machine's speed drifts by 2x within minutes, so each warm epoch
    is read against a reference measured beside it, not against one taken earlier."""
    first = timed_epoch(batches, 0, n)
    warm, shares = [], []
    for epoch in range(1, epochs):
        warm.append(timed_epoch(batches, epoch, n))
        shares.append(warm[-1] / timed_epoch(reference, epoch, n))
    return {"first": first, "warm": warm, "shares": shares}


# --- reference: raw memmap ---------------------------------------------------------------------


def run_memmap(work, images, labels, batch):
    path = os.path.join(work, "raw.npy")
    np.save(path, images)
    mm = np.load(path, mmap_mode="r")
    n = len(images)

    def batches(epoch):
        perm = np.random.default_rng(epoch).permutation(n)
        for i in range(0, n, batch):
            idx = np.sort(perm[i : i + batch])
            yield torch.from_numpy(mm[idx])

    return batches


# --- WebDataset --------------------------------------------------------------------------------


def run_webdataset(work, jpegs, labels, batch):
    import webdataset as wds

    root = os.path.join(work, "wds")
    os.makedirs(root)
    per_shard = -(-len(jpegs) // 16)  # 16 shards: enough for 2 workers and a shard shuffle
    with wds.ShardWriter(
        os.path.join(root, "shard-%06d.tar"), maxcount=per_shard, verbose=0
    ) as sink:
        for i, (data, label) in enumerate(zip(jpegs, labels, strict=True)):
            sink.write({"__key__": f"{i:08d}", "jpg": data, "cls": int(label)})
    urls = sorted(os.path.join(root, f) for f in os.listdir(root))

    def batches(epoch):
        dataset = (
            wds.WebDataset(urls, shardshuffle=len(urls), seed=epoch)
            .shuffle(1000)
            .decode("rgb8")
            .to_tuple("jpg", "cls")
            .batched(batch, partial=True)
        )
        for images, _ in wds.WebLoader(dataset, batch_size=None, num_workers=WORKERS):
            yield torch.as_tensor(images)  # DataLoader(batch_size=None) already made it a tensor

    return batches


# --- LitData -----------------------------------------------------------------------------------


def _litdata_sample(item):
    import litdata as ld

    image, label = item
    return {"image": ld.Jpeg(array=image, quality=QUALITY), "label": int(label)}


def run_litdata(work, images, labels, batch):
    import litdata as ld

    out = os.path.join(work, "litdata")
    start_method = multiprocessing.get_start_method()
    ld.optimize(
        fn=_litdata_sample,
        inputs=list(zip(images, labels.tolist(), strict=True)),
        output_dir=out,
        chunk_bytes="64MB",
        num_workers=WORKERS,
        verbose=False,
    )
    # optimize() forces the process-wide start method to "spawn"; put back the platform default
    # so that this and every later loader start their workers the same way (fork on Linux).
    multiprocessing.set_start_method(start_method, force=True)
    dataset = ld.StreamingDataset(out, shuffle=True, seed=0)
    loader = ld.StreamingDataLoader(dataset, batch_size=batch, num_workers=WORKERS)

    def batches(epoch):
        for sample in loader:  # images come decoded as (B, 3, H, W) uint8 tensors
            yield sample["image"]

    return batches


# --- MosaicML Streaming ------------------------------------------------------------------------


try:  # at module level so that DataLoader workers can unpickle it under any start method
    from streaming import StreamingDataset as _MDSBase
except Exception:  # not installed: run_mosaic reports the ImportError
    _MDSBase = object


class MDSImages(_MDSBase):
    def __getitem__(self, idx):
        obj = super().__getitem__(idx)  # {"image": PIL image, "label": int}
        return torch.from_numpy(np.array(obj["image"].convert("RGB"))), obj["label"]


def run_mosaic(work, jpeg_files, labels, batch):
    from streaming import MDSWriter
    from streaming.base.util import clean_stale_shared_memory

    out = os.path.join(work, "mds")
    columns = {"image": "jpeg", "label": "int"}
    with MDSWriter(out=out, columns=columns, size_limit="64mb") as writer:
        for path, label in zip(jpeg_files, labels, strict=True):
            with Image.open(path) as im:  # a JpegImageFile with a filename: stored as those bytes
                writer.write({"image": im, "label": int(label)})
    clean_stale_shared_memory()
    dataset = MDSImages(local=out, shuffle=True, shuffle_seed=0, batch_size=batch)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=WORKERS)

    def batches(epoch):
        for images, _ in loader:
            yield images

    return batches


# --- FFCV --------------------------------------------------------------------------------------


class _Indexed:
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def run_ffcv(work, images, labels, batch, field_kwargs, tag):
    from ffcv.fields import IntField, RGBImageField
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToTensor
    from ffcv.writer import DatasetWriter

    path = os.path.join(work, f"ffcv-{tag}.beton")
    fields = {"image": RGBImageField(**field_kwargs), "label": IntField()}
    DatasetWriter(path, fields, num_workers=WORKERS).from_indexed_dataset(_Indexed(images, labels))
    loader = Loader(
        path,
        batch_size=batch,
        num_workers=WORKERS,
        order=OrderOption.RANDOM,  # QUASI_RANDOM is for os_cache=False; the data fits in RAM
        os_cache=True,
        drop_last=False,
        pipelines={
            "image": [SimpleRGBImageDecoder(), ToTensor()],
            "label": [IntDecoder(), ToTensor()],
        },
    )

    def batches(epoch):
        for x, _ in loader:  # (B, H, W, 3) uint8
            yield x

    return batches


FFCV_MODES = {
    "raw": {},  # RGBImageField's default write_mode='raw' (FFCV's CIFAR example)
    "jpg q90": {"write_mode": "jpg", "jpeg_quality": QUALITY},
    "proportion 0.5 q90": {  # FFCV's ImageNet recipe
        "write_mode": "proportion",
        "compress_probability": 0.5,
        "jpeg_quality": QUALITY,
    },
}


# --- lakeio ------------------------------------------------------------------------------------


def run_lakeio(work, images, labels, batch, codec):
    import lakeio

    path = os.path.join(work, f"lake-{codec}")
    lakeio.ingest(
        images, path, labels=labels, codec=codec, workers=WORKERS, progress=False, echo=None
    )
    dataset = lakeio.open_dataset(path, cache=lakeio.Cache(memory="8GB"))
    loader = dataset.loader(batch_size=batch, seed=0)  # one loader, held across epochs

    def batches(epoch):
        loader.set_epoch(epoch)
        for x, _ in loader:  # (B, H, W, 3) uint8
            yield x

    return batches


# --- driver ------------------------------------------------------------------------------------


def prepare(work, size, count):
    photo_crops = load_photo_crops()
    pairs = list(photo_crops(count, size, seed=0))
    images = np.stack([p for p, _ in pairs])
    labels = np.array([label for _, label in pairs], dtype=np.int64)
    jpegs, files = [], []
    os.makedirs(os.path.join(work, "jpeg"))
    for i, image in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=QUALITY)
        jpegs.append(buf.getvalue())
        files.append(os.path.join(work, "jpeg", f"{i:08d}.jpg"))
        with open(files[-1], "wb") as fh:
            fh.write(jpegs[-1])
    return images, labels, jpegs, files


def run_case(work, size, count, batch, epochs, only):
    images, labels, jpegs, files = prepare(work, size, count)
    reference = run_memmap(work, images, labels, batch)
    loaders = {
        "memmap (raw .npy), reference": lambda: reference,
        "WebDataset, JPEG q90, 2 workers": lambda: run_webdataset(work, jpegs, labels, batch),
        "LitData, JPEG q90, 2 workers": lambda: run_litdata(work, images, labels, batch),
        "MosaicML Streaming, JPEG q90, 2 workers": lambda: run_mosaic(work, files, labels, batch),
    }
    for tag, kwargs in FFCV_MODES.items():
        loaders[f"FFCV {tag}, 2 workers"] = lambda kwargs=kwargs, tag=tag: run_ffcv(
            work, images, labels, batch, kwargs, tag
        )
    for codec in ("lz4", "zstd:3"):
        loaders[f"lakeio {codec}"] = lambda codec=codec: run_lakeio(
            work, images, labels, batch, codec
        )
    rows = {}
    for name, make in loaders.items():
        if only and not any(word.lower() in name.lower() for word in only):
            continue
        start = time.perf_counter()
        try:
            batches = make()
            written = time.perf_counter() - start
            rows[name] = measure(batches, reference, len(images), epochs)
            rows[name]["write_s"] = written
        except Exception as e:
            traceback.print_exc()
            rows[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
        print(f"  {name}: {rows[name]} ({time.perf_counter() - start:.0f} s)", flush=True)
    return rows


def render(size, count, batch, rows, epochs):
    lines = [
        f"\n**{size[0]}x{size[1]}, {count} images, batch {batch}**\n",
        f"| loader | epoch 1 img/s | warm img/s (median of {epochs - 1}) "
        "| warm / memmap, median (range) |",
        "|---|---|---|---|",
    ]
    for name, result in rows.items():
        if isinstance(result, str):
            lines.append(f"| {name} | failed: {result} | | |")
            continue
        shares = result["shares"]
        lines.append(
            f"| {name} | {result['first']:,.0f} | {statistics.median(result['warm']):,.0f} "
            f"| {statistics.median(shares):.1%} ({min(shares):.0%}–{max(shares):.0%}) |"
        )
    return "\n".join(lines)


def versions():
    import importlib.metadata as md

    parts = [f"Python {sys.version.split()[0]}", f"{os.cpu_count()} CPUs"]
    for dist in ("torch", "torchvision", "webdataset", "litdata", "mosaicml-streaming", "ffcv"):
        try:
            parts.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", help="also write the tables to this file")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per loader (first + warm)")
    parser.add_argument(
        "--only", default="", help="comma-separated words: run only loaders whose name has one"
    )
    args = parser.parse_args()
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable), *sys.argv])
    out = [
        "# Peer data loaders: shuffled epochs into uint8 tensors\n",
        f"Command (repo root): `{command}`\n",
        f"Environment: {versions()}\n",
    ]
    print("\n".join(out), flush=True)
    for size, count, batch in CASES:
        count = int(count * args.scale)
        work = tempfile.mkdtemp(prefix="lakeio-peers-bench-")
        try:
            only = [w for w in args.only.split(",") if w]
            rows = run_case(work, size, count, batch, args.epochs, only)
            out.append(render(size, count, batch, rows, args.epochs))
            print(out[-1], flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
