"""Batch assembly: every sample lands at its place in the batch, whatever the chunk mix."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lakeio.loader.batch import PER_SAMPLE_COPY_BYTES, gather

ROWS = 7  # rows per chunk


@st.composite
def batches(draw):
    n_chunks = draw(st.integers(1, 6))
    # small samples take the per-chunk path, large ones the per-sample path
    side = draw(st.sampled_from([2, 8, 128]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = draw(st.lists(st.integers(0, 10_000), min_size=n_chunks, max_size=n_chunks, unique=True))
    chunks = {
        c: {
            "images": rng.integers(0, 256, (ROWS, side, side, 3), dtype=np.uint8),
            "labels": rng.integers(0, 1000, ROWS),
        }
        for c in ids
    }
    size = draw(st.integers(1, 3 * ROWS))
    chunk_ids = np.array(draw(st.lists(st.sampled_from(ids), min_size=size, max_size=size)))
    rows = np.array(draw(st.lists(st.integers(0, ROWS - 1), min_size=size, max_size=size)))
    return chunks, chunk_ids, rows, draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(batches())
def test_gather_puts_each_sample_in_its_place(case):
    chunks, chunk_ids, rows, into_buffers = case
    fields = ("images", "labels")
    out = None
    if into_buffers:  # e.g. pinned buffers, larger than the batch
        out = {f: np.zeros((len(rows) + 3, *chunks[chunk_ids[0]][f].shape[1:]),
                           chunks[chunk_ids[0]][f].dtype) for f in fields}  # fmt: skip
    got = gather(fields, chunk_ids, rows, chunks, out)
    for field in fields:
        expected = np.stack([chunks[c][field][r] for c, r in zip(chunk_ids, rows, strict=True)])
        np.testing.assert_array_equal(got[field], expected)
        if out is not None:
            assert np.shares_memory(got[field], out[field])


def test_empty_batch_gives_empty_arrays():
    chunks = {3: {"images": np.zeros((ROWS, 4, 4, 3), np.uint8), "labels": np.arange(ROWS)}}
    got = gather(("images", "labels"), np.array([], np.int64), np.array([], np.int64), chunks)
    assert got["images"].shape == (0, 4, 4, 3) and got["labels"].shape == (0,)


def test_string_fields_and_strided_destination():
    """Object arrays (e.g. source paths) and a destination that is a strided view."""
    chunks = {
        np.uint64(7): {"paths": np.array([f"a/{i}.jpg" for i in range(ROWS)], dtype=object)},
        np.uint64(2): {"paths": np.array([f"b/{i}.jpg" for i in range(ROWS)], dtype=object)},
    }
    chunk_ids = np.array([7, 2, 7, 7, 2], dtype=np.uint64)
    rows = np.array([0, 6, 3, 0, 1])
    backing = np.empty(10, dtype=object)
    got = gather(("paths",), chunk_ids, rows, chunks, {"paths": backing[::2]})
    assert got["paths"].tolist() == ["a/0.jpg", "b/6.jpg", "a/3.jpg", "a/0.jpg", "b/1.jpg"]
    assert backing[::2].tolist() == got["paths"].tolist()


def test_both_copy_paths_are_exercised():
    """The strategy's sample sizes straddle the per-sample threshold (else one path goes untested)."""
    assert 8 * 8 * 3 < PER_SAMPLE_COPY_BYTES <= 128 * 128 * 3
