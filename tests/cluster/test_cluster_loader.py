"""Loading through a Dask cluster: same batches as in process, exactly once, cached by owner."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from distributed import Client, LocalCluster

import lakeio
from lakeio.cluster.affinity import owner
from lakeio.testing.batches import assert_same, collect
from lakeio.testing.cluster import process_cluster
from lakeio.testing.lakes import distinct_lake


@pytest.mark.parametrize("decode", ["trainer", "worker"])
def test_cluster_loader_gives_the_in_process_batches_on_real_worker_processes(
    small_lake, client, decode
):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)
    expected = collect(ds.loader(24, seed=5))
    with ds.loader(24, seed=5, cluster=client, decode=decode) as loader:
        assert_same(collect(loader), expected)
        loader.set_epoch(1)
        ds_epoch1 = lakeio.open_dataset(path).loader(24, seed=5)
        ds_epoch1.set_epoch(1)
        assert_same(collect(loader), collect(ds_epoch1))
        stats = loader.stats()
    assert stats["cluster_tasks"] > 0
    assert set(stats["workers"]) == set(client.scheduler_info(n_workers=-1)["workers"])
    served = sum(w["chunks"] for w in stats["workers"].values())
    assert served >= 2 * len(ds.chunk_members())  # two epochs of chunks, served by the workers


def test_cluster_loader_resumes_from_a_state_dict(small_lake, client):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)
    full = collect(ds.loader(16, seed=2))
    with ds.loader(16, seed=2, cluster=client) as first:
        taken = []
        for images, labels in first:
            taken.append((images.numpy().copy(), labels.numpy().copy()))
            if len(taken) == 5:
                break
        state = first.state_dict()
    with lakeio.open_dataset(path).loader(16, seed=2, cluster=client) as second:
        second.load_state_dict(state)
        rest = collect(second)
    assert_same(taken + rest, full)


def test_two_clients_share_one_cluster_each_rank_exactly_once(small_lake, cluster_address):
    path, images, _ = small_lake
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def rank_main(rank: int) -> None:
        try:
            with (
                Client(cluster_address, timeout="30s") as own,
                lakeio.open_dataset(path).loader(
                    16, seed=9, rank=rank, world_size=2, drop_last=True, cluster=own
                ) as loader,
            ):
                results[rank] = collect(loader)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    ds = lakeio.open_dataset(path)
    for rank in (0, 1):
        expected = collect(ds.loader(16, seed=9, rank=rank, world_size=2, drop_last=True))
        assert_same(results[rank], expected)
    delivered = np.concatenate([im for r in (0, 1) for im, _ in results[r]])
    # drop_last: 203 samples -> 6 global batches of 32 = 192 samples, each once overall
    assert len(delivered) == 192
    flat = delivered.reshape(len(delivered), -1)
    assert len(np.unique(flat, axis=0)) == 192
    known = {row.tobytes() for row in images.reshape(len(images), -1)}
    assert all(row.tobytes() in known for row in flat)


def _tiny_lake(tmp_path, client, chunks: int = 64, chunk_samples: int = 8):
    path = tmp_path / "lake"
    images = distinct_lake(path, chunks, chunk_samples, cluster=client)
    return path, images


def _second_epoch_figures(ds, **options) -> dict[str, int]:
    """The workers' memory requests, hits and origin reads during epoch 2 alone, summed.

    Loading ahead is turned off so that none of epoch 2's loads land in epoch 1's interval."""
    loader = ds.loader(32, prefetch_next_epoch=False, **options)
    names = ("memory_requests", "memory_hits", "origin_reads")
    with loader:
        collect(loader)
        before = loader.stats()["workers"]
        loader.set_epoch(1)
        collect(loader)
        after = loader.stats()["workers"]
    return {n: sum(after[w][n] - before[w][n] for w in after) for n in names}


def test_affinity_makes_two_workers_memory_one_cache(tmp_path):
    """A lake larger than one worker's memory tier but not two: epoch 2 reads nothing."""
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        path, _ = _tiny_lake(tmp_path, client)
        ds0 = lakeio.open_dataset(path)
        total = len(ds0.chunk_members()) * ds0.chunk_nbytes(("images", "labels"))
        budget = int(0.75 * total)
        ds = lakeio.open_dataset(path, cache=lakeio.Cache(memory=budget))
        second = _second_epoch_figures(ds, seed=1, cluster=client, decode="worker")
        assert budget < total  # no single worker could hold the lake
        assert second["origin_reads"] == 0
        assert second["memory_requests"] > 0
        assert second["memory_hits"] == second["memory_requests"]


def test_owner_moves_only_the_chunks_of_a_leaving_worker():
    keys = [f"segments/s/images/c.{i}.0.0.0" for i in range(2000)]
    three = ["tcp://a:1", "tcp://b:1", "tcp://c:1"]
    before = {k: owner(k, three) for k in keys}
    after = {k: owner(k, three[:2]) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == "tcp://c:1" for k in moved)
    assert len(moved) == sum(1 for k in keys if before[k] == "tcp://c:1")
    shares = [sum(1 for v in before.values() if v == w) / len(keys) for w in three]
    assert all(0.28 < s < 0.39 for s in shares)  # spread about evenly


@pytest.mark.parametrize("decode", ["trainer", "worker"])
def test_killing_a_worker_mid_epoch_loses_and_duplicates_nothing(tmp_path, decode):
    with process_cluster(n_workers=2) as address, Client(address, timeout="30s") as client:
        path, images = _tiny_lake(tmp_path, client, chunks=48)
        ds = lakeio.open_dataset(path)
        expected = collect(ds.loader(16, seed=4, shuffle_window=4))
        pids = client.run(os.getpid)
        victim_address = sorted(pids)[0]
        chunk_bytes = ds.chunk_nbytes(("images", "labels"))
        loader = ds.loader(
            16, seed=4, shuffle_window=4, cluster=client, decode=decode,
            prefetch_bytes=2 * chunk_bytes, threads=1,
        )  # fmt: skip
        got = []
        with loader:
            for i, (im, lb) in enumerate(loader):
                got.append((im.numpy().copy(), lb.numpy().copy()))
                if i == 3:
                    os.kill(pids[victim_address], signal.SIGKILL)
                    time.sleep(0.5)  # the next loads meet the dead worker
            tasks = loader.stats()["cluster_tasks"]
        assert_same(got, expected)
        assert victim_address not in client.scheduler_info(n_workers=-1)["workers"]
        assert tasks == len(ds.chunk_members())  # one chunk per task, every one delivered
        flat = np.concatenate([im for im, _ in got]).reshape(-1, images[0].size)
        assert len(np.unique(flat, axis=0)) == len(images)


def test_cluster_by_address_and_local_cluster_owned_by_the_loader(small_lake, cluster_address):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)
    expected = collect(ds.loader(32, seed=8))
    with ds.loader(32, seed=8, cluster=cluster_address) as loader:
        assert_same(collect(loader), expected)
        client = loader.cluster.client
    assert client.status == "closed"  # a client the loader made is the loader's to close
    with ds.loader(32, seed=8, cluster="local") as loader:
        local = loader.cluster.client.cluster
        assert len(local.workers) >= 1
        assert_same(collect(loader), expected)
    assert local.status.name == "closed"


def test_bad_cluster_arguments_are_clear_errors(small_lake):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)
    with pytest.raises(TypeError, match="scheduler address or 'local'"):
        ds.loader(8, cluster=42)
    with pytest.raises(ValueError, match="decode must be one of trainer, worker"):
        ds.loader(8, cluster="local", decode="gpu")


def test_each_task_result_crosses_the_network_once(tmp_path, client):
    path, _ = _tiny_lake(tmp_path, client, chunks=40)
    ds = lakeio.open_dataset(path)

    def sent() -> int:
        return sum(
            client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values()
        )

    for decode in ("trainer", "worker"):
        before_sent = sent()
        loader = ds.loader(32, seed=1, cluster=client, decode=decode, prefetch_next_epoch=False)
        with loader:
            before = loader.stats()["workers"]
            assert sum(len(lb) for _, lb in loader) == len(ds)
            after = loader.stats()["workers"]
        served = sum(after[w]["bytes"] - before[w]["bytes"] for w in after)
        # one fetch per task straight from its worker: what left the workers is what they served
        # (plus framing), not a copy per chunk of the group
        assert served <= sent() - before_sent < 1.2 * served


def test_ownership_does_not_depend_on_the_fields_a_loader_reads(small_lake, client):
    from lakeio.cluster.loads import ClusterLoads, ClusterOptions, register_lake

    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)
    token = register_lake(client, ds)
    order = list(range(len(ds.chunk_members())))
    owners = []
    for fields in (("images", "labels"), ("labels", "images"), ("labels",)):
        loads = ClusterLoads(client, ds, token, fields, order, ClusterOptions(), budget=1 << 30)
        owners.append({c: loads._owner(c) for c in order})
        loads.close()
    assert owners[0] == owners[1] == owners[2]


def test_abandoning_an_epoch_stops_its_threads_and_the_next_one_is_complete(small_lake, client):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)
    expected = collect(ds.loader(16, seed=6))
    with ds.loader(16, seed=6, cluster=client) as loader:
        iterator = iter(loader)
        next(iterator)
        next(iterator)
        iterator.close()  # what `break` does to the generator
        deadline = time.monotonic() + 10
        while any(
            t.name.startswith(("lakeio-batcher", "lakeio-recv")) for t in threading.enumerate()
        ):
            assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
            time.sleep(0.05)
        assert_same(collect(loader), expected)


def test_a_corrupt_chunk_reaches_the_training_loop_as_a_clear_error(tmp_path, client):
    path, _ = _tiny_lake(tmp_path, client, chunks=12)
    ds = lakeio.open_dataset(path)
    ref = ds._chunk_table[0][5]
    key = ds.source.key(ref.segment, "images", ref.chunk)
    target = path / key
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    for decode in ("trainer", "worker"):
        fresh = lakeio.open_dataset(path)
        with (
            fresh.loader(8, seed=0, cluster=client, decode=decode) as loader,
            pytest.raises(lakeio.CorruptChunkError, match="checksum mismatch"),
        ):
            for _ in loader:
                pass


def test_a_failed_loader_call_leaves_no_connection_behind(small_lake, cluster_address, client):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)

    def clients() -> int:
        return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.clients))

    before = clients()
    for _ in range(3):
        with pytest.raises(ValueError, match="not in the lake"):
            ds.loader(8, fields=("nope",), cluster=cluster_address)
    deadline = time.monotonic() + 10
    while clients() != before:
        assert time.monotonic() < deadline, (before, clients())
        time.sleep(0.05)


def test_a_cluster_loader_refuses_to_run_inside_dataloader_workers(small_lake, client):
    path, _, _ = small_lake
    with (
        lakeio.open_dataset(path).loader(8, cluster=client) as loader,
        pytest.raises(ValueError, match="cannot work"),
    ):
        loader.as_iterable_dataset()


def test_workers_evict_by_the_plan_when_the_cluster_cannot_hold_the_lake(tmp_path):
    """Each worker caches half of what it owns; the order repeats. LRU keeps nothing useful,
    the plan-aware tier keeps the chunks needed soonest (the trainer tells it when)."""
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        path, _ = _tiny_lake(tmp_path, client)
        probe = lakeio.open_dataset(path)
        total = len(probe.chunk_members()) * probe.chunk_nbytes(("images", "labels"))
        hits = {}
        for policy in ("lru", "plan"):
            cache = lakeio.Cache(memory=total // 4, eviction=policy)
            ds = lakeio.open_dataset(path, cache=cache)
            second = _second_epoch_figures(ds, shuffle=False, cluster=client, decode="worker")
            hits[policy] = second["memory_hits"] / second["memory_requests"]
        assert hits["lru"] == 0.0  # a cyclic order larger than the cache: LRU always misses
        assert hits["plan"] >= 0.3  # about the cached share: what is needed soonest stays


def test_the_next_epoch_loads_ahead_and_its_batches_are_still_the_plan(small_lake, client):
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path)
    with ds.loader(16, seed=3, cluster=client) as loader:
        before = loader.stats()["workers"]
        first = collect(loader)
        deadline = time.monotonic() + 10
        while True:  # epoch 1's first chunks are loaded before anyone asks for them
            now = loader.stats()["workers"]
            served = sum(now[w]["chunks"] - before.get(w, {"chunks": 0})["chunks"] for w in now)
            if served > len(ds.chunk_members()):  # more than epoch 0 needed
                break
            assert time.monotonic() < deadline, "nothing was loaded ahead"
            time.sleep(0.05)
        loader.set_epoch(1)
        second = collect(loader)
        loader.set_epoch(5)  # not the epoch loaded ahead: that work is dropped, not used
        sixth = collect(loader)
    for epoch, got in ((0, first), (1, second), (5, sixth)):
        fresh = lakeio.open_dataset(path).loader(16, seed=3)
        fresh.set_epoch(epoch)
        assert_same(got, collect(fresh))
