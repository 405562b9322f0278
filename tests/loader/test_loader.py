"""The loader over a real lake: exactly-once, equal batches, determinism, resume, torch interop."""

import multiprocessing
from collections import Counter

import dask.config
import numpy as np
import pytest
import torch

import lakeio
from lakeio.cache.config import Cache
from lakeio.errors import LakeWarning
from lakeio.loader.device import CudaAccelerator


def _ids(paths):
    return [int(p[len("array[") : -1]) for p in paths]


@pytest.mark.parametrize(
    ("world", "drop_last"), [(1, False), (2, True), (3, False), (5, True), (4, False)]
)
def test_every_sample_reaches_exactly_one_rank_and_ranks_get_equal_batches(
    small_lake, world, drop_last
):
    path, images, labels = small_lake
    ds = lakeio.open_dataset(path)
    counts, seen = [], Counter()
    for rank in range(world):
        loader = ds.loader(
            batch_size=7,
            seed=3,
            drop_last=drop_last,
            rank=rank,
            world_size=world,
            fields=("images", "labels", "paths"),
        )
        loader.set_epoch(1)
        batches = list(loader)
        counts.append(len(batches))
        assert len(batches) == len(loader)
        for x, y, paths in batches:
            ids = _ids(paths)
            np.testing.assert_array_equal(x.numpy(), images[ids])  # pixels travel with their ids
            np.testing.assert_array_equal(y.numpy(), labels[ids])
            seen.update(ids)
    assert len(set(counts)) == 1
    if drop_last:
        assert max(seen.values()) == 1 and len(images) - len(seen) < world * 7
    else:
        assert set(seen) == set(range(len(images))) and sum(seen.values()) - len(images) < world


def test_order_depends_only_on_seed_and_epoch(small_lake):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)

    def order(seed, epoch):
        loader = ds.loader(batch_size=16, seed=seed, fields=("paths",))
        loader.set_epoch(epoch)
        return [p for (paths,) in loader for p in paths]

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2)
    assert order(0, 1) != order(1, 1)
    assert sorted(order(0, 1)) == sorted(order(0, 2))


def test_layout_dtype_normalize_and_transform(small_lake):
    path, images, _ = small_lake
    ds = lakeio.open_dataset(path)
    loader = ds.loader(
        batch_size=10, shuffle=False, layout="NCHW", dtype=torch.float32,
        normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), output="dict",
        transform=lambda b: {**b, "images": b["images"] * 2},
    )  # fmt: skip
    batch = next(iter(loader))
    expected = (torch.from_numpy(images[:10]).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25 * 2
    assert batch["images"].shape == (10, 3, 32, 32) and batch["images"].dtype == torch.float32
    torch.testing.assert_close(batch["images"], expected)


def test_split_is_deterministic_disjoint_and_loads(small_lake):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)
    train, held = ds.split(0.1, seed=0)
    _, again_held = ds.split(0.1, seed=0)
    np.testing.assert_array_equal(held.indices, again_held.indices)
    assert len(held) == 20 and len(train) == 183
    assert not set(train.indices) & set(held.indices)
    got = {i for (paths,) in held.loader(batch_size=8, fields=("paths",)) for i in _ids(paths)}
    assert got == set(held.indices.tolist())


def _resume_in_new_process(path, state, queue):
    ds = lakeio.open_dataset(path)
    loader = ds.loader(batch_size=9, seed=4, fields=("paths",))
    loader.load_state_dict(state)
    queue.put([list(paths) for (paths,) in loader])


def test_state_dict_resumes_mid_epoch_in_a_new_process(small_lake):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)
    loader = ds.loader(batch_size=9, seed=4, fields=("paths",))
    loader.set_epoch(2)
    full = [list(paths) for (paths,) in loader]
    loader.set_epoch(2)
    it = iter(loader)
    for _ in range(5):
        next(it)
    state = loader.state_dict()
    assert state["batches_done"] == 5 and state["epoch"] == 2
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_resume_in_new_process, args=(str(path), state, queue))
    proc.start()
    rest = queue.get(timeout=60)
    proc.join(timeout=30)
    assert rest == full[5:]


def test_state_from_another_plan_is_refused(small_lake):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)
    state = ds.loader(batch_size=9).state_dict()
    with pytest.raises(ValueError, match="state was saved for plan"):
        ds.loader(batch_size=10).load_state_dict(state)


def test_plain_dataloader_with_workers_gets_the_same_batches_once(small_lake):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)
    loader = ds.loader(batch_size=16, seed=1, fields=("labels", "paths"))
    loader.set_epoch(3)
    expected = [list(paths) for _, paths in loader]
    data = torch.utils.data.DataLoader(
        loader.as_iterable_dataset(),
        batch_size=None,
        num_workers=2,
        multiprocessing_context="spawn",
    )
    got = [list(paths) for _, paths in data]
    assert got == expected


def test_second_epoch_is_served_from_memory_and_stats_add_up(small_lake):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path, cache=Cache(memory="64MB"))
    loader = ds.loader(batch_size=32)
    for epoch in range(2):
        loader.set_epoch(epoch)
        for _ in loader:
            pass
    stats = loader.stats()
    assert stats["samples"] == 2 * 203 and stats["batches"] == 2 * len(loader)
    assert stats["cache"]["origin_reads"] == 2 * 13  # images + labels chunks, first epoch only
    assert 0.0 <= stats["stall_fraction"] <= 1.0 and stats["samples_per_s"] > 0
    # the time from iter() to each epoch's first batch: the second (warm) one is the latest
    assert 0.0 < stats["first_batch_s"] <= stats["first_batch_s_max"] < stats["seconds"]


def test_slicing_a_dataset_says_what_to_use_instead(small_lake):
    ds = lakeio.open_dataset(small_lake[0])
    with pytest.raises(TypeError, match=r"use ds.subset\(...\)"):
        ds[0:2]


def test_to_dask_names_the_corrupt_chunk(small_lake, tmp_path):
    import shutil

    from lakeio.errors import CorruptChunkError

    shutil.copytree(small_lake[0], tmp_path / "lake")
    chunk = next((tmp_path / "lake" / "segments").iterdir()) / "images" / "c.0.0.0.0"
    data = bytearray(chunk.read_bytes())
    data[40] ^= 1
    chunk.write_bytes(bytes(data))
    with pytest.raises(
        CorruptChunkError, match=r"images/c\.0\.0\.0\.0 of lake .*lake: checksum mismatch"
    ):
        lakeio.open_dataset(tmp_path / "lake").to_dask()["images"].sum().compute(scheduler="sync")


def test_training_from_an_object_store_through_the_disk_tier(
    small_lake, client, s3_options, tmp_path
):
    _, images, labels = small_lake
    url = "s3://lakeio-test/loader.lake"
    lakeio.ingest(
        images,
        url,
        labels=labels,
        cluster=client,
        storage_options=s3_options,
        chunk_samples=16,
        progress=False,
        echo=None,
    )
    cache = Cache(
        memory="100KB", disk=str(tmp_path / "disk"), disk_size="64MB"
    )  # memory too small to hold it
    ds = lakeio.open_dataset(url, cache=cache, storage_options=s3_options)
    with pytest.warns(LakeWarning, match=r"Cache\(memory=97\.7 KiB\) cannot hold"):
        loader = ds.loader(batch_size=32, seed=2, fields=("images", "labels", "paths"))
    for epoch in range(2):
        loader.set_epoch(epoch)
        seen = []
        for x, y, paths in loader:
            ids = _ids(paths)
            np.testing.assert_array_equal(x.numpy(), images[ids])
            np.testing.assert_array_equal(y.numpy(), labels[ids])
            seen += ids
        assert sorted(set(seen)) == list(range(len(images)))
        if epoch == 0:
            first_reads = loader.stats()["cache"]["origin_reads"]
    stats = loader.stats()["cache"]
    assert first_reads == 3 * 13  # images, labels and paths chunks, once each
    assert stats["origin_reads"] == first_reads  # epoch 2: all from the disk tier
    assert stats["disk"]["hits"] >= 13  # image chunks do not fit the 100 KB memory tier


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA path needs a GPU (none on CI)")
def test_cuda_batches_match_the_cpu_path(small_lake):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)
    common = {
        "batch_size": 32,
        "seed": 5,
        "layout": "NCHW",
        "dtype": torch.float32,
        "normalize": ((0.5,) * 3, (0.2,) * 3),
    }
    cpu = [x for x, _ in ds.loader(**common)]
    gpu_loader = ds.loader(device="cuda", **common)
    assert isinstance(gpu_loader._device.accelerator, CudaAccelerator)  # the real one
    assert gpu_loader._device.pinned
    gpu = [x for x, _ in gpu_loader]
    assert all(g.is_cuda for g in gpu)
    for c, g in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(g.cpu(), c)


def test_state_saved_right_after_set_epoch_starts_that_epoch(small_lake):
    ds = lakeio.open_dataset(small_lake[0])
    loader = ds.loader(batch_size=50, fields=("paths",))
    for _ in loader:
        pass
    loader.set_epoch(1)
    assert loader.state_dict()["batches_done"] == 0 and loader.state_dict()["epoch"] == 1


def test_state_saved_after_an_epochs_last_batch_resumes_with_the_next_epoch(small_lake):
    ds = lakeio.open_dataset(small_lake[0])
    loader = ds.loader(batch_size=50, seed=1, fields=("paths",))
    loader.set_epoch(3)
    for _ in loader:
        pass
    state = loader.state_dict()
    assert (state["epoch"], state["batches_done"]) == (4, 0)
    resumed = ds.loader(batch_size=50, seed=1, fields=("paths",))
    resumed.load_state_dict(state)
    resumed.set_epoch(state["epoch"])  # what a training loop does next: no effect on the resume
    fresh = ds.loader(batch_size=50, seed=1, fields=("paths",))
    fresh.set_epoch(4)
    assert [p for (p,) in resumed] == [p for (p,) in fresh]
    assert len(fresh) == 5


def test_a_failing_read_reaches_the_training_loop_as_an_error(small_lake, tmp_path):
    import shutil

    from lakeio.errors import ChunkUnavailableError

    shutil.copytree(small_lake[0], tmp_path / "lake")
    next((tmp_path / "lake" / "segments").iterdir()).joinpath("images", "c.0.0.0.0").unlink()
    loader = lakeio.open_dataset(tmp_path / "lake").loader(batch_size=16)
    with pytest.raises(ChunkUnavailableError, match="missing from the store"):
        for _ in loader:
            pass


def test_iterable_dataset_refuses_a_device():
    class Fake:
        class _device:
            device = torch.device("cuda")

    with pytest.raises(ValueError, match="device=None"):
        from lakeio.loader.torch_dataset import LakeIterableDataset

        LakeIterableDataset(Fake())


def test_the_next_epoch_is_loaded_ahead_in_process_and_dropped_when_unused(small_lake):
    import time

    path, _, _ = small_lake
    ds = lakeio.open_dataset(path, cache=Cache(memory=0))  # every load reads the origin
    loader = ds.loader(batch_size=16, seed=3, fields=("images",))
    epoch0 = [b.numpy().copy() for (b,) in loader]
    chunks = len(ds.chunk_members())
    deadline = time.monotonic() + 10
    while ds.stats()["origin_reads"] <= chunks:  # epoch 1's first chunks, before it is asked for
        assert time.monotonic() < deadline, ds.stats()
        time.sleep(0.02)
    loader.set_epoch(4)  # not the epoch loaded ahead
    epoch4 = [b.numpy().copy() for (b,) in loader]
    for epoch, got in ((0, epoch0), (4, epoch4)):
        fresh = lakeio.open_dataset(path).loader(batch_size=16, seed=3, fields=("images",))
        fresh.set_epoch(epoch)
        expected = [b.numpy() for (b,) in fresh]
        assert len(got) == len(expected)
        assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
    loader.close()


def test_batches_given_in_any_order_are_gathered_from_their_own_chunks(small_lake):
    """The loader keeps the chunk ids of the epoch it planned beside its batches; a list of
    those batches in another order is not that plan and must not borrow them."""
    path, _, labels = small_lake
    loader = lakeio.open_dataset(path).loader(8, seed=1, shuffle_window=2)
    planned = loader.batches()
    picked = [planned[-3], planned[0], planned[-1]]
    for batch, (_, got) in zip(picked, loader.iterate(picked), strict=True):
        np.testing.assert_array_equal(got.numpy(), labels[batch])


def test_the_batches_handed_out_cannot_change_the_plan(small_lake):
    path, _, _ = small_lake
    loader = lakeio.open_dataset(path).loader(8, seed=2)
    first = loader.batches()
    assert all(b.dtype == np.int64 for b in first)  # (the plan inside is int32 where it fits)
    expected = [b.copy() for b in first]
    first.reverse()
    with pytest.raises(ValueError, match="read-only"):
        first[0].sort()
    assert [b.tolist() for b in loader.batches()] == [b.tolist() for b in expected]


def test_an_abandoned_epoch_tells_the_tier_nothing_from_its_late_plan(small_lake, monkeypatch):
    """A peek at one batch, then the epoch is dropped: the next epoch's plan, made on a thread
    once that batch was out, arrives after the epoch is over and must not be told (its
    positions count from an epoch nobody reads any more)."""
    import threading

    import lakeio.loader.reads as reads_module

    path, _, _ = small_lake
    monkeypatch.setattr(reads_module, "PLAN_ON_A_THREAD", 0)  # every epoch counts as large
    release = threading.Event()
    plan = reads_module.EpochReader._next_epoch_positions

    def held_back(self, offset, epoch):
        release.wait(timeout=30)
        return plan(self, offset, epoch)

    monkeypatch.setattr(reads_module.EpochReader, "_next_epoch_positions", held_back)
    ds = lakeio.open_dataset(path, cache=Cache(memory="64MB"))
    told: list = []
    tell = ds.schedule_chunks
    ds.schedule_chunks = lambda pairs: (told.extend(pairs), tell(pairs))
    loader = ds.loader(batch_size=16, seed=0, fields=("images",), prefetch_next_epoch=False)
    batches = iter(loader)
    next(batches)
    batches.close()  # the epoch is abandoned after its first batch
    release.set()
    for thread in threading.enumerate():
        if thread.name == "lakeio-plan":
            thread.join(timeout=30)
            assert not thread.is_alive()
    assert told == []


@pytest.mark.parametrize("mode", ["compiled", "numpy"])
def test_warm_epochs_gather_the_planned_samples_either_way(small_lake, mode):
    """The compiled gather and numpy's give each batch its planned samples; a warm epoch's
    chunks are looked up in the memory tier by the batcher itself (no read)."""
    path, images, labels = small_lake
    with dask.config.set({"lakeio.loader.gather": mode}):
        ds = lakeio.open_dataset(path, cache=Cache(memory="64MB"))
        loader = ds.loader(batch_size=24, seed=5, shuffle_window=3)
        for epoch in range(3):
            loader.set_epoch(epoch)
            got = list(loader)
            planned = loader.batches()
            assert len(got) == len(planned)
            for (x, y), ids in zip(got, planned, strict=True):
                np.testing.assert_array_equal(x.numpy(), images[ids])
                np.testing.assert_array_equal(y.numpy(), labels[ids])
    cache = loader.stats()["cache"]
    assert cache["origin_reads"] == 2 * 13  # the first epoch's reads; then memory hits
    assert cache["memory"]["hits"] == cache["requests"] - cache["origin_reads"]


def test_batches_a_training_loop_keeps_are_never_written_over(small_lake):
    """Batch arrays are written again once let go of; the ones kept (whole, or as a view of
    a few samples) must still hold their own samples after the epochs that follow."""
    path, images, labels = small_lake
    ds = lakeio.open_dataset(path, cache=Cache(memory="64MB"))
    loader = ds.loader(batch_size=8, seed=2)
    kept = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        planned = loader.batches()
        for i, (x, y) in enumerate(loader):
            if i % 5 == 0:
                kept.append((x, y, planned[i]))  # the whole batch
            elif i % 5 == 1:
                kept.append((x[2:5], y[2:5], planned[i][2:5]))  # a view of part of it
    assert ds.batch_arrays.reused > 0  # (what is let go of is written again)
    for x, y, ids in kept:
        np.testing.assert_array_equal(x.numpy(), images[ids])
        np.testing.assert_array_equal(y.numpy(), labels[ids])


def test_stats_report_the_decoded_chunks_mappings_kept_for_reuse(tmp_path):
    """Chunks of 1.5 MiB read with no memory tier are let go after their batches: their
    mappings wait for the next chunk, counted in stats (outside Cache(memory=))."""
    import gc

    import numpy as np

    from lakeio.format.pages import SPARE_BYTES, drop_spares

    images = np.random.default_rng(2).integers(0, 256, (512, 64, 64, 3), dtype=np.uint8)
    lakeio.ingest(images, tmp_path / "lake", labels=np.zeros(512, int), chunk_samples=128,
                  codec="lz4", progress=False, echo=None)  # fmt: skip
    drop_spares()
    ds = lakeio.open_dataset(tmp_path / "lake", cache=Cache(memory=0))
    with ds.loader(batch_size=64, seed=1, prefetch_next_epoch=False) as loader:
        seen = sum(len(x) for x, _ in loader)
        gc.collect()
        spare = loader.stats()["cache"]["spare_mapping_bytes"]
    assert seen == 512
    chunk = 128 * 64 * 64 * 3
    assert 0 < spare <= SPARE_BYTES and spare % chunk == 0


def test_chunk_sharding_reads_each_ranks_own_chunks_and_the_right_pixels(small_lake):
    """``sharding="chunks"`` through the loader: three ranks read disjoint chunks, the same
    ones every epoch, every batch the lake's pixels at `loader.batches()`; a checkpoint names
    the sharding, and a loader sharded the other way refuses it."""
    path, images, _ = small_lake
    ds = lakeio.open_dataset(path)
    chunk_of = {int(s): c for c, members in enumerate(ds.chunk_members()) for s in members}
    read: dict[int, set] = {}
    for rank in range(3):
        loader = ds.loader(16, seed=2, rank=rank, world_size=3, sharding="chunks")
        samples = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            planned = loader.batches()
            batches = list(loader)
            assert len(batches) == len(planned) == len(loader)
            for (x, _), ids in zip(batches, planned, strict=True):
                np.testing.assert_array_equal(x.numpy(), images[ids])
            samples.append(set(np.concatenate(planned).tolist()))
        read[rank] = {chunk_of[s] for s in samples[0]}
        assert {chunk_of[s] for s in samples[1]} == read[rank]  # the same chunks every epoch
        state = loader.state_dict()
        assert state["plan"]["sharding"] == "chunks"
        with pytest.raises(ValueError, match="state was saved for plan"):
            ds.loader(16, seed=2, rank=rank, world_size=3).load_state_dict(state)
    assert not (read[0] & read[1]) and not (read[1] & read[2]) and not (read[0] & read[2])
    assert read[0] | read[1] | read[2] == set(range(len(ds.chunk_members())))
    assert "sharding" not in ds.loader(16).state_dict()["plan"]  # (old checkpoints resume)
