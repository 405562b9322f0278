"""The cluster path when workers are missing, die or stop (issue 10): one clear error instead of
a wait for ever, and nothing lost where the work can go on."""

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import lakeio
from lakeio.errors import LakeError
from lakeio.testing.batches import assert_same, collect
from lakeio.testing.cluster import process_cluster
from lakeio.testing.lakes import distinct_lake

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


def _worker_pids(client) -> list[int]:
    return list(client.run(os.getpid).values())


@pytest.mark.parametrize("how", ["nannies restart them", "a new worker joins"])
def test_an_epoch_goes_on_when_every_worker_is_replaced(tmp_path, how):
    """Every worker process is killed mid-epoch; new ones (other addresses) take over. The
    tasks pinned to the dead owners move to the new ones: the epoch ends with the in-process
    batches, nothing lost or repeated (issue 10: it used to wait until lakeio.load-timeout)."""
    import signal

    import dask.config
    from distributed import Client

    from lakeio.testing.cluster import extra_worker

    with (
        process_cluster(n_workers=2) as address,
        Client(address, timeout="30s") as client,
        dask.config.set({"lakeio.cluster.check-interval": "0.2s", "lakeio.load-timeout": "90s"}),
    ):
        images = distinct_lake(tmp_path / "lake", cluster=client)
        ds = lakeio.open_dataset(tmp_path / "lake")
        expected = collect(ds.loader(16, seed=4, shuffle_window=4))
        chunk_bytes = ds.chunk_nbytes(("images", "labels"))
        loader = ds.loader(
            16, seed=4, shuffle_window=4, cluster=client, prefetch_bytes=4 * chunk_bytes,
            threads=1, prefetch_next_epoch=False,
        )  # fmt: skip
        got = []
        with loader, contextlib.ExitStack() as newcomers:
            for i, (im, lb) in enumerate(loader):
                got.append((im.numpy().copy(), lb.numpy().copy()))
                if i == 3:
                    before = set(client.scheduler_info(n_workers=-1)["workers"])
                    victims = _worker_pids(client)
                    if how == "a new worker joins":  # the nannies go first: none comes back
                        victims = [*set(client.run(os.getppid).values()), *victims]
                    for pid in victims:
                        os.kill(pid, signal.SIGKILL)
                    if how == "a new worker joins":
                        newcomers.enter_context(extra_worker(address))
            stats = loader.stats()
            after = set(client.scheduler_info(n_workers=-1)["workers"])
    assert_same(got, expected)
    assert after and not after & before  # all served by workers that were not there before
    assert stats["cluster_tasks_moved"] > 0
    flat = np.concatenate([im for im, _ in got]).reshape(-1, images[0].size)
    assert len(np.unique(flat, axis=0)) == len(images)


def test_a_cluster_loader_whose_workers_all_die_for_good_fails_in_one_error(tmp_path):
    """No worker comes back: the loads fail after lakeio.connect-timeout with one error naming
    the cluster, not after lakeio.load-timeout (10 minutes by default)."""
    import signal

    import dask.config
    from distributed import Client

    with (
        process_cluster(n_workers=2) as address,
        Client(address, timeout="30s") as client,
        dask.config.set({"lakeio.cluster.check-interval": "0.2s", "lakeio.connect-timeout": "2s"}),
    ):
        distinct_lake(tmp_path / "lake", cluster=client)
        ds = lakeio.open_dataset(tmp_path / "lake")
        chunk_bytes = ds.chunk_nbytes(("images", "labels"))
        loader = ds.loader(16, seed=1, cluster=client, prefetch_bytes=2 * chunk_bytes, threads=1)
        with loader, pytest.raises(LakeError, match="is gone and none came back") as caught:
            for i, _ in enumerate(loader):
                if i == 1:
                    started = time.monotonic()
                    victims = [*set(client.run(os.getppid).values()), *_worker_pids(client)]
                    for pid in victims:  # nannies first: no worker comes back
                        os.kill(pid, signal.SIGKILL)
    assert time.monotonic() - started < 60
    assert address in str(caught.value)


def _worker_figures(client) -> dict[str, dict]:
    from lakeio.cluster.worker import worker_stats

    return client.run(worker_stats)


def test_every_lake_and_version_on_a_worker_shares_one_memory_budget(tmp_path):
    """One epoch of v1, `lakeio stats` (v2: same segments), one epoch of v2, one of another
    lake: each worker's tier stays within the one budget the lakes asked for (it used to be one
    budget per lake snapshot), and v2 is served from what v1 cached."""
    from distributed import Client

    from lakeio.stats import compute_stats

    with process_cluster(n_workers=2) as address, Client(address, timeout="30s") as client:
        distinct_lake(tmp_path / "a", 64, cluster=client)
        distinct_lake(tmp_path / "b", 64, cluster=client)
        probe = lakeio.open_dataset(tmp_path / "a")
        lake_bytes = len(probe.chunk_members()) * probe.chunk_nbytes(("images", "labels"))
        budget = lake_bytes  # each worker could hold a whole lake, not two
        cache = lakeio.Cache(memory=budget)

        def epoch(path) -> dict[str, int]:
            before = _worker_figures(client)
            ds = lakeio.open_dataset(path, cache=cache)
            with ds.loader(32, seed=2, cluster=client, prefetch_next_epoch=False) as loader:
                collect(loader)
            after = _worker_figures(client)
            held = {w: (f["memory_bytes"], f["memory_capacity"]) for w, f in after.items()}
            assert all(capacity == budget for _, capacity in held.values()), held
            assert all(nbytes <= budget for nbytes, _ in held.values()), held
            names = ("memory_requests", "memory_hits", "origin_reads")
            return {n: sum(after[w][n] - before.get(w, {n: 0})[n] for w in after) for n in names}

        first = epoch(tmp_path / "a")
        compute_stats(tmp_path / "a", cluster=client, echo=None)
        assert lakeio.open_dataset(tmp_path / "a").version == probe.version + 1
        second = epoch(tmp_path / "a")
        epoch(tmp_path / "b")
        held = sum(f["memory_bytes"] for f in _worker_figures(client).values())
    assert first["origin_reads"] > 0 and first["memory_hits"] == 0
    assert second["origin_reads"] == 0  # v2's segments are v1's: served from the workers' tiers
    assert second["memory_hits"] == second["memory_requests"] > 0
    assert lake_bytes < held <= 2 * budget  # two workers, one budget each, across three lakes


def test_a_worker_near_its_memory_limit_sheds_the_lakeio_tier_instead_of_pausing(tmp_path):
    """The worker's tier holds a lake; then other memory (held outside Dask, as a leak would be)
    takes the process past Dask's pause threshold. lakeio gives its tier up, the worker runs
    on, and the next epoch completes (it used to stay paused: nothing it held was Dask's)."""
    import dask.config
    from distributed import Client

    from lakeio.testing.memory import hold, release, worker_state

    with (
        process_cluster(n_workers=1, memory_limit="600MB") as address,
        Client(address, timeout="30s") as client,
        dask.config.set({"lakeio.load-timeout": "60s"}),
    ):
        rng = np.random.default_rng(5)
        images = rng.integers(0, 256, (2400, 64, 64, 3), dtype=np.uint8)  # 29 MB
        lakeio.ingest(images, tmp_path / "lake", labels=np.arange(2400) % 3, cluster=client,
                      chunk_samples=32, codec="lz4", progress=False, echo=None)  # fmt: skip
        ds = lakeio.open_dataset(tmp_path / "lake", cache=lakeio.Cache(memory="1GB"))
        expected = collect(lakeio.open_dataset(tmp_path / "lake").loader(64, seed=3))
        options = {"seed": 3, "cluster": client, "prefetch_bytes": 4 << 20, "threads": 1,
                   "prefetch_next_epoch": False}  # fmt: skip
        with ds.loader(64, **options) as loader:
            collect(loader)
            (tier,) = (f["memory_bytes"] for f in _worker_figures(client).values())
            (state,) = client.run(worker_state).values()
            pause = int(state["limit"] * state["pause"])
            assert tier >= images.nbytes and state["rss"] + tier // 2 < pause
            client.run(hold, pause - state["rss"] + tier // 2)  # past pause, but not by the tier
            deadline = time.monotonic() + 30
            while (state := next(iter(client.run(worker_state).values())))["rss"] > pause:
                assert time.monotonic() < deadline, f"still over the pause threshold: {state}"
                time.sleep(0.2)
            got = collect(loader)
            (figures,) = _worker_figures(client).values()
            client.run(release)
    assert_same(got, expected)
    assert figures["memory_shed_bytes"] >= tier // 2 and figures["memory_sheds"] >= 1
    assert figures["memory_bytes"] <= figures["memory_capacity"] < tier


def test_plan_aware_eviction_on_workers_serves_every_rank_and_every_job(tmp_path):
    """Workers' tiers hold a quarter of the lake. With two ranks, or two jobs at different
    epochs, sharing them, the memory hit rate stays near one rank's alone (issue 10: each rank
    told the workers that chunks it would not read next were never needed again, and epoch 50
    of one job looked later than epoch 2 of another: 0.6x of one rank's rate)."""
    from distributed import Client

    def hit_rate(client, path, jobs, epochs=4) -> float:
        probe = lakeio.open_dataset(path)
        total = len(probe.chunk_members()) * probe.chunk_nbytes(("images", "labels"))
        cache = lakeio.Cache(memory=total // 8)  # per worker: a quarter over both
        loaders = [
            (lakeio.open_dataset(path, cache=cache).loader(
                32, seed=seed, rank=rank, world_size=world, cluster=client,
                prefetch_next_epoch=False), start)
            for seed, world, start in jobs for rank in range(world)
        ]  # fmt: skip
        rates = []
        for epoch in range(epochs):
            before = _worker_figures(client)

            for loader, start in loaders:
                loader.set_epoch(start + epoch)
            for _ in zip(*(loader for loader, _ in loaders), strict=True):
                pass  # in step, batch by batch, as DDP ranks are (and as jobs of one speed)
            after = _worker_figures(client)
            requests, hits = (
                sum(after[w][n] - before.get(w, {n: 0})[n] for w in after)
                for n in ("memory_requests", "memory_hits")
            )
            rates.append(hits / requests)
        for loader, _ in loaders:
            loader.close()
        return float(np.mean(rates[1:]))  # epoch 0 starts cold

    scenarios = {"one rank": [(0, 1, 0)], "two ranks": [(0, 2, 0)],
                 "two jobs, epochs 50 and 0": [(0, 1, 50), (1, 1, 0)]}  # fmt: skip
    rates = {}
    with process_cluster(n_workers=2) as address, Client(address, timeout="30s") as client:
        for i, (name, jobs) in enumerate(scenarios.items()):
            distinct_lake(tmp_path / f"lake{i}", 96, cluster=client)
            rates[name] = hit_rate(client, tmp_path / f"lake{i}", jobs)
    alone = rates["one rank"]
    assert 0.15 < alone < 0.4, rates  # about the cached share: the chunks needed soonest
    assert rates["two ranks"] >= 0.8 * alone, rates
    assert rates["two jobs, epochs 50 and 0"] >= 0.8 * alone, rates


def test_churn_case_every_event_with_three_trainers_on_two_versions(tmp_path):
    """The soak's "cluster churn" case, each event once (benchmarks/soak.py runs more)."""
    from lakeio.testing.churn import EVENTS, run_churn_trials

    tally = run_churn_trials(tmp_path, trials=len(EVENTS), seed=1)
    assert tally.lost == 0, tally.notes
    assert tally.trials == tally.injected == tally.recovered == len(EVENTS)
    assert tally.detected >= 1  # at least "every worker replaced" moved tasks to new owners


def test_closing_the_client_mid_epoch_ends_the_epoch_at_once_with_an_error(tmp_path):
    """Closing the client cancels its tasks: that is not someone else's cancellation to retry,
    and the waiting chunks must learn of it now, not after lakeio.load-timeout."""
    import dask.config
    from distributed import Client

    with process_cluster(n_workers=2) as address:
        client = Client(address, timeout="30s")
        distinct_lake(tmp_path / "lake", cluster=client)
        ds = lakeio.open_dataset(tmp_path / "lake")
        chunk_bytes = ds.chunk_nbytes(("images", "labels"))
        loader = ds.loader(16, seed=1, cluster=client, prefetch_bytes=2 * chunk_bytes, threads=1)
        with dask.config.set({"lakeio.load-timeout": "120s"}), loader:
            batches = iter(loader)
            next(batches)
            started = time.monotonic()
            client.close()
            with pytest.raises(Exception) as caught:  # whichever Dask raises
                for _ in batches:
                    pass
    assert time.monotonic() - started < 30
    assert not isinstance(caught.value, TimeoutError), caught.value
