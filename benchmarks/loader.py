"""Shuffled epochs into uint8 torch tensors: lakeio against the loaders a user would otherwise use.

Run: .venv/bin/python benchmarks/loader.py [--scale 1.0] [--out FILE]

All in one run on the same natural images (photo crops of scikit-image's photographs), two
epochs each, shuffled, batch 256 at 64x64 and 64 at 224x224:

- memmap:       a raw uncompressed .npy memmap read in shuffled batch order (the practical limit)
- Pillow JPEG:  torch DataLoader over a JPEG folder, Pillow decode, num_workers=2
- naive Zarr:   torch DataLoader over a map-style Dataset indexing a Zarr array one sample at a
                time, num_workers=2 (measured on a prefix of the epoch: it is slow)
- lakeio:       ds.loader(...) with codec lz4 and zstd:3 (memory tier large enough for epoch 2)
- lakeio cold:  first epoch with an empty disk tier in front of the lake vs. the warm epoch

Images/s per epoch; ratios are what to read (absolute numbers on shared machines are noise).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from PIL import Image

import lakeio
from lakeio.testing.images import photo_crops

CASES = [((64, 64), 20000, 256), ((224, 224), 4000, 64)]


class JpegFolder(torch.utils.data.Dataset):
    def __init__(self, files, labels):
        self.files, self.labels = files, labels

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as im:
            return torch.from_numpy(np.array(im.convert("RGB"))), int(self.labels[i])


class ZarrPerSample(torch.utils.data.Dataset):
    def __init__(self, path, labels, limit):
        self.path, self.labels, self.limit, self.array = path, labels, limit, None

    def __len__(self):
        return self.limit

    def __getitem__(self, i):
        import zarr

        if self.array is None:  # opened in each worker
            self.array = zarr.open_array(self.path, mode="r")
        return torch.from_numpy(self.array[i]), int(self.labels[i])


def timed_epochs(make_iter, epochs=2):
    rates = []
    for epoch in range(epochs):
        start, n = time.perf_counter(), 0
        for x, _ in make_iter(epoch):
            n += len(x)
        rates.append(n / (time.perf_counter() - start))
    return rates


def memmap_epochs(path, n, batch):
    mm = np.load(path, mmap_mode="r")

    def run(epoch):
        order = np.random.default_rng(epoch).permutation(n)
        for i in range(0, n, batch):
            idx = np.sort(order[i : i + batch])
            yield torch.from_numpy(mm[idx]), None

    return timed_epochs(run)


def dataloader_epochs(dataset, batch):
    def run(epoch):
        torch.manual_seed(epoch)
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch, shuffle=True, num_workers=2, persistent_workers=False
        )

    return timed_epochs(run)


def lakeio_epochs(url, batch, cache):
    ds = lakeio.open_dataset(url, cache=cache)
    loader = ds.loader(batch_size=batch, seed=0)

    def run(epoch):
        loader.set_epoch(epoch)
        return loader

    rates = timed_epochs(run)
    return rates, loader.stats()


def s3_origin_epochs(work, images, labels, batch):
    """First epoch from an S3-compatible origin (moto on 127.0.0.1) through a cold disk tier,
    then a warm one: what the disk tier is for."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    prefix = f"s3://bench/lake-{images.shape[1]}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = {"aws_access_key_id": "x", "aws_secret_access_key": "x"}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **creds).create_bucket(
            Bucket="bench"
        )
        options = {"key": "x", "secret": "x", "endpoint_url": endpoint}
        lakeio.ingest(
            images,
            prefix,
            labels=labels,
            storage_options=options,
            workers=2,
            progress=False,
            echo=None,
        )
        cache = lakeio.Cache(memory=0, disk=os.path.join(work, "s3-disk-tier"), disk_size="20GB")
        ds = lakeio.open_dataset(prefix, cache=cache, storage_options=options)
        loader = ds.loader(batch_size=batch, seed=0)

        def run(epoch):
            loader.set_epoch(epoch)
            return loader

        rates = timed_epochs(run)
        return rates
    finally:
        server.stop()


def prepare(work, size, count):
    pairs = list(photo_crops(count, size, seed=0))
    images = np.stack([p for p, _ in pairs])
    labels = np.array([label for _, label in pairs])
    np.save(os.path.join(work, "raw.npy"), images)
    files = []
    for i, img in enumerate(images):
        path = os.path.join(work, "jpeg", f"{i:06d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(img).save(path, quality=90)
        files.append(path)
    import zarr

    per_chunk = max(1, (4 << 20) // images[0].nbytes)
    z = zarr.create_array(
        os.path.join(work, "plain.zarr"),
        shape=images.shape,
        chunks=(per_chunk, *images.shape[1:]),
        dtype="uint8",
    )
    z[...] = images
    for codec in ("lz4", "zstd:3"):
        lakeio.ingest(
            images,
            os.path.join(work, f"lake-{codec}"),
            labels=labels,
            codec=codec,
            workers=2,
            progress=False,
            echo=None,
        )
    return images, labels, files


def run_case(work, size, count, batch):
    images, labels, files = prepare(work, size, count)
    n = len(images)
    rows = {}
    rows["memmap (raw .npy)"] = memmap_epochs(os.path.join(work, "raw.npy"), n, batch)
    rows["Pillow JPEG DataLoader, 2 workers"] = dataloader_epochs(JpegFolder(files, labels), batch)
    limit = min(n, 3000)
    rows[f"naive Zarr per sample, 2 workers (first {limit})"] = dataloader_epochs(
        ZarrPerSample(os.path.join(work, "plain.zarr"), labels, limit), batch
    )
    big = lakeio.Cache(memory="8GB")
    for codec in ("lz4", "zstd:3"):
        rates, _ = lakeio_epochs(os.path.join(work, f"lake-{codec}"), batch, big)
        rows[f"lakeio {codec}"] = rates
    disk = os.path.join(work, "disk-tier")
    rates, _ = lakeio_epochs(
        os.path.join(work, "lake-lz4"), batch, lakeio.Cache(memory=0, disk=disk, disk_size="20GB")
    )
    rows["lakeio lz4, disk tier only (cold, then warm)"] = rates
    rows["lakeio lz4 from S3 (moto), disk tier only (cold, then warm)"] = s3_origin_epochs(
        work, images, labels, batch
    )
    return rows


def render(size, count, batch, rows):
    memmap = rows["memmap (raw .npy)"][1]
    pillow = rows["Pillow JPEG DataLoader, 2 workers"][1]
    lines = [
        f"\n**{size[0]}x{size[1]}, {count} images, batch {batch}**\n",
        "| loader | epoch 1 img/s | epoch 2 img/s | epoch 2 / memmap | epoch 2 / Pillow | epoch 1 / epoch 2 |",
        "|---|---|---|---|---|---|",
    ]
    for name, (e1, e2) in rows.items():
        lines.append(
            f"| {name} | {e1:,.0f} | {e2:,.0f} | {e2 / memmap:.1%} | {e2 / pillow:.1f}x | {e1 / e2:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", help="also write the tables to this file")
    args = parser.parse_args()
    out = []
    for size, count, batch in CASES:
        count = int(count * args.scale)
        work = tempfile.mkdtemp(prefix="lakeio-loader-bench-")
        try:
            out.append(render(size, count, batch, run_case(work, size, count, batch)))
            print(out[-1], flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
