"""A plain torch DataLoader with forked workers over a lake in a bucket (moto on 127.0.0.1)."""

import dask.config
import numpy as np
import pytest
import torch.utils.data

import lakeio
from lakeio.format.location import Location


@pytest.fixture(scope="module")
def s3_lake(small_lake, s3_options):
    """The small lake copied into the bucket, byte for byte."""
    local = Location.of(small_lake[0])
    url = "s3://lakeio-test/forked.lake"
    Location.of(url, s3_options).fs.put(str(local.root) + "/", url + "/", recursive=True)
    return url


def test_forked_dataloader_workers_read_a_bucket_lake(s3_lake, s3_options, small_lake):
    labels = small_lake[2]
    ds = lakeio.open_dataset(s3_lake, storage_options=s3_options)
    loader = ds.loader(batch_size=32, seed=2, fields=("images", "labels"))
    expected = [(x.numpy().copy(), y.numpy().copy()) for x, y in loader]  # the parent reads first
    with dask.config.set({"lakeio.read.deadline": 5}):
        data = torch.utils.data.DataLoader(
            loader.as_iterable_dataset(),
            batch_size=None,
            num_workers=2,
            multiprocessing_context="fork",  # Linux's default, spelled out
        )
        got = [(x.numpy(), y.numpy()) for x, y in data]
    assert len(got) == len(expected) == len(loader)
    for (gx, gy), (ex, ey) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(gx, ex)
        np.testing.assert_array_equal(gy, ey)
    seen = np.concatenate([y for _, y in got])  # every sample once: the lake's label counts
    np.testing.assert_array_equal(np.bincount(seen), np.bincount(labels))
