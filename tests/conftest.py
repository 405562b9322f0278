"""Shared fixtures: a real multi-process Dask cluster on 127.0.0.1 and real image folders."""

from __future__ import annotations

import pytest
from distributed import Client

from lakeio.testing.cluster import process_cluster
from lakeio.testing.images import write_image_folder


@pytest.fixture(scope="session")
def cluster_address():
    """`dask scheduler` + two `dask worker` processes, started once for the session."""
    with process_cluster(n_workers=2) as address:
        yield address


@pytest.fixture(scope="session")
def client(cluster_address):
    with Client(cluster_address, timeout="30s") as c:
        yield c


@pytest.fixture(scope="session")
def png_folder(tmp_path_factory):
    """120 lossless 32x32 photo crops in 8 classes: (root, [(relpath, pixels, label)])."""
    root = tmp_path_factory.mktemp("png-folder")
    written = write_image_folder(root, 120, size=(32, 32), fmt="png", seed=1)
    return root, written


@pytest.fixture(scope="session")
def small_lake(tmp_path_factory, client):
    """A 203-sample lake of 32x32 photo crops in 16-sample chunks: (path, images, labels)."""
    import numpy as np

    import lakeio
    from lakeio.testing.images import photo_crops

    pairs = list(photo_crops(203, (32, 32), seed=11))
    images = np.stack([p for p, _ in pairs])
    labels = np.array([label for _, label in pairs])
    path = tmp_path_factory.mktemp("small-lake") / "lake"
    lakeio.ingest(
        images,
        path,
        labels=labels,
        cluster=client,
        chunk_samples=16,
        codec="zstd:1",
        progress=False,
        echo=None,
    )
    return path, images, labels


@pytest.fixture(scope="session")
def s3_options():
    """An S3-compatible server (moto) on 127.0.0.1 with a bucket `lakeio-test`; yields s3fs options."""
    from lakeio.testing.s3server import moto_bucket

    with moto_bucket("lakeio-test") as options:
        yield options
