"""A real multi-process Dask cluster on 127.0.0.1: `dask scheduler` plus `dask worker` processes."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def _dask_cli() -> list[str]:
    """The `dask` console script of the running interpreter's environment."""
    return [str(Path(sys.executable).with_name("dask"))]


def _isolated(command: list[str], private_dirs: tuple[str, ...]) -> list[str]:
    """``command`` in a mount namespace of its own with a fresh tmpfs over each of
    ``private_dirs``: what it writes there, no other process sees (a machine of its own, as far
    as those paths go). Needs root, as tests here run."""
    if not private_dirs:
        return command
    mounts = " && ".join(f"mount -t tmpfs tmpfs {shlex.quote(d)}" for d in private_dirs)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'{mounts} && exec "$@"', "sh", *command]  # fmt: skip


@contextmanager
def process_cluster(
    n_workers: int = 2, timeout: float = 60.0, private_dirs: tuple[str, ...] = ()
) -> Iterator[str]:
    """Start a scheduler and ``n_workers`` single-threaded worker processes; yield the address.

    ``private_dirs``: folders each worker sees as its own empty tmpfs, to stand in for workers
    on other machines writing to their local disks."""
    dask = _dask_cli()
    with tempfile.TemporaryDirectory(prefix="lakeio-cluster-") as tmp:
        scheduler_file = os.path.join(tmp, "scheduler.json")
        common = {
            "stdout": subprocess.DEVNULL,
            "stderr": subprocess.DEVNULL,
            "start_new_session": True,
        }
        procs = [
            subprocess.Popen(
                [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
                 "--scheduler-file", scheduler_file],
                **common,
            )
        ]  # fmt: skip
        try:
            address = _wait_for_address(scheduler_file, procs[0], timeout)
            for i in range(n_workers):
                worker = [*dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                          "--no-dashboard", "--name", f"lakeio-test-{i}", "--local-directory", tmp]  # fmt: skip
                procs.append(subprocess.Popen(_isolated(worker, private_dirs), **common))
            _wait_for_workers(address, n_workers, timeout)
            yield address
        finally:
            for proc in reversed(procs):
                _stop(proc)


def _wait_for_address(scheduler_file: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with status {proc.returncode}")
        try:
            with open(scheduler_file) as fh:
                return json.load(fh)["address"]
        except (FileNotFoundError, ValueError, KeyError):
            time.sleep(0.1)
    raise TimeoutError("dask scheduler did not start")


def _wait_for_workers(address: str, n: int, timeout: float) -> None:
    from distributed import Client

    with Client(address, timeout=timeout) as client:
        client.wait_for_workers(n, timeout=timeout)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
