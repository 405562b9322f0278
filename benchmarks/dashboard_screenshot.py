"""A screenshot of the lakeio dashboard page (``/lakeio``) for the docs.

Run: .venv/bin/python benchmarks/dashboard_screenshot.py [--out docs/dashboard-lakeio.png]

Needs Chromium on the PATH as ``chromium`` (Debian/Ubuntu: ``apt-get install -y chromium``);
nothing else beyond lakeio's own dependencies, and no network (everything is on 127.0.0.1).

What it does: starts a LocalCluster of 2 single-threaded worker processes, ingests 2,000 64x64
photo crops into a lake in a temporary folder, streams 3 shuffled epochs through
``ds.loader(256, cluster=client)`` (a 50 ms sleep per batch stands in for training) with a
memory tier per worker of 3/4 of the lake (so only affinity lets the cluster hold it), waits until the workers' heartbeats have carried
the final figures to the scheduler, and then — with the cluster still running — has headless
Chromium load ``http://127.0.0.1:PORT/lakeio`` and save a 1200x700 screenshot.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import numpy as np
from distributed import Client, LocalCluster

import lakeio
from lakeio.testing.images import photo_crops

IMAGES, SIZE, CHUNK_SAMPLES, BATCH, EPOCHS = 2000, (64, 64), 64, 256, 3
STEP_S = 0.05  # a pretend training step per batch, so the stall figure means something


def chromium() -> str:
    """The Chromium binary, or a clear error saying how to get it."""
    path = shutil.which("chromium")
    if path is None:
        raise SystemExit(
            "chromium was not found on the PATH; install it first "
            "(Debian/Ubuntu: apt-get install -y chromium)"
        )
    return path


def lake_bytes(path: str) -> int:
    """Bytes the lake takes on disk (about what the memory tiers hold: stored chunk bytes)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def wait_for_figures(base: str, chunks: int, batches: int, timeout: float = 30.0) -> dict:
    """/lakeio.json once the scheduler shows every served chunk and the trainer's last batch."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(base + "/lakeio.json", timeout=10) as response:
            figures = json.load(response)
        served = sum(w["chunks"] for w in figures["workers"].values())
        trainers = [t["batches"] for t in figures["trainers"].values()]
        if served == chunks and trainers == [batches]:
            return figures
        if time.monotonic() > deadline:
            raise TimeoutError(f"the dashboard did not catch up: {figures}")
        time.sleep(0.2)


def screenshot(url: str, out: str, size: tuple[int, int] = (1200, 700)) -> None:
    with tempfile.TemporaryDirectory(prefix="lakeio-chromium-") as profile:
        command = [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
            f"--screenshot={out}", url,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not os.path.exists(out):
        raise RuntimeError(f"chromium failed ({done.returncode}):\n{done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/dashboard-lakeio.png")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    chromium()  # fail before the work if it is missing
    work = tempfile.mkdtemp(prefix="lakeio-dashboard-")
    try:
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0",
                silence_logs=50,
            ) as cluster,
            Client(cluster) as client,
        ):  # fmt: skip
            pairs = list(photo_crops(IMAGES, SIZE, seed=0))
            images = np.stack([p for p, _ in pairs])
            labels = np.array([label for _, label in pairs])
            path = os.path.join(work, "lake")
            lakeio.ingest(
                images, path, labels=labels, cluster=client, chunk_samples=CHUNK_SAMPLES,
                progress=False, echo=None,
            )  # fmt: skip
            # Each worker owns about half the lake and gets a memory tier of three quarters of
            # it: no worker could cache the lake alone, the two together can (affinity).
            cache = lakeio.Cache(memory=lake_bytes(path) * 3 // 4)
            ds = lakeio.open_dataset(path, cache=cache)
            with ds.loader(BATCH, seed=0, cluster=client) as loader:
                for epoch in range(EPOCHS):
                    loader.set_epoch(epoch)
                    for _ in loader:
                        time.sleep(STEP_S)  # stands in for the training step
                stats = loader.stats()
                served = sum(w["chunks"] for w in stats["workers"].values())
                base = client.dashboard_link.rsplit("/", 1)[0]
                figures = wait_for_figures(base, served, stats["batches"])
                screenshot(base + "/lakeio", out)  # while the loader is open: its row shows
        print(f"wrote {out}")
        print(json.dumps(figures, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
