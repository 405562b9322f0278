"""Issue 10's memory scenario at full size: do two lake versions freeze the workers?

Run: .venv/bin/python benchmarks/worker_memory.py [--limit 1GB] [--images 14000]

Two `dask worker` processes with ``--memory-limit LIMIT`` (1 GB as in the report), a lake of
natural 128x128 photo crops larger than both workers' tiers together, ``Cache(memory="8GB")``
asked by the trainer. One epoch of version 1, then `lakeio stats` (version 2, the same
segments), then one epoch of version 2, then one epoch of another lake: the flow that paused
both workers at 81% of their limit for good when each snapshot had its own tier of half the
limit. Printed after each step: every worker's status, its process memory as a share of its
limit (sampled every 0.1 s during the step: the peak), the lakeio tier's bytes and capacity,
and what the tier shed.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", default="1GB", help="each worker's --memory-limit")
    p.add_argument("--images", type=int, default=14000, help="images per lake (128x128x3)")
    args = p.parse_args()

    from distributed import Client

    import lakeio
    from lakeio.cluster.worker import worker_stats
    from lakeio.stats import compute_stats
    from lakeio.testing.cluster import process_cluster
    from lakeio.testing.images import photo_crops
    from lakeio.testing.memory import worker_state

    with (
        tempfile.TemporaryDirectory(prefix="worker-memory-") as tmp,
        process_cluster(n_workers=2, memory_limit=args.limit) as address,
        Client(address, timeout="30s") as client,
    ):
        lakes = []
        for name, seed in (("a", 1), ("b", 2)):
            pairs = list(photo_crops(args.images, (128, 128), seed=seed))
            images = np.stack([x for x, _ in pairs])
            labels = np.array([y for _, y in pairs])
            path = Path(tmp) / name
            lakeio.ingest(images, path, labels=labels, cluster=client, codec="lz4",
                          progress=False, echo=None)  # fmt: skip
            lakes.append(path)
            print(f"lake {name}: {images.nbytes / 1e6:,.0f} MB decoded", flush=True)
        cache = lakeio.Cache(memory="8GB")

        def peak_during(step) -> dict[str, float]:
            peaks: dict[str, float] = {}
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    for w, s in client.run(worker_state).items():
                        peaks[w] = max(peaks.get(w, 0.0), s["rss"] / s["limit"])
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.monotonic()
            try:
                step()
            finally:
                done.set()
                sampler.join()
            print(f"  took {time.monotonic() - started:.1f} s")
            return peaks

        def epoch(path) -> None:
            ds = lakeio.open_dataset(path, cache=cache)
            with ds.loader(256, seed=0, cluster=client, prefetch_next_epoch=False) as loader:
                for _ in loader:
                    pass

        steps = [
            ("epoch of lake a, version 1", lambda: epoch(lakes[0])),
            ("lakeio stats of lake a (version 2)", lambda: compute_stats(lakes[0], cluster=client, echo=None)),
            ("epoch of lake a, version 2", lambda: epoch(lakes[0])),
            ("epoch of lake b", lambda: epoch(lakes[1])),
        ]  # fmt: skip
        for name, step in steps:
            print(name, flush=True)
            peaks = peak_during(step)
            states = client.run(worker_state)
            for w, f in sorted(client.run(worker_stats).items()):
                s = states[w]
                print(
                    f"  {w}: {s['status']}, memory {s['rss'] / s['limit']:.0%} of the limit "
                    f"(peak {peaks.get(w, 0):.0%}), tier {f['memory_bytes'] / 1e6:,.0f} / "
                    f"{f['memory_capacity'] / 1e6:,.0f} MB, shed {f['memory_shed_bytes'] / 1e6:,.0f}"
                    f" MB in {f['memory_sheds']} steps",
                    flush=True,
                )


if __name__ == "__main__":
    main()
