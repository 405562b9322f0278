import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lakeio.format.index import ChunkRef, SampleIndex


@given(st.lists(st.integers(0, 50), min_size=1, max_size=8), st.integers(1, 16))
def test_every_sample_maps_to_exactly_one_valid_chunk_row(segments, chunk_samples):
    index = SampleIndex(segments, chunk_samples)
    assert len(index) == sum(segments)
    rows = {(c.segment, c.chunk): c.rows for c in index.chunks()}
    assert sum(rows.values()) == len(index)
    seen = set()
    for i in range(len(index)):
        segment, chunk, row = index.locate(i)
        assert 0 <= row < rows[(segment, chunk)]
        seen.add((segment, chunk, row))
    assert len(seen) == len(index)


@given(st.lists(st.integers(0, 60), min_size=1, max_size=10), st.integers(1, 16))
def test_chunk_ids_and_rows_agree_with_locate_and_the_chunk_list(segments, chunk_samples):
    """What the loader reads per sample (chunk id, row), computed for any samples at once,
    names the chunk and row `locate` does, through the chunk list."""
    index = SampleIndex(segments, chunk_samples)
    refs, chunk_of, row_of = index.chunk_table()
    samples = np.arange(len(index))
    shuffled = np.random.default_rng(len(index)).permutation(samples)
    ids, rows = chunk_of[shuffled], row_of[shuffled]
    assert len(refs) == index.chunk_count == sum(-(-n // chunk_samples) for n in segments)
    for i, c, r in zip(shuffled.tolist(), ids.tolist(), rows.tolist(), strict=True):
        ref = refs[c]
        assert index.locate(i) == (ref.segment, ref.chunk, r) and 0 <= r < ref.rows
    if len(index):  # ids run in lake order: each chunk's samples are one run
        np.testing.assert_array_equal(np.diff(chunk_of[samples]) >= 0, True)
        assert set(chunk_of[samples].tolist()) == set(range(index.chunk_count))
    with pytest.raises(IndexError):
        refs[index.chunk_count]


def test_the_index_of_a_large_lake_holds_nothing_per_sample():
    """14 M samples in 6,400 segments: the index is a few arrays of segment figures."""
    import sys

    index = SampleIndex([2_190] * 6_400, 27)  # 81 whole chunks and one of 3 rows each
    held = sum(a.nbytes for a in (index.segment_samples, index.offsets, index.first_chunk))
    assert len(index) == 14_016_000 and held < 200_000 and sys.getsizeof(index) < 1_000
    refs, chunk_of, row_of = index.chunk_table()
    assert len(refs) == 6_400 * 82
    last = len(index) - 1
    assert refs[int(chunk_of[[last]][0])] == ChunkRef(6_399, 81, 3)
    assert row_of[[last]][0] == 2 and refs[81] == ChunkRef(0, 81, 3) and refs[82].segment == 1


def test_sample_numbers_outside_the_lake_are_an_index_error():
    _, chunk_of, row_of = SampleIndex([5, 0, 7], 4).chunk_table()
    for bad in ([12], [-1], [0, 3, 99]):
        with pytest.raises(IndexError, match=r"within 0\.\.11"):
            chunk_of[bad]
        with pytest.raises(IndexError):
            row_of[bad]
    assert chunk_of[[0, 4, 5, 11]].tolist() == [0, 1, 2, 3] and len(chunk_of) == 12
