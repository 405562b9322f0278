"""A worker's one lakeio memory budget against its process memory (the periodic check's logic;
tests/reliability/test_cluster_churn.py runs it in real `dask worker` processes)."""

import numpy as np

from lakeio.cluster.worker_memory import WorkerMemory
from lakeio.format.pages import drop_spares, own_pages, spare_bytes

MB = 1 << 20


def _filled(memory: WorkerMemory, n: int) -> None:
    for i in range(n):
        memory.tier.put(f"k{i}", np.zeros(MB, np.uint8))


def test_the_budget_is_the_largest_ask_within_the_ceiling():
    memory = WorkerMemory(1000 * MB)
    memory.want(100 * MB)
    memory.want(300 * MB)
    memory.want(200 * MB)
    assert memory.tier.capacity == 300 * MB
    memory.want(4000 * MB)
    assert memory.tier.capacity == 500 * MB  # half the limit


def test_shedding_starts_below_dasks_own_spill_or_pause_if_they_are_lower():
    assert WorkerMemory(1000 * MB).shed_at == int(1000 * MB * 0.65)
    assert WorkerMemory(1000 * MB, spill=0.5, pause=0.8).shed_at == int(1000 * MB * 0.45)
    assert WorkerMemory(1000 * MB, spill=False, pause=0.6).shed_at == int(1000 * MB * 0.55)
    assert WorkerMemory(None).shed_at is None


def test_the_tier_gives_way_under_pressure_and_grows_back_slowly():
    drop_spares()  # (other tests' spare mappings would be shed first)
    rss = [0]
    memory = WorkerMemory(1000 * MB, rss=lambda: rss[0])
    memory.want(500 * MB)
    _filled(memory, 400)
    rss[0] = 700 * MB  # over 650: shed the excess and 5% of the limit more
    freed = memory.relieve()
    assert freed == 100 * MB and memory.tier.stats().bytes_held == 300 * MB
    assert memory.tier.capacity == 300 * MB and memory.sheds == 1
    rss[0] = 600 * MB  # under the line but not well under: hold
    assert memory.relieve() == 0 and memory.tier.capacity == 300 * MB
    rss[0] = 400 * MB  # well under: 5% of the limit back per check, up to the ceiling
    memory.relieve()
    assert memory.tier.capacity == 350 * MB
    for _ in range(10):
        memory.relieve()
    assert memory.tier.capacity == 500 * MB


def test_without_a_memory_limit_nothing_is_shed():
    memory = WorkerMemory(None, rss=lambda: 1 << 40)
    memory.want(64 * MB)
    _filled(memory, 10)
    assert memory.relieve() == 0 and memory.tier.stats().bytes_held == 10 * MB


def test_spare_mappings_go_before_any_chunk_is_shed():
    """Mappings kept for the next decoded chunk count in the process's memory: under pressure
    they are unmapped first, and chunks shed only if that was not enough."""
    import gc

    memory = WorkerMemory(1000 * MB, rss=lambda: (700 if spare_bytes() else 600) * MB)
    memory.want(500 * MB)
    _filled(memory, 100)
    drop_spares()
    spares = [own_pages(4 * MB) for _ in range(4)]
    del spares
    gc.collect()
    assert spare_bytes() == 16 * MB
    assert memory.relieve() == 16 * MB and spare_bytes() == 0
    assert memory.tier.stats().bytes_held == 100 * MB and memory.sheds == 0
