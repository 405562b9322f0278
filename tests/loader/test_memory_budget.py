"""One memory number: `Cache(memory=X)` bounds the decoded chunks a loader holds, its prefetch
window included, and a window that does not fit shrinks with one warning."""

import tracemalloc
import warnings

import numpy as np
import pytest

import lakeio
from lakeio.cache.config import Cache
from lakeio.dataset import BATCH_ARRAYS_KEPT
from lakeio.errors import LakeWarning
from lakeio.loader.kernels import copy_rows_kernel

SAMPLES, SIDE, CHUNK = 2000, 32, 64  # 32 chunks of 192 KiB: a 6 MiB lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory, client):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (SAMPLES, SIDE, SIDE, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, SAMPLES)
    path = tmp_path_factory.mktemp("budget") / "lake"
    lakeio.ingest(images, path, labels=labels, chunk_samples=CHUNK, codec="lz4", cluster=client,
                  progress=False, echo=None)  # fmt: skip
    return path, images, labels


def test_a_lake_four_times_the_budget_is_read_within_it(lake):
    path, images, labels = lake
    lake_bytes = images.nbytes + labels.nbytes
    budget = lake_bytes // 4
    ds = lakeio.open_dataset(path, cache=Cache(memory=budget))
    with pytest.warns(LakeWarning, match=r"the shuffle window is \d chunks instead"):
        loader = ds.loader(batch_size=32, seed=1)
    batch_bytes = 32 * (images[0].nbytes + 8)
    copy_rows_kernel(wait=True)  # (numba's compiler is not the loader's memory)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for epoch in range(2):
            loader.set_epoch(epoch)
            for (x, y), ids in zip(loader, loader.batches(), strict=True):
                np.testing.assert_array_equal(x.numpy(), images[ids])
                np.testing.assert_array_equal(y.numpy(), labels[ids])
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    # the tier and the prefetch window within the budget; besides them, the batches in
    # flight (queued, being copied, the arrays kept for reuse) and the plans
    in_flight = (BATCH_ARRAYS_KEPT + 4) * batch_bytes
    assert peak <= budget + in_flight + 256 * 1024, (peak, budget, in_flight)
    assert ds.source.memory._reserved > 0  # the next epoch's first chunks are loading ahead
    loader.close()
    assert ds.source.memory._reserved == 0  # given back once no reads of the loader are open


def test_the_window_shrinks_only_when_the_budget_cannot_hold_it(lake):
    path, images, _ = lake
    chunk = CHUNK * (images[0].nbytes + 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning where it fits, or where the user chose
        roomy = lakeio.open_dataset(path, cache=Cache(memory=2 * 32 * chunk))
        assert roomy.loader(batch_size=8).plan.window == 32
        tight = lakeio.open_dataset(path, cache=Cache(memory=2 * 5 * chunk + 1))
        assert tight.loader(batch_size=8, prefetch_bytes=4 * chunk).plan.window == 32
        assert lakeio.open_dataset(path, cache=Cache(memory=0)).loader(8).plan.window == 32
    with pytest.warns(LakeWarning, match="the shuffle window is 5 chunks instead"):
        assert tight.loader(batch_size=8).plan.window == 5


def test_a_loader_dropped_without_close_gives_its_reservation_back(lake):
    """A full epoch starts the next one's reads at its tail; dropping the loader (no close)
    must let go of them, or the tier would stay smaller for the rest of the process."""
    import gc

    path, images, labels = lake
    ds = lakeio.open_dataset(path, cache=Cache(memory=(images.nbytes + labels.nbytes) // 4))
    with pytest.warns(LakeWarning):
        loader = ds.loader(batch_size=64, seed=0)
    for _ in loader:
        pass
    assert ds.source.memory._reserved > 0  # the next epoch's first chunks, loading ahead
    del loader
    gc.collect()
    assert ds.source.memory._reserved == 0


def test_a_lake_the_tier_holds_whole_keeps_its_window_and_all_of_the_tier(lake):
    """Two windows larger than the cache, but the lake fits in it: the prefetcher's chunks are
    the tier's own, so nothing is set aside and the window stays; epoch 2 is all hits."""
    path, images, _ = lake
    chunk = CHUNK * (images[0].nbytes + 8)
    ds = lakeio.open_dataset(path, cache=Cache(memory=(SAMPLES // CHUNK + 1) * chunk))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = ds.loader(batch_size=64, seed=0, prefetch_next_epoch=False)
    assert loader.plan.window == 32 and 2 * 32 * chunk > ds.source.memory.capacity
    for epoch in range(2):
        loader.set_epoch(epoch)
        before = ds.source.stats()
        for _ in loader:
            assert ds.source.memory._reserved == 0
    after = ds.source.stats()
    assert after["origin_reads"] == before["origin_reads"]  # the second epoch: no reads
