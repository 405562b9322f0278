from hypothesis import given
from hypothesis import strategies as st

from lakeio.format.index import SampleIndex


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
