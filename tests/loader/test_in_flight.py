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
    f = read_figures(chunks, busy, origin, origin + extra, latency, cap, cap + extra, 0)
    share = origin / (origin + extra) if origin + extra else 0.0
    exact = chunks / busy * share * latency
    assert f.in_flight_needed >= exact - 1e-6 and f.in_flight_needed - 1 < exact  # rounded up
    assert f.cap_limits == (f.in_flight_needed > cap)
    if not f.cap_limits:
        assert advice(f, 4 << 20, stall_fraction=0.9) is None


def test_the_advice_names_the_setting_that_binds():
    # 200 chunks/s from a store 100 ms away: 20 reads in flight
    budget_bound = read_figures(400, 2.0, 800, 800, 0.1, 8, 8, 16)
    assert budget_bound.in_flight_needed == 20 and budget_bound.cap_limits
    line = advice(budget_bound, 4 << 20, stall_fraction=0.4)
    assert "20 reads in flight" in line and "allows 8" in line
    assert "prefetch_bytes='80MiB'" in line
    assert advice(budget_bound, 4 << 20, stall_fraction=0.01) is None  # hardly waited
    given = read_figures(400, 2.0, 800, 800, 0.1, 8, 64, 16, threads_set_by="threads")
    assert "raise threads=20" in advice(given, 4 << 20, stall_fraction=0.4)
    capped = read_figures(400, 2.0, 800, 800, 0.1, 8, 64, 16, threads_set_by="max-in-flight")
    assert "lakeio.read.max-in-flight to 20" in advice(capped, 4 << 20, stall_fraction=0.4)
    enough = read_figures(400, 2.0, 800, 800, 0.1, 32, 64, 16, threads_set_by="max-in-flight")
    assert not enough.cap_limits and advice(enough, 4 << 20, stall_fraction=0.4) is None


def test_a_cap_that_covers_the_whole_epoch_is_not_what_holds_the_loop_up():
    """Little's law may ask for more reads in flight than an epoch has chunks (a short epoch
    from a slow store): every chunk may be in flight already, so no setting is advised."""
    short = read_figures(400, 2.0, 800, 800, 0.5, 64, 64, 16, epoch_chunks=48)
    assert short.in_flight_needed == 100 and not short.cap_limits
    assert advice(short, 4 << 20, stall_fraction=0.4) is None
    longer = read_figures(400, 2.0, 800, 800, 0.5, 64, 64, 16, epoch_chunks=5_000)
    assert longer.cap_limits and "100 reads in flight" in advice(longer, 4 << 20, 0.4)
    assert short.as_dict()["epoch_chunks"] == 48
