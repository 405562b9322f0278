"""`lakeio stats`: per-channel mean and std and the class histogram, computed on a Dask cluster.

The figures are exact (per-channel histograms of the uint8 pixel values, summed, one pass) and are
committed into the lake's manifest as a new version, so every trainer can normalise with the
same numbers (``ds.loader(..., normalize="lake")``) without reading the lake again. An append
drops them (they would describe other samples); run the command again after it.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import dask
import numpy as np
from distributed import Client

from lakeio.cache.config import Cache
from lakeio.cluster.connect import completed, dask_client
from lakeio.dataset import open_dataset
from lakeio.errors import CommitConflictError, LakeError
from lakeio.format.manifest import Manifest, commit_manifest
from lakeio.format.root import publish_root_summary


def _histograms(block: np.ndarray) -> np.ndarray:
    """Per-channel counts of each pixel value 0..255 in one (n, H, W, C) uint8 block: (C, 256)."""
    channels = block.shape[-1]
    return np.stack(
        [np.bincount(block[..., c].reshape(-1), minlength=256) for c in range(channels)]
    ).astype(np.int64)


def compute_stats(
    url: str | os.PathLike,
    *,
    cluster: Client | str | None = None,
    workers: int | None = None,
    storage_options: dict | None = None,
    force: bool = False,
    echo=print,
) -> dict[str, Any]:
    """Compute the lake's image statistics on the cluster and commit them; returns them (with
    ``stored_in_version``, the lake version that now carries them). If the latest version
    already carries them, nothing is computed or written (``up_to_date``) unless ``force``.

    ``mean``/``std`` are per channel in pixel units (0..255), population std over every pixel.
    """
    # one pass: caching chunks on the workers would only take memory from whatever runs next
    ds = open_dataset(url, storage_options=storage_options, cache=Cache(memory=0))
    if "images" not in ds.fields or len(ds.manifest.fields["images"].shape) != 3:
        raise LakeError(f"{ds.loc.describe()}: stats need an (N, H, W, C) images field")
    if len(ds) == 0:
        raise LakeError(f"{ds.loc.describe()}: the lake is empty; nothing to compute")
    if ds.manifest.stats.get("images") and not force:
        # stored stats are current by construction: any change to the samples drops them
        return {**ds.manifest.stats, "stored_in_version": ds.version, "up_to_date": True}
    arrays = ds.to_dask()
    token = dask.base.tokenize(ds.loc.url, ds.version)
    blocks = arrays["images"].to_delayed().ravel()
    parts = [
        dask.delayed(_histograms)(block, dask_key_name=f"lakeio-stats-{token}-{i}")
        for i, block in enumerate(blocks)
    ]
    # the class histogram is in the manifest wherever the lake knows its class counts: the
    # labels are read only where it does not (and the counts are then stored with the stats)
    known = ds.manifest.lake_class_counts()
    known = known if sum(known) == len(ds) else ()
    labels = [] if known else [_class_counts(arrays["labels"], len(ds.classes))]
    with dask_client(cluster, workers=workers, echo=echo) as client:
        futures = client.compute(
            [dask.delayed(sum)(parts, dask_key_name=f"lakeio-stats-{token}"), *labels]
        )
        for _ in completed(client, futures):  # an error if every worker goes for good
            pass
        histograms, *counted = (f.result() for f in futures)
    counts = np.asarray(known if known else counted[0], dtype=np.int64)
    stats = _summarize(histograms, counts, ds.manifest)
    committed = _commit_stats(ds.loc, ds.manifest, stats, tuple(counts.tolist()))
    return {**stats, "stored_in_version": committed.version}


def _class_counts(labels, classes: int):
    import dask.array as da

    return da.bincount(labels.astype(np.int64), minlength=max(1, classes))


def _summarize(histograms: np.ndarray, counts: np.ndarray, manifest: Manifest) -> dict[str, Any]:
    """Mean and population std per channel from value histograms, in exact integer arithmetic
    (Python ints: no overflow however large the lake)."""
    mean, std, pixels = [], [], 0
    for histogram in histograms:
        counts_by_value = [int(v) for v in histogram]
        pixels = sum(counts_by_value)
        total = sum(v * n for v, n in enumerate(counts_by_value))
        squares = sum(v * v * n for v, n in enumerate(counts_by_value))
        mean.append(total / pixels)
        std.append(math.sqrt((pixels * squares - total * total) / pixels**2))
    return {
        "samples": manifest.samples,
        "of_version": manifest.version,
        "images": {"mean": mean, "std": std, "pixels_per_channel": pixels, "units": "0..255"},
        "class_histogram": [int(c) for c in counts],
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _commit_stats(loc, manifest: Manifest, stats: dict[str, Any], counts: tuple) -> Manifest:
    event = {"op": "stats", "time": stats["time"], "of_version": manifest.version}
    candidate = replace(
        manifest,
        stats=stats,
        history=(*manifest.history, event),
        class_counts=manifest.class_counts or counts,  # (version 2; version 1 keeps its own)
    )
    try:
        committed = commit_manifest(loc, candidate)
    except CommitConflictError as exc:
        raise LakeError(
            f"{exc}; the statistics describe version {manifest.version} — run again"
        ) from None
    publish_root_summary(loc, committed)
    return committed
