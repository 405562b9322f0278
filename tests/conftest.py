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
