"""The lakeio demo: build a small real image set, ingest it on a local Dask cluster, compute its
statistics there, and train on it.

Run with `make demo` (which sets up .venv first) or `python examples/demo.py [OUT_DIR]`.

The images are crops of the colour photographs that scikit-image ships (astronaut, coffee,
chelsea the cat, ...), one class per photograph, saved as JPEG and PNG files of varied sizes in
the ImageFolder layout, plus a few broken files to show the reject report. Nothing is
downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from lakeio.cli import main as lakeio_cli
from lakeio.testing.images import PHOTOS, load_photo

PER_CLASS = 120


def build_image_folder(root: str, per_class: int = PER_CLASS, seed: int = 0) -> int:
    """Write ``per_class`` random crops of each shipped photograph; returns the number written."""
    rng = np.random.default_rng(seed)
    count = 0
    for name in PHOTOS:
        photo = load_photo(name)
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            side = int(rng.integers(72, 200))
            h, w = (
                min(side, photo.shape[0]),
                min(int(side * rng.uniform(0.8, 1.25)), photo.shape[1]),
            )
            y, x = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
            crop = Image.fromarray(photo[y : y + h, x : x + w])
            if i % 3 == 0:
                crop.save(os.path.join(folder, f"{i:04d}.png"))
            else:
                crop.save(os.path.join(folder, f"{i:04d}.jpg"), quality=int(rng.integers(75, 95)))
            count += 1
    # what real folders contain too: a truncated download and a mislabelled file
    with open(os.path.join(root, "coffee", "0001.jpg"), "rb") as fh:
        data = fh.read()
    with open(os.path.join(root, "coffee", "truncated.jpg"), "wb") as fh:
        fh.write(data[: len(data) // 3])
    with open(os.path.join(root, "rocket", "notes.png"), "w") as fh:
        fh.write("not an image")
    return count


def main(out: str = "demo-output") -> int:
    images, lake = os.path.join(out, "images"), os.path.join(out, "photos.lake")
    if not os.path.isdir(images):
        n = build_image_folder(images)
        print(f"built {n} photo crops in {len(PHOTOS)} classes under {images}/")
    print(f"\n$ lakeio ingest {images} {lake} --size 64x64 --workers 2")
    status = lakeio_cli(["ingest", images, lake, "--size", "64x64", "--workers", "2"])
    if status:
        return status
    print(f"\n$ lakeio info {lake}")
    lakeio_cli(["info", lake])
    print(f"\n$ lakeio verify {lake}")
    status = lakeio_cli(["verify", lake, "--quiet"])
    if status:
        return status
    print(f"\n$ lakeio stats {lake} --workers 2")
    status = lakeio_cli(["stats", lake, "--workers", "2"])  # training normalises with these
    if status:
        return status
    return train(lake)


def train(lake: str, epochs: int = 6) -> int:
    """Train the small CNN on 2 CPU ranks (torchrun, gloo) through lakeio's loader."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_ddp.py")
    command = [
        torchrun,
        "--standalone",
        "--nproc_per_node=2",
        script,
        lake,
        "--epochs",
        str(epochs),
    ]
    print(
        f"\n$ torchrun --standalone --nproc_per_node=2 examples/train_ddp.py {lake} --epochs {epochs}"
    )
    run = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    epochs_log = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    for e in epochs_log:
        print(
            f"epoch {e['epoch']}: loss {e['loss']:.3f}  held-out accuracy {e['held_out_accuracy']:.1%}  "
            f"{e['images_per_s']:,} images/s  stall {e['stall_pct']}%  memory-tier hit rate {e['memory_hit_rate']:.0%}"
        )
    if run.returncode or not epochs_log:
        print(f"training failed (exit status {run.returncode})", file=sys.stderr)
        return run.returncode or 1
    last = epochs_log[-1]
    print(
        f"\nheld-out accuracy after {len(epochs_log)} epochs: {last['held_out_accuracy']:.1%} "
        f"(chance: {1 / 8:.1%}); loader stalled the training loop {last['stall_pct']}% of the last epoch"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
