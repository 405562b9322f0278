"""Plan-aware eviction with several readers: the soonest need wins, each on its own clock."""

import math

import numpy as np

from lakeio.cache.memory import MemoryTier
from lakeio.cache.schedule import Schedule, SharedSchedule


def test_one_reader_schedule_keeps_the_last_word():
    plan = Schedule()
    plan.tell({"a": 3.0}, "r0", 0.0)
    plan.tell({"a": math.inf}, "r1", 0.0)
    assert plan.when("a") == math.inf and plan.when("b") == math.inf


def test_a_reader_saying_never_does_not_cancel_another_readers_need():
    plan = SharedSchedule()
    plan.tell({"a": 1.5, "b": math.inf}, "rank0", now=1.0)
    plan.tell({"a": math.inf, "b": 1.25}, "rank1", now=1.0)
    assert plan.when("a") == 0.5 and plan.when("b") == 0.25 and plan.when("c") == math.inf


def test_readers_are_compared_on_their_own_clocks():
    """Job A is in epoch 50, job B in epoch 2: what A needs a tenth of an epoch from now is
    sooner than what B needs in half an epoch, absolute epoch numbers notwithstanding."""
    plan = SharedSchedule()
    plan.tell({"a": 50.1}, "job-a", now=50.0)
    plan.tell({"b": 2.5}, "job-b", now=2.0)
    assert math.isclose(plan.when("a"), 0.1) and math.isclose(plan.when("b"), 0.5)
    tier = MemoryTier(2 * 100, schedule=plan)
    for key in ("a", "b", "c"):
        tier.put(key, np.zeros(100, np.uint8))
    assert tier.get("a") is not None and tier.get("b") is not None  # c (never) went first
    plan.tell({"c": 2.05}, "job-b", now=2.0)
    tier.put("c", np.zeros(100, np.uint8))
    assert tier.get("a") is not None and tier.get("c") is not None  # b, due last, went


def test_passed_dues_and_silent_or_finished_readers_no_longer_count():
    now = [0.0]
    plan = SharedSchedule(ttl=60, clock=lambda: now[0])
    plan.tell({"a": 1.5, "b": 3.0}, "r", now=1.0)
    plan.tell({}, "r", now=2.0)  # r read a meanwhile (at 1.5), wherever it came from
    assert plan.when("a") == math.inf and plan.when("b") == 1.0
    plan.tell({"c": 0.5}, "quiet", now=0.0)
    now[0] = 30.0
    plan.tell({}, "r", now=2.0)
    now[0] = 61.0
    plan.tell({}, "r", now=2.0)  # "quiet" said nothing for over a minute
    assert plan.when("c") == math.inf and plan.when("b") == 1.0 and plan.readers == 1
    plan.forget("r")
    assert plan.when("b") == math.inf and plan.empty


def test_a_silent_readers_plan_stops_counting_at_eviction_without_any_new_tell():
    now = [0.0]
    plan = SharedSchedule(ttl=60, clock=lambda: now[0])
    tier = MemoryTier(200, schedule=plan)
    plan.tell({"a": 0.1, "b": 0.9}, "gone", now=0.0)
    tier.put("a", np.zeros(100, np.uint8))
    tier.put("b", np.zeros(100, np.uint8))
    now[0] = 61.0  # the reader crashed; nobody else has said anything since
    tier.put("c", np.zeros(100, np.uint8))  # all equal now: least recently used goes
    assert tier.get("a") is None and tier.get("b") is not None and tier.get("c") is not None
    assert tier.plan_readers() == 0


def test_a_readers_clock_does_not_run_back_within_an_epoch_but_a_new_epoch_sets_it():
    plan = SharedSchedule()
    plan.tell({"a": 3.5}, "r", now=2.75)
    plan.tell({}, "r", now=2.25)  # a late task of the same epoch
    assert plan.when("a") == 0.75
    plan.tell({"a": 1.5}, "r", now=1.0)  # the loader went back to epoch 1
    assert plan.when("a") == 0.5


class _CountingSchedule(SharedSchedule):
    asked = 0

    def when(self, key: str) -> float:
        self.asked += 1
        return super().when(key)


def test_shedding_asks_each_entrys_next_use_once():
    """A worker sheds on its event loop: one pass over the entries, not one per eviction."""
    plan = _CountingSchedule()
    tier = MemoryTier(1000 * 10, schedule=plan)
    plan.tell({f"k{i}": 1.0 + i / 1000 for i in range(1000)}, "r", now=1.0)
    for i in range(1000):
        tier.put(f"k{i}", np.zeros(10, np.uint8))
    plan.asked = 0
    freed = tier.resize(500 * 10)
    assert freed == 500 * 10 and plan.asked == 1000
    assert tier.get("k0") is not None and tier.get("k999") is None  # the furthest went
