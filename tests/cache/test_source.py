"""The tiered read path against a real lake and a real disk cache, across real processes."""

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

import lakeio
from lakeio.cache.config import Cache
from lakeio.cache.source import ChunkSource
from lakeio.format.index import SampleIndex


def _read_all(ds):
    chunks = SampleIndex(
        [s.samples for s in ds.manifest.segments], ds.manifest.chunk_samples
    ).chunks()
    return [ds.source.get(c.segment, "images", c.chunk) for c in chunks]


def test_second_pass_with_enough_memory_reads_nothing_from_the_origin(small_lake):
    path, images, _ = small_lake
    ds = lakeio.open_dataset(path, cache=Cache(memory="64MB"))
    first = _read_all(ds)
    reads = ds.stats()["origin_reads"]
    assert reads == len(first) == 13
    second = _read_all(ds)
    stats = ds.stats()
    assert stats["origin_reads"] == reads
    assert stats["memory"]["hits"] == 13 and stats["memory"]["hit_rate"] == 0.5
    assert stats["average_access_time_s"] > 0
    np.testing.assert_array_equal(np.concatenate(second)[: len(images)], images)


def test_memory_stays_within_budget_over_many_passes(small_lake):
    path, _, _ = small_lake
    budget = 5 * 16 * 32 * 32 * 3  # five decoded chunks of a 13-chunk lake
    ds = lakeio.open_dataset(path, cache=Cache(memory=budget))
    for _ in range(4):
        _read_all(ds)
        held = ds.stats()["memory"]["bytes_held"]
        assert 0 < held <= budget
    assert ds.stats()["memory"]["items"] == 5


def test_flipped_byte_in_the_disk_tier_is_detected_refetched_and_never_delivered(
    small_lake, tmp_path
):
    path, images, _ = small_lake
    cache = Cache(memory=0, disk=str(tmp_path / "disk"), disk_size="64MB")
    ds = lakeio.open_dataset(path, cache=cache)
    _read_all(ds)
    assert ds.source.disk.flush(timeout=60)  # stored behind the reads
    files = sorted(Path(tmp_path / "disk").rglob("*.val"))  # diskcache keeps large values as files
    assert files, "chunks of 48 KB should be stored as files"
    for f in files:
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x10
        f.write_bytes(bytes(data))
    fresh = lakeio.open_dataset(path, cache=cache)
    got = np.concatenate(_read_all(fresh))[: len(images)]
    np.testing.assert_array_equal(got, images)
    stats = fresh.stats()
    assert stats["corrupt_refetched"] == len(files) and stats["origin_reads"] == len(files)
    again = lakeio.open_dataset(path, cache=cache)
    _read_all(again)
    assert again.stats()["origin_reads"] == 0  # the repaired copies serve the next reader


def _count_origin_reads(path: str, disk: str) -> int:
    ds = lakeio.open_dataset(path, cache=Cache(memory=0, disk=disk, disk_size="64MB"))
    _read_all(ds)
    return ds.stats()["origin_reads"]


@pytest.mark.timeout(120)
def test_processes_sharing_a_disk_cache_fetch_each_chunk_from_the_origin_once(small_lake, tmp_path):
    path, _, _ = small_lake
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        reads = pool.starmap(_count_origin_reads, [(str(path), str(tmp_path / "shared"))] * 3)
    assert sum(reads) == 13


def test_chunk_source_survives_pickling_with_an_empty_memory_tier(small_lake):
    import pickle

    path, images, _ = small_lake
    ds = lakeio.open_dataset(path, cache=Cache(memory="16MB"))
    ds.source.get(0, "images", 0)
    clone = pickle.loads(pickle.dumps(ds.source))
    assert isinstance(clone, ChunkSource) and clone.stats()["requests"] == 0
    np.testing.assert_array_equal(clone.get(0, "images", 0), images[:16])


def _epoch_hit_rates(path, policy, budget, epochs=3):
    """Hit rates of a tier that keeps ``budget`` bytes: the loader's prefetch of two chunks
    comes out of `Cache(memory=...)` too, so the cache is given that much more."""
    prefetch = 2 * 16 * 32 * 32 * 3
    ds = lakeio.open_dataset(path, cache=Cache(memory=budget + prefetch, eviction=policy))
    # no loading ahead across epochs: each epoch's hits are counted within that epoch
    loader = ds.loader(
        batch_size=16, seed=0, fields=("images",), prefetch_next_epoch=False,
        prefetch_bytes=prefetch,
    )  # fmt: skip
    rates = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        before = ds.source.memory.stats()
        for _ in loader:
            pass
        after = ds.source.memory.stats()
        rates.append((after.hits - before.hits) / (after.requests - before.requests))
    return rates


def test_plan_aware_eviction_keeps_what_the_next_epoch_needs(small_lake):
    path, _, _ = small_lake
    budget = 6 * 16 * 32 * 32 * 3 + 1000  # 6 of 13 image chunks
    plan = _epoch_hit_rates(path, "plan", budget)
    lru = _epoch_hit_rates(path, "lru", budget)
    assert plan[0] == lru[0] == 0.0
    assert all(abs(r - 6 / 13) < 0.01 for r in plan[1:]), (
        plan,
        lru,
    )  # the best any policy can do here
    assert all(p > r for p, r in zip(plan[1:], lru[1:], strict=True))


@pytest.mark.parametrize("epoch", [0, 2])
def test_a_large_first_epoch_plans_the_next_on_a_thread_and_tells_the_tier_the_same(
    small_lake, monkeypatch, epoch
):
    """A fresh tier and a large lake: the next epoch is planned on a thread once the first
    batch is out, and every chunk loaded before that is told its next use when it is known —
    what the tier finally holds is what planning first would have told it."""
    import threading

    import lakeio.loader.reads as reads_module

    path, _, _ = small_lake

    def told(plan_on_a_thread: int) -> dict[int, float]:
        monkeypatch.setattr(reads_module, "PLAN_ON_A_THREAD", plan_on_a_thread)
        ds = lakeio.open_dataset(path, cache=Cache(memory="64MB"))
        heard: dict[int, float] = {}
        tell = ds.schedule_chunks

        def record_then_tell(pairs) -> None:
            pairs = list(pairs)
            heard.update(pairs)
            tell(pairs)

        ds.schedule_chunks = record_then_tell
        loader = ds.loader(batch_size=16, seed=3, fields=("images",), prefetch_next_epoch=False)
        loader.set_epoch(epoch)
        assert sum(1 for _ in loader) == len(loader)
        for thread in threading.enumerate():
            if thread.name == "lakeio-plan":
                thread.join(timeout=30)
        return heard

    now, later = told(plan_on_a_thread=10**9), told(plan_on_a_thread=0)
    assert later == now and len(now) == 13
    assert sorted(now.values()) == list(range(13, 26))  # after this epoch's 13 chunk uses
