"""Memory a test makes a worker hold outside Dask's knowledge (unmanaged, as a leak or another
library's buffers would be), to press it towards its memory limit. For ``client.run``."""

from __future__ import annotations

import numpy as np

_held: list[np.ndarray] = []


def hold(nbytes: int) -> int:
    """Allocate and touch ``nbytes`` in this process, kept until `release`; the process's RSS."""
    import psutil

    _held.append(np.ones(int(nbytes), dtype=np.uint8))
    return psutil.Process().memory_info().rss


def release() -> None:
    _held.clear()


def worker_state(dask_worker) -> dict:
    """The worker's status ("running", "paused", …), its RSS and its memory limit."""
    import psutil

    return {
        "status": dask_worker.status.name,
        "rss": psutil.Process().memory_info().rss,
        "limit": dask_worker.memory_manager.memory_limit,
        "pause": dask_worker.memory_manager.memory_pause_fraction,
    }
