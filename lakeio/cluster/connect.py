"""One way to get a Dask client: reuse the caller's, connect to an address, or start a LocalCluster."""

from __future__ import annotations

import ast
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from contextlib import contextmanager

import dask.config
from distributed import Client, LocalCluster

from lakeio.errors import LakeError


def default_workers() -> int:
    """One single-threaded worker process per core: decoding is CPU-bound and Pillow holds the GIL."""
    return max(1, os.cpu_count() or 1)


@contextmanager
def dask_client(
    cluster: Client | str | None = None,
    *,
    workers: int | None = None,
    processes: bool = True,
    dashboard: bool = True,
    echo: Callable[[str], None] | None = print,
) -> Iterator[Client]:
    """Yield a client for ``cluster`` (a Client, a scheduler address, or None for a new LocalCluster).

    A cluster started here is closed on exit; one passed in is left running. The dashboard link
    is printed through ``echo`` so the operator can watch the work. ``dashboard=False`` (a job
    done in about a second) skips the dashboard's web server, which costs ~0.3 s to start.
    """
    if isinstance(cluster, Client):
        require_workers(cluster)
        _announce(cluster, echo)
        yield cluster
        return
    if isinstance(cluster, str):
        with connect_address(cluster) as client:
            require_workers(client)
            _announce(client, echo)
            yield client
        return
    if processes:
        _refuse_unguarded_script()
    n = workers or default_workers()
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=":8787" if dashboard else None,
            silence_logs=50,  # task errors reach the caller as exceptions; no duplicate log spam
        ) as local,
        Client(local) as client,
    ):
        if processes:  # threads share this process's imports already
            client.run(warm_worker)  # imports happen at start-up, not inside the first tasks
        _announce(client, echo, dashboard)
        yield client


def require_workers(client: Client, instead: str = "") -> list[str]:
    """The cluster's workers, waiting up to ``lakeio.connect-timeout`` for a first one
    (adaptive clusters start empty); with none, one error instead of tasks that wait for ever.
    ``instead`` says what the user may do besides starting workers."""
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if workers:
        return workers
    timeout = dask.config.get("lakeio.connect-timeout", "15s")
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise LakeError(
            f"the Dask cluster at {client.scheduler.address} has no workers (waited {timeout}, "
            f"lakeio.connect-timeout); start some{instead}"
        ) from None
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def completed(client: Client, futures, poll: float = 1.0) -> Iterator:
    """``futures`` as they finish (like ``as_completed``), but a cluster left without workers
    for ``lakeio.connect-timeout`` (all died, none came back) is an error, not a wait for ever.
    Given a set, it waits for what the caller adds to it meanwhile too (a resubmitted task)."""
    from dask.utils import parse_timedelta
    from distributed import wait

    limit = parse_timedelta(dask.config.get("lakeio.connect-timeout", "15s"))
    pending = futures if isinstance(futures, set) else set(futures)  # the caller may add to it
    empty_since = None
    while pending:
        try:
            done, _ = wait(list(pending), timeout=poll, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done = set()
        except CancelledError:  # wait() raises for cancelled futures: hand them on instead
            done = {f for f in pending if f.done()}
        pending -= done
        yield from done
        if done or client.scheduler_info(n_workers=-1)["workers"]:
            empty_since = None
        elif empty_since is None:
            empty_since = time.monotonic()
        elif time.monotonic() - empty_since > limit:
            raise LakeError(
                f"every worker of the Dask cluster at {client.scheduler.address} is gone and "
                f"none came back within {limit:g} s (lakeio.connect-timeout); nothing was "
                "committed: start workers and rerun (work already written is kept)"
            )


def connect_address(address: str) -> Client:
    """A client of the scheduler at ``address``, given up after ``lakeio.connect-timeout``.

    A ``tls://`` address takes its certificates from dask config (``distributed.comm.tls.*``;
    docs/cluster.md, "TLS"), as distributed's own ``Client(address)`` does. Without them,
    distributed fails with a TypeError about an ``ssl_context``: say what is missing instead.
    """
    from distributed import Security

    if address.startswith("tls://") and not Security().get_connection_args("client").get(
        "ssl_context"
    ):
        raise LakeError(
            f"{address}: a tls:// scheduler needs a certificate, and none is configured; pass "
            "cluster= a Client(address, security=Security(tls_ca_file=..., tls_client_cert=..., "
            "tls_client_key=...)), or set distributed.comm.tls.ca-file, .client.cert and "
            ".client.key in dask config (docs/cluster.md, TLS)"
        )
    return Client(address, timeout=dask.config.get("lakeio.connect-timeout", "15s"))


def _refuse_unguarded_script() -> None:
    """Worker processes start by re-importing the ``__main__`` script; called from its top level
    outside ``if __name__ == "__main__":``, each would start a cluster of its own and die with
    "Nanny failed to start". Say so in one line instead, before any process starts."""
    if dask.config.get("distributed.worker.multiprocessing-method", "spawn") == "fork":
        return  # forked workers do not re-import the script
    line = unguarded_script_line()
    if line is not None:
        raise LakeError(
            f"{line}: lakeio starts Dask worker processes here, and they re-import this script; "
            'put the call under `if __name__ == "__main__":` (or inside a function called from '
            "there), or pass cluster= an existing Client or scheduler address"
        )


def unguarded_script_line() -> str | None:
    """``"script.py:LINE"`` when this call comes from the top-level code of the ``__main__``
    script, outside an ``if __name__ == "__main__":`` block; None otherwise (a guarded call,
    ``python -c``, a notebook, or a script that cannot be read)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    frame = sys._getframe(1)
    line = None
    while frame is not None:  # the outermost frame running the script's own top-level code
        if (
            frame.f_globals is getattr(main, "__dict__", None)
            and frame.f_code.co_name == "<module>"
        ):
            line = frame.f_lineno
        frame = frame.f_back
    if path is None or line is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError, ValueError):
        return None
    guarded = any(
        isinstance(node, ast.If)
        and node.lineno <= line <= node.end_lineno
        and any(_is_main_test(part) for part in ast.walk(node.test))
        for node in ast.walk(tree)
    )  # `if __name__ == "__main__" and ...:`, or a guard inside a try or with block, counts
    return None if guarded else f"{path}:{line}"


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (
        isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
    ):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    values = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and values == ["__main__"]


def warm_worker() -> None:
    """Import what ingest and load tasks use (zarr alone takes ~0.2 s to import)."""
    import numcodecs  # noqa: F401
    import zarr  # noqa: F401
    from PIL import Image

    import lakeio.ingest.tasks  # noqa: F401

    Image.init()


def _announce(client: Client, echo: Callable[[str], None] | None, dashboard: bool = True) -> None:
    if echo is None:
        return
    workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
    if not dashboard:
        echo(f"Dask: {workers} worker threads in this process (a small job: no dashboard)")
        return
    echo(f"Dask dashboard: {client.dashboard_link}  ({workers} workers)")
