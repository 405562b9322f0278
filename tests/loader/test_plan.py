import itertools
import math
from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lakeio.loader.plan import (
    PlanSpec,
    batch_count,
    batch_slices,
    global_order,
    rank_order,
    samples_per_rank,
)


def _chunks(sizes):
    out, start = [], 0
    for size in sizes:
        out.append(np.arange(start, start + size))
        start += size
    return out


layouts = st.lists(st.integers(1, 40), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    sizes=layouts,
    world=st.integers(1, 5),
    batch=st.integers(1, 17),
    window=st.integers(1, 5),
    seed=st.integers(0, 3),
    epoch=st.integers(0, 3),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
)
def test_every_sample_once_and_equal_batches_on_every_rank(
    sizes, world, batch, window, seed, epoch, drop_last, shuffle
):
    chunks = _chunks(sizes)
    total = sum(sizes)
    orders, counts = [], []
    for rank in range(world):
        spec = PlanSpec(batch, shuffle, seed, window, drop_last, rank, world)
        order = rank_order(chunks, spec, epoch)
        batches = batch_slices(order, batch)
        assert len(batches) == batch_count(total, spec)
        if drop_last:
            assert all(len(b) == batch for b in batches)
        orders.append(order)
        counts.append(len(batches))
    assert len(set(counts)) == 1  # no rank waits for another at the end of the epoch
    seen = Counter(np.concatenate(orders).tolist())
    assert set(seen) <= set(range(total))
    if drop_last:
        assert all(n == 1 for n in seen.values())  # nothing twice
        assert (
            total - len(seen) < world * batch
        )  # only a tail smaller than one global batch dropped
    else:
        assert set(seen) == set(range(total))  # every sample delivered
        padding = sum(seen.values()) - total
        assert padding < world  # padding only evens out the ranks
        assert max(seen.values()) <= 1 + math.ceil(padding / total)


def test_order_is_a_pure_function_of_seed_and_epoch():
    chunks = _chunks([30] * 10)
    spec = PlanSpec(batch_size=8, seed=5)
    np.testing.assert_array_equal(global_order(chunks, spec, 2), global_order(chunks, spec, 2))
    assert not np.array_equal(global_order(chunks, spec, 2), global_order(chunks, spec, 3))
    other_seed = PlanSpec(batch_size=8, seed=6)
    assert not np.array_equal(global_order(chunks, spec, 2), global_order(chunks, other_seed, 2))


def test_window_bounds_the_chunks_open_at_once():
    chunks = _chunks([25] * 40)
    order = global_order(chunks, PlanSpec(batch_size=1, window=4), epoch=0)
    chunk_of = order // 25
    for start in range(0, len(order), 100):  # each window of 4 chunks = 100 samples
        assert len(set(chunk_of[start : start + 100].tolist())) == 4


def test_no_shuffle_keeps_lake_order():
    chunks = _chunks([3, 4, 5])
    spec = PlanSpec(batch_size=4, shuffle=False)
    np.testing.assert_array_equal(rank_order(chunks, spec, 7), np.arange(12))


@settings(max_examples=150, deadline=None)
@given(
    sizes=layouts,
    world=st.integers(1, 5),
    batch=st.integers(1, 17),
    seed=st.integers(0, 3),
    drop_last=st.booleans(),
    block=st.sampled_from([1, 3, 1 << 20]),
)
def test_first_need_is_the_soonest_read_of_each_chunk_by_any_rank(
    sizes, world, batch, seed, drop_last, block
):
    """What a cache shared by all ranks is told: for every chunk any rank reads, the earliest
    share of the epoch at which one does (ranks read side by side), and nothing else."""
    import lakeio.loader.plan
    from lakeio.format.index import ChunkMembers
    from lakeio.loader.plan import first_need

    chunks = _chunks(sizes)
    chunk_of = np.repeat(np.arange(len(sizes)), sizes)
    spec = PlanSpec(batch, True, seed, 2, drop_last, 0, world)
    saved, lakeio.loader.plan._BLOCK = lakeio.loader.plan._BLOCK, block
    try:  # (blocks of a few samples: a chunk's first read may lie in any block)
        got = first_need(ChunkMembers.of(chunks), spec, epoch=1)
    finally:
        lakeio.loader.plan._BLOCK = saved
    want: dict[int, float] = {}
    for rank in range(world):
        order = rank_order(chunks, PlanSpec(batch, True, seed, 2, drop_last, rank, world), 1)
        for position, sample in enumerate(order.tolist()):
            c = int(chunk_of[sample])
            want[c] = min(want.get(c, math.inf), position / len(order))
    assert got.keys() == want.keys()
    assert all(math.isclose(got[c], want[c]) for c in want)
    assert all(0 <= f < 1 for f in got.values())


def _reference_global_order(chunks, spec, epoch):
    """The order as version 1 of the plan computed it (a list of per-chunk arrays, each window
    concatenated and permuted): orders must not change between lakeio versions."""
    if not chunks:
        return np.empty(0, dtype=np.int64)
    if not spec.shuffle:
        return np.concatenate(chunks).astype(np.int64)
    rng = np.random.default_rng([spec.seed, epoch])
    chunk_order = rng.permutation(len(chunks))
    parts = []
    for start in range(0, len(chunk_order), spec.window):
        window = np.concatenate([chunks[c] for c in chunk_order[start : start + spec.window]])
        parts.append(rng.permutation(window))
    return np.concatenate(parts).astype(np.int64)


@given(
    st.lists(st.integers(1, 40), min_size=0, max_size=60),
    st.integers(1, 9),
    st.integers(0, 2**31),
    st.integers(0, 5),
    st.booleans(),
)
def test_the_vectorised_order_is_the_order_the_plan_always_gave(
    sizes, window, seed, epoch, shuffle
):
    from lakeio.format.index import ChunkMembers

    starts = np.cumsum([0, *sizes])
    chunks = [np.arange(a, b) + 7 for a, b in itertools.pairwise(starts)]
    spec = PlanSpec(batch_size=4, shuffle=shuffle, seed=seed, window=window)
    expected = _reference_global_order(chunks, spec, epoch)
    np.testing.assert_array_equal(global_order(chunks, spec, epoch), expected)
    members = ChunkMembers.of(chunks)
    np.testing.assert_array_equal(global_order(members, spec, epoch), expected)
    assert [c.tolist() for c in members] == [c.tolist() for c in chunks]


@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=12),
    st.integers(1, 9),
    st.integers(1, 6),
    st.integers(0, 2**31),
    st.booleans(),
    st.booleans(),
    st.sampled_from([1, 5, 16, 1 << 20]),
)
def test_the_plan_gives_each_samples_chunk_as_the_index_does(
    segments, chunk_samples, window, seed, shuffle, subset, block
):
    """The chunk ids the plan hands the loader (no search) are the index's, for the whole lake
    (consecutive samples, packed into one array to shuffle, built a block of runs at a time:
    here also blocks shorter than a chunk) and for a subset (a gather)."""
    import lakeio.format.index

    saved, lakeio.format.index._BLOCK = lakeio.format.index._BLOCK, block
    try:
        _check_plan_chunks(segments, chunk_samples, window, seed, shuffle, subset)
    finally:
        lakeio.format.index._BLOCK = saved


def _check_plan_chunks(segments, chunk_samples, window, seed, shuffle, subset):
    from lakeio.format.index import ChunkMembers, SampleIndex
    from lakeio.loader.plan import global_order_and_chunks

    index = SampleIndex(segments, chunk_samples)
    _, chunk_of, _ = index.chunk_table()
    n = len(index)
    if subset:
        members = np.unique(np.random.default_rng(seed).integers(0, max(n, 1), n // 2))
        members = members[members < n]
    else:
        members = np.arange(n)
    ids = chunk_of[members] if len(members) else np.empty(0, dtype=np.int64)
    cuts = np.flatnonzero(np.diff(ids)) + 1
    offsets = np.concatenate([[0], cuts, [len(members)]]) if len(members) else np.zeros(1, int)
    runs = ChunkMembers(members, offsets, ids[offsets[:-1]], consecutive=not subset)
    spec = PlanSpec(batch_size=4, shuffle=shuffle, seed=seed, window=window)
    order, chunks = global_order_and_chunks(runs, spec, 3)
    np.testing.assert_array_equal(order, global_order([*runs], spec, 3))
    np.testing.assert_array_equal(chunks, chunk_of[order] if len(order) else order)
    if not subset and n:  # as a dataset makes it: the samples computed, never stored
        whole = ChunkMembers.of_range(0, np.concatenate([index.chunk_starts(), [n]]))
        for got, want in zip(global_order_and_chunks(whole, spec, 3), (order, chunks), strict=True):
            np.testing.assert_array_equal(got, want)


def test_samples_past_2_to_the_32_keep_their_numbers_in_any_chunk():
    from lakeio.loader.plan import global_order_and_chunks

    chunks = [np.array([9, 10]), np.array([2**32 + 5, 2**32 + 6]), np.array([7, 8])]
    spec = PlanSpec(batch_size=2, seed=4, window=2)
    order, ids = global_order_and_chunks(chunks, spec, 0)
    np.testing.assert_array_equal(order, _reference_global_order(chunks, spec, 0))
    owner = {int(s): c for c, run in enumerate(chunks) for s in run}
    assert ids.tolist() == [owner[int(s)] for s in order]


@settings(max_examples=200, deadline=None)
@given(
    sizes=layouts,
    world=st.integers(1, 5),
    batch=st.integers(1, 17),
    window=st.integers(1, 5),
    seed=st.integers(0, 3),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
)
def test_chunk_sharding_keeps_each_rank_on_its_own_chunks_every_epoch(
    sizes, world, batch, window, seed, drop_last, shuffle
):
    """``sharding="chunks"``: each rank reads only its own chunks (none of another's), the same
    in every epoch, and together they hold every chunk, their sample counts within one chunk
    of each other; every rank yields the same number of batches; a share is its chunks'
    samples, each once, cut or padded (by repeating its start) to the common length."""
    from hypothesis import assume

    from lakeio.loader.plan import deal_chunks, rank_orders_and_chunks

    assume(len(sizes) >= world)
    chunks = _chunks(sizes)
    chunk_of = np.repeat(np.arange(len(sizes)), sizes)
    total = sum(sizes)
    owner = deal_chunks(np.array(sizes), world)
    counts = np.bincount(owner, weights=sizes, minlength=world)
    assert set(owner.tolist()) == set(range(world))  # every rank has chunks
    assert counts.max() - counts.min() <= max(sizes)
    for epoch in range(3):
        spec = PlanSpec(batch, shuffle, seed, window, drop_last, 0, world, "chunks")
        orders, ids = rank_orders_and_chunks(chunks, spec, epoch)
        assert orders.shape == ids.shape == (world, samples_per_rank(total, spec))
        np.testing.assert_array_equal(ids, chunk_of[orders])
        for rank in range(world):
            mine = np.concatenate([chunks[c] for c in np.flatnonzero(owner == rank)])
            share = orders[rank]
            assert set(share.tolist()) <= set(mine.tolist())  # its own chunks only
            n = min(len(mine), len(share))
            assert len(set(share[:n].tolist())) == n  # each once before any repeat
            np.testing.assert_array_equal(share[n:], np.resize(share[:n], len(share) - n))
            if not drop_last and len(mine) <= len(share):
                assert set(share.tolist()) == set(mine.tolist())  # all of them
            spec_r = PlanSpec(batch, shuffle, seed, window, drop_last, rank, world, "chunks")
            np.testing.assert_array_equal(rank_order(chunks, spec_r, epoch), share)
            assert len(batch_slices(share, batch)) == batch_count(total, spec_r)


def test_chunk_sharding_reshuffles_each_epoch_and_mixes_every_class_into_each_rank():
    """A lake ingested class by class: dealt in stripes, each rank's share has every class, and
    its order changes from epoch to epoch."""
    from lakeio.loader.plan import rank_orders

    chunks = _chunks([16] * 40)  # 640 samples, classes of 64 (4 chunks each) in lake order
    spec = PlanSpec(32, seed=1, window=8, world_size=4, sharding="chunks")
    first, second = rank_orders(chunks, spec, 0), rank_orders(chunks, spec, 1)
    for rank in range(4):
        assert set(np.unique(first[rank] // 64).tolist()) == set(range(10))
        assert sorted(first[rank].tolist()) == sorted(second[rank].tolist())  # same samples
        assert not np.array_equal(first[rank], second[rank])  # another order


def test_chunk_sharding_needs_a_chunk_for_every_rank():
    import pytest

    from lakeio.loader.plan import rank_orders

    with pytest.raises(ValueError, match="3 chunks for 4 ranks"):
        rank_orders(_chunks([5, 5, 5]), PlanSpec(4, world_size=4, sharding="chunks"), 0)
    with pytest.raises(ValueError, match="sharding must be one of 'epoch', 'chunks'"):
        PlanSpec(4, sharding="chunk")


def test_chunk_sharding_deals_partial_chunks_so_no_rank_gets_them_all():
    """20 segments of 100, 100, 100, 100 and 37 samples, 5 ranks: dealt in stripes, one rank
    would get all 20 short chunks (740 samples against 2,000); dealt by count, shares are
    within one chunk of each other."""
    from lakeio.loader.plan import deal_chunks

    lengths = np.array([100, 100, 100, 100, 37] * 20)
    counts = np.bincount(deal_chunks(lengths, 5), weights=lengths, minlength=5)
    assert counts.sum() == lengths.sum() and counts.max() - counts.min() <= 100
    assert counts.tolist() == [1748.0] * 5  # 16 full and 4 short chunks each
