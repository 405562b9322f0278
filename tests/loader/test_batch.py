"""Batch assembly: every sample lands at its place in the batch, whatever the chunk mix."""

import dask.config
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakeio.loader.batch import PER_SAMPLE_COPY_BYTES, Batcher, gather
from lakeio.loader.kernels import copy_rows_kernel

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


# --- the Batcher: the compiled gather and its numpy stand-in give the same batches -------------


@pytest.fixture(params=["compiled", "numpy"])
def gather_mode(request):
    with dask.config.set({"lakeio.loader.gather": request.param}):
        yield request.param


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)  # (the fixture only sets a config value, the same for every example)
@given(case=batches(), dtype=st.sampled_from(["uint8", "uint16", "float32", "int64"]))
def test_batcher_puts_each_sample_in_its_place(gather_mode, case, dtype):
    chunks, chunk_ids, rows, into_buffers = case
    chunks = {c: {f: a.astype(dtype) for f, a in arrays.items()} for c, arrays in chunks.items()}
    fields = ("images", "labels")
    batcher = Batcher(fields)
    assert batcher.compiled == (gather_mode == "compiled")
    for c, arrays in chunks.items():
        batcher.add(c, arrays)
    out = None
    if into_buffers:
        out = {f: np.zeros((len(rows) + 3, *chunks[chunk_ids[0]][f].shape[1:]), dtype)
               for f in fields}  # fmt: skip
    got = batcher.gather(chunk_ids.astype(np.int32), rows, out)
    for field in fields:
        expected = np.stack([chunks[c][field][r] for c, r in zip(chunk_ids, rows, strict=True)])
        np.testing.assert_array_equal(got[field], expected)
        assert got[field].dtype == expected.dtype
        if out is not None:
            assert np.shares_memory(got[field], out[field])


def test_batcher_names_a_dropped_chunk_and_a_row_past_the_end(gather_mode):
    batcher = Batcher(("images",))
    for c in (3, 9):
        batcher.add(c, {"images": np.full((ROWS, 2, 2, 3), c, np.uint8)})
    np.testing.assert_array_equal(
        batcher.gather(np.array([9, 3]), np.array([0, ROWS - 1]))["images"][:, 0, 0, 0], [9, 3]
    )
    batcher.drop(9)
    with pytest.raises((IndexError, KeyError), match="9"):
        batcher.gather(np.array([3, 9]), np.array([0, 1]))
    if gather_mode == "compiled":  # (numpy's own IndexError says the same, without the chunk)
        with pytest.raises(IndexError, match=f"row {ROWS} of chunk 3, which has {ROWS} rows"):
            batcher.gather(np.array([3]), np.array([ROWS]))


def test_batcher_copies_strings_and_strided_rows_with_numpy(gather_mode):
    """Fields the kernel cannot copy (objects, rows that are not contiguous) still gather."""
    batcher = Batcher(("paths", "images"))
    base = np.arange(ROWS * 8, dtype=np.uint8).reshape(ROWS, 8)
    for c in (0, 1):
        batcher.add(c, {
            "paths": np.array([f"{c}/{i}" for i in range(ROWS)], dtype=object),
            "images": base[:, ::2] + c,  # every other column: not C-contiguous
        })  # fmt: skip
    got = batcher.gather(np.array([1, 0, 1]), np.array([2, 5, 0]))
    assert got["paths"].tolist() == ["1/2", "0/5", "1/0"]
    np.testing.assert_array_equal(got["images"], [base[2, ::2] + 1, base[5, ::2], base[0, ::2] + 1])


def test_gather_setting_is_checked():
    with (
        dask.config.set({"lakeio.loader.gather": "fast"}),
        pytest.raises(ValueError, match=r"lakeio\.loader\.gather is 'fast'"),
    ):
        copy_rows_kernel()


def test_chunks_whose_rows_differ_are_refused_not_misread(gather_mode):
    """The kernel copies one row size per field: a chunk with other rows goes to numpy, which
    refuses to mix them (never a read past the smaller chunk's end)."""
    batcher = Batcher(("images",))
    batcher.add(0, {"images": np.zeros((ROWS, 4, 4, 3), np.uint8)})
    batcher.add(1, {"images": np.ones((ROWS, 2, 2, 3), np.uint8)})
    with pytest.raises(ValueError):
        batcher.gather(np.array([0, 1]), np.array([0, ROWS - 1]))


def test_the_compiled_kernel_does_what_its_python_says():
    """`_copy_rows_py` is the kernel's source and runs as plain Python too (ctypes' memmove):
    both copy the same rows and stop at the same bad sample."""
    from lakeio.loader.kernels import _copy_rows_py

    compiled = copy_rows_kernel(wait=True)
    rng = np.random.default_rng(3)
    chunks = [rng.integers(0, 256, (ROWS, 5), dtype=np.uint8) for _ in range(3)]
    addresses = np.array([0, *(c.ctypes.data for c in chunks)], np.int64)  # chunk 0: not held
    lengths = np.array([0, ROWS, ROWS, ROWS], np.int64)
    for ids, rows in (([1, 3, 2, 1], [0, 6, 3, 2]), ([2, 0, 1], [1, 1, 1]), ([3, 1], [2, 7])):
        ids, rows = np.array(ids, np.int64), np.array(rows, np.int64)
        out = [np.zeros((len(ids), 5), np.uint8) for _ in range(2)]
        bad = [
            kernel(o.ctypes.data, 5, addresses, lengths, ids, rows)
            for kernel, o in zip((compiled, _copy_rows_py), out, strict=True)
        ]
        assert bad[0] == bad[1]
        np.testing.assert_array_equal(out[0], out[1])
        good = len(ids) if bad[0] < 0 else bad[0]
        expected = [chunks[c - 1][r] for c, r in zip(ids[:good], rows[:good], strict=True)]
        np.testing.assert_array_equal(out[0][:good], np.array(expected).reshape(good, 5))
    assert bad == [1, 1]  # (the last case: row 7 of a 7-row chunk)
