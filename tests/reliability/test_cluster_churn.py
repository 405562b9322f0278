"""The cluster path when workers are missing, die or stop (issue 10): one clear error instead of
a wait for ever, and nothing lost where the work can go on."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import lakeio
from lakeio.errors import LakeError
from lakeio.testing.cluster import process_cluster

LAKEIO = str(Path(sys.executable).with_name("lakeio"))


@pytest.fixture(scope="module")
def no_workers():
    with process_cluster(n_workers=0) as address:
        yield address


@pytest.mark.parametrize("command", ["ingest", "stats"])
def test_cli_commands_on_a_cluster_without_workers_refuse_in_one_line(
    command, no_workers, png_folder, small_lake, tmp_path
):
    args = [png_folder[0], tmp_path / "lake"] if command == "ingest" else [small_lake[0]]
    env = {**os.environ, "DASK_LAKEIO__CONNECT_TIMEOUT": "1s"}
    started = time.monotonic()
    run = subprocess.run(
        [LAKEIO, command, *map(str, args), "--scheduler", no_workers],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1] == (
        f"lakeio: error: the Dask cluster at {no_workers} has no workers (waited 1s, "
        "lakeio.connect-timeout); start some"
    )
    assert time.monotonic() - started < 60


def test_a_cluster_loader_without_workers_refuses(no_workers, small_lake):
    import dask.config

    ds = lakeio.open_dataset(small_lake[0])
    with (
        dask.config.set({"lakeio.connect-timeout": "1s"}),
        pytest.raises(LakeError, match=r"has no workers .* or load in process"),
        ds.loader(batch_size=32, cluster=no_workers) as loader,
    ):
        next(iter(loader))


def test_loader_stats_name_a_stopped_worker_instead_of_blocking(small_lake):
    """A worker that never answers (SIGSTOP) holds up nothing: the others' figures come back,
    and it is listed as not answering."""
    import signal

    import dask.config
    from distributed import Client

    with process_cluster(n_workers=2) as address, Client(address) as client:
        pids = client.run(os.getpid)
        stopped = sorted(pids)[0]
        ds = lakeio.open_dataset(small_lake[0])
        with ds.loader(batch_size=32, cluster=client) as loader:
            for _ in loader:
                pass
            os.kill(pids[stopped], signal.SIGSTOP)
            try:
                started = time.monotonic()
                with dask.config.set({"lakeio.stats-timeout": 1}):
                    workers = loader.stats()["workers"]
                elapsed = time.monotonic() - started
            finally:
                os.kill(pids[stopped], signal.SIGCONT)
    assert elapsed < 10
    assert workers[stopped] == {"error": "no answer within 1 s"}
    (other,) = set(workers) - {stopped}
    assert "error" not in workers[other] and workers[other]


def test_an_ingest_whose_workers_all_die_for_good_stops_instead_of_waiting(tmp_path):
    """The worker (and its nanny, so none comes back) is killed while a task is stuck on a
    named pipe: the ingest must end with one error, not wait for ever."""
    import signal
    import threading

    import dask.config
    from distributed import Client

    from lakeio.testing.images import write_image_folder

    write_image_folder(tmp_path / "src", 8, size=(16, 16), fmt="png", seed=3)
    os.mkfifo(tmp_path / "src" / "coffee" / "zzz.png")  # a read that never ends
    outcome = []
    with process_cluster(n_workers=1) as address, Client(address) as client:
        (pid,) = client.run(os.getpid).values()
        (nanny,) = client.run(os.getppid).values()

        def ingest():
            try:
                lakeio.ingest(tmp_path / "src", tmp_path / "lake", cluster=address,
                              size=(16, 16), channels=3, progress=False, echo=None)  # fmt: skip
            except Exception as exc:
                outcome.append(exc)

        with dask.config.set({"lakeio.connect-timeout": "1s"}):
            runner = threading.Thread(target=ingest)
            runner.start()
            time.sleep(3)  # the task is reading the pipe now
            for victim in (nanny, pid):
                os.kill(victim, signal.SIGKILL)
            runner.join(timeout=60)
    assert not runner.is_alive()
    (error,) = outcome
    assert isinstance(error, LakeError) and "is gone and none came back" in str(error)
    with pytest.raises(LakeError):
        lakeio.open_dataset(tmp_path / "lake")  # nothing committed


def test_an_array_ingest_survives_a_worker_killed_while_holding_its_data(tmp_path):
    """Array tasks' data is scattered to workers; the one killed (its nanny starts a fresh,
    empty one) takes its share with it: the client scatters that share again."""
    import signal
    import threading

    from distributed import Client

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3000, 48, 48, 3), dtype=np.uint8)
    labels = np.arange(3000) % 10
    common = {"labels": labels, "size": (96, 96), "chunk_samples": 16, "progress": False,
              "echo": None}  # fmt: skip
    outcome = []
    with process_cluster(n_workers=2) as address, Client(address) as client:
        victim = sorted(client.run(os.getpid).values())[0]

        def ingest():
            try:
                outcome.append(lakeio.ingest(images, tmp_path / "lake", cluster=address, **common))
            except Exception as exc:
                outcome.append(exc)

        runner = threading.Thread(target=ingest)
        runner.start()
        while runner.is_alive() and not list(tmp_path.glob("lake/segments/s*/zarr.json")):
            time.sleep(0.005)  # the first segment is written: the rest are in flight
        os.kill(victim, signal.SIGKILL)
        runner.join(timeout=120)
    (summary,) = outcome
    assert not isinstance(summary, Exception), summary
    lakeio.ingest(images, tmp_path / "reference", **common)  # in process, undisturbed
    got = lakeio.open_dataset(tmp_path / "lake").to_dask()
    want = lakeio.open_dataset(tmp_path / "reference").to_dask()
    for field in ("images", "labels"):
        np.testing.assert_array_equal(
            got[field].compute(scheduler="sync"), want[field].compute(scheduler="sync")
        )
