"""A first epoch from a bucket, lz4 against predict-zstd (issue 15).

Run: .venv/bin/python benchmarks/objectstore_codecs.py [ROUNDS]      # about 2 minutes

moto's S3 server on 127.0.0.1 behind `lakeio.testing.s3proxy.FaultProxy`, as in
benchmarks/objectstore.py, whose first epoch this reuses (a new loader, no memory or disk tier):
the same photo crops (20,000 at 64x64, 2,000 at 224x224) ingested with each codec, and a first
epoch of each timed in turns (after one untimed round), with the proxy capping each response at
100 MB/s and without a cap. Medians, and predict-zstd's rate as a multiple of lz4's.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys

import numpy as np

CODECS = ("lz4", "predict-zstd")
SETTINGS = {"100 MB/s per response": {"bandwidth": 100e6}, "no cap": {}}


def _objectstore():
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "objectstore", os.path.join(here, "objectstore.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lake(url: str, options: dict, n: int, size: int, codec: str) -> None:
    import lakeio
    from lakeio.testing.images import photo_crops

    pairs = list(photo_crops(n, (size, size), seed=size))
    images = np.stack([image for image, _ in pairs])
    labels = np.array([label for _, label in pairs])
    lakeio.ingest(images, url, labels=labels, codec=codec, storage_options=options,
                  progress=False, echo=None)  # fmt: skip


def main() -> None:
    from lakeio.testing.s3proxy import FaultProxy, ProxyFaults
    from lakeio.testing.s3server import moto_bucket

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    first_epoch = _objectstore()._epoch
    with moto_bucket("lakeio-bench", key="bench", secret="bench") as options:
        for name, n, size in (("64x64", 20000, 64), ("224x224", 2000, 224)):
            urls = {codec: f"s3://lakeio-bench/{name}-{codec}" for codec in CODECS}
            for codec, url in urls.items():
                _lake(url, options, n, size, codec)
            for label, faults in SETTINGS.items():
                times: dict[str, list[float]] = {codec: [] for codec in CODECS}
                for round_ in range(rounds + 1):
                    for codec in CODECS if round_ % 2 == 0 else CODECS[::-1]:
                        with FaultProxy(options["endpoint_url"], ProxyFaults(**faults)) as proxy:
                            through = {**options, "endpoint_url": proxy.endpoint}
                            seconds, _ = first_epoch(urls[codec], through, False)
                        if round_:  # (round 0 warms up, untimed)
                            times[codec].append(seconds)
                median = {codec: statistics.median(t) for codec, t in times.items()}
                shown = ", ".join(
                    f"{codec} {median[codec]:.2f} s ({', '.join(f'{t:.2f}' for t in times[codec])})"
                    for codec in CODECS
                )
                ratio = median["lz4"] / median["predict-zstd"]
                print(f"{name}, {label}: {shown}; predict-zstd {ratio:.2f}x lz4's rate", flush=True)


if __name__ == "__main__":
    main()
