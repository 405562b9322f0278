"""Little's law from a loader's counts: the reads that must be in flight, and when to say so."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lakeio.loader.in_flight import advice, read_figures


@given(
    chunks=st.integers(0, 10**6),
    busy=st.floats(0.001, 1e4),
    origin=st.integers(0, 10**6),
    extra=st.integers(0, 10**6),
    latency=st.floats(0, 5),
    cap=st.integers(1, 256),
)
def test_in_flight_needed_is_rate_times_latency_rounded_up(
    chunks, busy, origin, extra, latency, cap
):
    f = read_figures(chunks, busy, origin, origin + extra, latency, cap, 0)
    share = origin / (origin + extra) if origin + extra else 0.0
    exact = chunks / busy * share * latency
    assert f.in_flight_needed >= exact - 1e-6 and f.in_flight_needed - 1 < exact  # rounded up
    assert f.cap_limits == (f.in_flight_needed > cap)
    if not f.cap_limits:
        assert advice(f, 4 << 20, stall_fraction=0.9) is None


def test_the_advice_names_the_budget_that_would_lift_the_cap():
    f = read_figures(400, 2.0, 800, 800, 0.1, 8, 16)  # 200 chunks/s from a store 100 ms away
    assert f.in_flight_needed == 20 and f.cap_limits
    line = advice(f, 4 << 20, stall_fraction=0.4)
    assert "20 reads in flight" in line and "allows 8" in line
    assert "prefetch_bytes='80MiB'" in line
    assert advice(f, 4 << 20, stall_fraction=0.01) is None  # the loop hardly waited
