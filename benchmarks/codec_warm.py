"""Warm epochs with a memory tier of a quarter of the lake: lz4, zstd:3 and predict-zstd (issue 15).

Run: .venv/bin/python benchmarks/codec_warm.py [SIZE] [N]      # 64 20000, or 224 2000

The same photo crops ingested with each codec; each lake read with `Cache(memory=L/4)` (L: its
decoded size), so three quarters of every epoch are decoded again: the price of a smaller
lake once it is local. Four epochs a lake, the median of the last three; three rounds in
alternating order; medians, and each codec's rate as a multiple of lz4's.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

CODECS = ("lz4", "zstd:3", "predict-zstd")


def main() -> None:
    import lakeio
    from lakeio.loader.kernels import copy_rows_kernel
    from lakeio.testing.images import photo_crop_arrays

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    copy_rows_kernel(wait=True)
    images, labels = photo_crop_arrays(n, (size, size))
    quarter = (images.nbytes + labels.nbytes) // 4
    rates: dict[str, list[float]] = {codec: [] for codec in CODECS}
    with tempfile.TemporaryDirectory(prefix="lakeio-codec-warm-") as work:
        for codec in CODECS:
            lakeio.ingest(images, f"{work}/{codec}", labels=labels, codec=codec, progress=False,
                          echo=None)  # fmt: skip
        for round_ in range(3):
            for codec in CODECS if round_ % 2 == 0 else CODECS[::-1]:
                ds = lakeio.open_dataset(f"{work}/{codec}", cache=lakeio.Cache(memory=quarter))
                loader = ds.loader(256, seed=0)
                per_epoch = []
                for epoch in range(4):
                    loader.set_epoch(epoch)
                    started, seen = time.perf_counter(), 0
                    for x, _ in loader:
                        seen += len(x)
                    per_epoch.append(seen / (time.perf_counter() - started))
                rates[codec].append(statistics.median(per_epoch[1:]))
    lz4 = statistics.median(rates["lz4"])
    for codec, values in rates.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v:,.0f}" for v in values)
        print(
            f"{size}x{size} {codec}: {median:,.0f} img/s (rounds {rounds}); {median / lz4:.2f}x lz4"
        )


if __name__ == "__main__":
    main()
