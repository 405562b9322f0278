"""One way to get a Dask client: reuse the caller's, connect to an address, or start a LocalCluster."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dask.config
from distributed import Client, LocalCluster


def default_workers() -> int:
    """One single-threaded worker process per core: decoding is CPU-bound and Pillow holds the GIL."""
    return max(1, os.cpu_count() or 1)


@contextmanager
def dask_client(
    cluster: Client | str | None = None,
    *,
    workers: int | None = None,
    processes: bool = True,
    echo: Callable[[str], None] | None = print,
) -> Iterator[Client]:
    """Yield a client for ``cluster`` (a Client, a scheduler address, or None for a new LocalCluster).

    A cluster started here is closed on exit; one passed in is left running. The dashboard link
    is printed through ``echo`` so the operator can watch the work.
    """
    if isinstance(cluster, Client):
        _announce(cluster, echo)
        yield cluster
        return
    if isinstance(cluster, str):
        timeout = dask.config.get("lakeio.connect-timeout", "15s")
        with Client(cluster, timeout=timeout) as client:
            _announce(client, echo)
            yield client
        return
    n = workers or default_workers()
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=":8787",
            silence_logs=50,  # task errors reach the caller as exceptions; no duplicate log spam
        ) as local,
        Client(local) as client,
    ):
        client.run(warm_worker)  # imports happen at start-up, not inside the first tasks
        _announce(client, echo)
        yield client


def warm_worker() -> None:
    """Import what ingest and load tasks use (zarr alone takes ~0.2 s to import)."""
    import numcodecs  # noqa: F401
    import zarr  # noqa: F401
    from PIL import Image

    import lakeio.ingest.tasks  # noqa: F401

    Image.init()


def _announce(client: Client, echo: Callable[[str], None] | None) -> None:
    if echo is None:
        return
    workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
    echo(f"Dask dashboard: {client.dashboard_link}  ({workers} workers)")
