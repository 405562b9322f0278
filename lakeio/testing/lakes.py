"""Small lakes whose every sample can be told apart, for checking batches sample by sample."""

from __future__ import annotations

import os

import numpy as np


def distinct_lake(
    path: str | os.PathLike,
    chunks: int = 48,
    chunk_samples: int = 8,
    seed: int = 0,
    **ingest,
) -> np.ndarray:
    """Ingest ``chunks`` × ``chunk_samples`` random 8×8 images (lz4, 4 classes) into ``path``,
    each made distinct by its first two bytes (its index); the images. ``ingest``: more
    arguments for `lakeio.ingest` (``cluster=``, ``storage_options=``)."""
    import lakeio

    rng = np.random.default_rng(seed)
    n = chunks * chunk_samples
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    labels = rng.integers(0, 4, n)
    lakeio.ingest(images, path, labels=labels, chunk_samples=chunk_samples, codec="lz4",
                  progress=False, echo=None, **ingest)  # fmt: skip
    return images


def labelled_arrays(
    n: int, seed: int, classes: int = 3, shape: tuple[int, ...] = (6, 5, 3)
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random uint8 images of ``shape`` and their labels in ``range(classes)``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, classes, n)


def ingest_arrays(data: tuple[np.ndarray, np.ndarray], dest, client, **ingest):
    """Ingest ``(images, labels)`` into ``dest`` on ``client``'s cluster, 8 samples a chunk,
    quietly; ``ingest``: more arguments for `lakeio.ingest` (``mode=``, ``format_version=``)."""
    import lakeio

    images, labels = data
    return lakeio.ingest(images, dest, labels=labels, cluster=client, chunk_samples=8,
                         progress=False, echo=None, **ingest)  # fmt: skip
