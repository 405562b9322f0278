"""`first_and_last_use` and `uses_in_order`, vectorised, against the loop they replaced."""

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


@given(
    st.lists(st.integers(0, 30), max_size=200),
    st.integers(1, 9),
    st.sampled_from([3, 7, 1 << 20]),
)
def test_uses_in_order_reads_the_plan_block_by_block_as_the_loop_did(ids, batch_size, block):
    """The loader's own plan: one array of chunk ids cut every ``batch_size`` samples, read in
    blocks (here also blocks smaller than a batch, so uses cross block edges)."""
    import lakeio.loader.plan as plan
    from lakeio.loader.prefetch import uses_in_order

    flat = np.asarray(ids, dtype=np.int64)
    as_int32 = np.stack([flat, flat], axis=1).astype(np.int32)[:, 1]  # strided, as the plan's are
    batches = [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]
    saved, plan._BLOCK = plan._BLOCK, block
    try:
        assert uses_in_order(as_int32, batch_size) == _reference(batches)
    finally:
        plan._BLOCK = saved
