"""Reliability case "cluster churn": workers die, are replaced, join and restart while three
trainers load two versions of a lake through one Dask cluster (issue 10).

Each trial runs one epoch of three cluster loaders in step, batch by batch as DDP ranks run:
ranks 0 and 1 of a job on version 1, and a job of one rank on version 2 (made by `lakeio
stats`, so both versions share their segments and the workers' memory). At a seeded batch one
event hits the workers (`EVENTS`). What must hold: every loader's batches equal the in-process
loader's for that version, rank and epoch; afterwards every worker runs (none paused) with its
lakeio memory tier within its one budget. "detected" counts trials where a loader moved tasks
to new owners because theirs had left, or submitted again tasks that another client cancelled
(a restart cancels every client's tasks).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import tempfile
import time
from itertools import zip_longest
from pathlib import Path

from lakeio.testing.batches import collect, same
from lakeio.testing.tally import Tally

EVENTS = (
    "kill one worker",
    "kill every worker",
    "a worker joins",
    "restart from another client",
    "every worker replaced",
)


class _Workers:
    """`dask worker` processes (each with its nanny) of one scheduler, started and killed here."""

    def __init__(self, address: str, folder: str, memory_limit: str) -> None:
        self.address, self.folder, self.memory_limit = address, folder, memory_limit
        self.procs: list[subprocess.Popen] = []
        self._count = 0

    def start(self, n: int) -> None:
        from lakeio.testing.cluster import worker_command

        for _ in range(n):
            self._count += 1
            name = f"lakeio-churn-{self._count}"
            self.procs.append(
                subprocess.Popen(
                    worker_command(self.address, name, self.folder, self.memory_limit),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )

    def stop(self, proc: subprocess.Popen) -> None:
        from lakeio.testing.cluster import stop_process

        stop_process(proc)
        self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)


def _kill(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _apply(event: str, client, workers: _Workers, joined: list) -> None:
    """Make ``event`` happen to the cluster now."""
    from distributed import Client

    pids = client.run(os.getpid)
    if event == "kill one worker":
        _kill([pids[sorted(pids)[0]]])  # its nanny starts a new one
    elif event == "kill every worker":
        _kill(pids.values())
    elif event == "a worker joins":
        workers.start(1)
        joined.append(workers.procs[-1])
    elif event == "restart from another client":
        with Client(client.scheduler.address, timeout="30s") as other:
            other.restart()
    elif event == "every worker replaced":
        nannies = list(client.run(os.getppid).values())
        _kill([*nannies, *pids.values()])  # no nanny left to start a new one
        for proc in list(workers.procs):
            proc.wait(timeout=30)
            workers.procs.remove(proc)
        workers.start(2)
    else:
        raise ValueError(f"unknown event {event!r}")


def _lake(path: Path, client) -> None:
    """Small distinct images, 48 chunks of 8; version 2 by `lakeio stats`."""
    from lakeio.stats import compute_stats
    from lakeio.testing.lakes import distinct_lake

    distinct_lake(path, cluster=client)
    compute_stats(path, cluster=client, echo=None)


def _healthy(client) -> str | None:
    """None if every worker runs with its memory tier within its budget; else what is wrong."""
    from lakeio.cluster.worker import worker_stats
    from lakeio.testing.memory import worker_state

    for address, state in client.run(worker_state).items():
        if state["status"] != "running":
            return f"worker {address} is {state['status']} at {state['rss'] / 1e6:.0f} MB"
    for address, f in client.run(worker_stats).items():
        if f["memory_bytes"] > f["memory_capacity"]:
            return f"worker {address} holds {f['memory_bytes']} > {f['memory_capacity']} bytes"
    return None


def run_churn_trials(
    work: Path, trials: int, seed: int, events: tuple[str, ...] = EVENTS, memory_limit="1GB"
) -> Tally:
    """``trials`` epochs, each hit by one of ``events`` in turn at a seeded batch."""
    import dask.config
    from distributed import Client

    import lakeio
    from lakeio.testing.cluster import process_cluster

    tally = Tally("cluster churn: kills, joins, restarts, replacements")
    rng = random.Random(seed)
    config = {"lakeio.cluster.check-interval": "0.2s", "lakeio.load-timeout": "120s"}
    with (
        tempfile.TemporaryDirectory(prefix="lakeio-churn-") as folder,
        process_cluster(n_workers=0) as address,
        Client(address, timeout="30s") as client,
        dask.config.set(config),
    ):
        workers = _Workers(address, folder, memory_limit)
        try:
            workers.start(2)
            client.wait_for_workers(2, timeout=60)
            _lake(work / "lake", client)
            latest = lakeio.open_dataset(work / "lake")
            readers = [
                (latest.version - 1, 0, 2),
                (latest.version - 1, 1, 2),
                (latest.version, 0, 1),
            ]
            for trial in range(trials):
                event = events[trial % len(events)]
                _trial(client, workers, work / "lake", readers, trial, event, rng, tally)
        finally:
            workers.stop_all()
    return tally


def _trial(client, workers, path, readers, epoch, event, rng, tally: Tally) -> None:
    import lakeio

    def loader(version, rank, world, **cluster):
        ds = lakeio.open_dataset(path, version=version)
        chunk = ds.chunk_nbytes(("images", "labels"))
        made = ds.loader(16, seed=7, rank=rank, world_size=world, shuffle_window=4,
                         prefetch_bytes=4 * chunk, threads=1, **cluster)  # fmt: skip
        made.set_epoch(epoch)
        return made

    client.wait_for_workers(2, timeout=60)  # the last trial's restarted workers are back
    want = [collect(loader(*r)) for r in readers]
    at = rng.randrange(1, min(len(w) for w in want) - 1)
    joined: list = []
    loaders = [loader(*r, cluster=client) for r in readers]
    got: list[list] = [[] for _ in readers]
    tally.trials += 1
    try:
        for b, step in enumerate(zip_longest(*loaders)):
            for i, batch in enumerate(step):
                if batch is not None:
                    got[i].append((batch[0].numpy().copy(), batch[1].numpy().copy()))
            if b == at:
                _apply(event, client, workers, joined)
                tally.injected += 1
        figures = [one.stats() for one in loaders]
        tally.detected += any(
            f["cluster_tasks_moved"] + f["cluster_tasks_retried"] for f in figures
        )
        wrong = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if not same(g, w)]
        time.sleep(0.5)  # the memory check runs every 200 ms
        trouble = _healthy(client)
        if wrong or trouble:
            tally.lost += 1
            tally.notes.append(f"{event}: readers {wrong} got other batches; {trouble or ''}")
        else:
            tally.recovered += 1
    except Exception as exc:  # an epoch that did not finish lost its batches
        tally.lost += 1
        tally.notes.append(f"{event}: {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        for one in loaders:
            one.close()
        for proc in joined:  # the newcomer leaves (gracefully) before the next trial
            workers.stop(proc)
