"""`first_and_last_use`, vectorised, against the loop it replaced."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from lakeio.loader.prefetch import first_and_last_use


def _reference(batch_chunks):
    order, last = [], {}
    for b, chunks in enumerate(batch_chunks):
        for c in chunks.tolist():
            if c not in last:
                order.append(c)
            last[c] = b
    return order, last


@given(st.lists(st.lists(st.integers(0, 30), max_size=12), max_size=20))
def test_first_and_last_use_is_the_loop_it_replaced(batches):
    batch_chunks = [np.asarray(b, dtype=np.int64) for b in batches]
    assert first_and_last_use(batch_chunks) == _reference(batch_chunks)
