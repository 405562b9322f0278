"""A lake in a bucket behind the fault proxy: transient faults are survived with the exact
batches, permanent ones end the epoch at once with one error naming the chunk and the lake."""

from __future__ import annotations

import time

import dask.config
import numpy as np
import pytest

import lakeio
from lakeio.errors import ChunkUnavailableError
from lakeio.testing.batches import assert_same, collect
from lakeio.testing.lakes import distinct_lake
from lakeio.testing.s3proxy import FaultProxy, ProxyFaults

URL = "s3://lakeio-test/faults/lake"


@pytest.fixture(scope="module")
def bucket_lake(s3_options):
    """48 chunks of 8 small distinct images in moto's bucket; the in-process reference batches."""
    distinct_lake(URL, seed=3, storage_options=s3_options)
    reference = collect(lakeio.open_dataset(URL, storage_options=s3_options).loader(32, seed=5))
    return reference


def _through(proxy: FaultProxy, s3_options: dict) -> dict:
    return {**s3_options, "endpoint_url": proxy.endpoint}


def test_an_epoch_under_503s_and_resets_delivers_the_same_batches(bucket_lake, s3_options):
    faults = ProxyFaults(slowdown_every=4, reset_every=9, truncate_every=13)
    with FaultProxy(s3_options["endpoint_url"], faults) as proxy:
        ds = lakeio.open_dataset(URL, storage_options=_through(proxy, s3_options))
        with ds.loader(32, seed=5) as loader:  # closed before the proxy: no reads left behind
            got = collect(loader)
        counts = proxy.counts
    assert_same(got, bucket_lake)
    assert counts["slowdown"] >= 10 and counts["reset"] >= 5 and counts["truncated"] >= 3


@pytest.mark.parametrize("fault", ["deny", "missing"])
def test_a_denied_or_missing_chunk_ends_the_epoch_at_once_naming_chunk_and_lake(
    bucket_lake, s3_options, fault
):
    pattern = "lakeio-test/faults/lake/segments/s000005-*/images/c.1.*"
    with FaultProxy(s3_options["endpoint_url"], ProxyFaults(**{fault: (pattern,)})) as proxy:
        ds = lakeio.open_dataset(URL, storage_options=_through(proxy, s3_options))
        started = time.monotonic()
        with pytest.raises(ChunkUnavailableError) as caught:  # (no next epoch read ahead)
            collect(ds.loader(32, seed=5, prefetch_next_epoch=False))
        elapsed = time.monotonic() - started
        counts = proxy.counts
    error = caught.value
    assert elapsed < 10
    assert error.key.startswith("segments/s000005-") and "/images/c." in error.key
    assert error.lake == URL
    assert URL in str(error) and error.key in str(error)
    assert ("access denied" if fault == "deny" else "missing from the store") in str(error)
    assert counts["denied" if fault == "deny" else "missing"] == 1  # asked once: never retried


def test_on_the_cluster_a_denied_chunk_reaches_the_trainer_naming_chunk_and_lake(
    bucket_lake, s3_options, client
):
    pattern = "lakeio-test/faults/lake/segments/s000007-*/labels/*"
    with FaultProxy(s3_options["endpoint_url"], ProxyFaults(deny=(pattern,))) as proxy:
        ds = lakeio.open_dataset(URL, storage_options=_through(proxy, s3_options))
        started = time.monotonic()
        with (
            pytest.raises(ChunkUnavailableError, match=r"/labels/c\.\d+ of lake s3://") as caught,
            ds.loader(32, seed=5, cluster=client) as loader,
        ):
            collect(loader)
    assert time.monotonic() - started < 10
    assert caught.value.lake == URL and "access denied" in caught.value.reason


def test_a_chunks_fields_are_fetched_at_once_from_a_bucket(bucket_lake, s3_options):
    """Each field is its own object: one after the other, a labels chunk of a few bytes would
    cost a full round trip after its images chunk."""
    # a second per request: on a busy 2-core machine two concurrent requests may set off a few
    # hundred ms apart, and must still be seen in flight together
    with FaultProxy(s3_options["endpoint_url"], ProxyFaults(latency=1.0)) as proxy:
        ds = lakeio.open_dataset(
            URL, storage_options=_through(proxy, s3_options), cache=lakeio.Cache(memory=0)
        )
        proxy.reset_counts()
        chunk = ds.load_chunk(3, ("images", "labels"))
        counts = proxy.counts
    assert counts["requests"] == 2 and counts["peak_in_flight"] == 2
    reference = lakeio.open_dataset(URL, storage_options=s3_options).load_chunk(
        3, ("images", "labels")
    )
    for field in ("images", "labels"):
        np.testing.assert_array_equal(chunk[field], reference[field])


def test_a_bucket_lake_keeps_as_many_reads_in_flight_as_the_prefetch_budget_allows(
    bucket_lake, s3_options, tmp_path
):
    """Little's law: at 100 ms a request, 4 threads would cap the rate at 40 chunks/s whatever
    the bandwidth. A remote lake gets a thread per chunk of the budget (at most 32)."""
    with FaultProxy(s3_options["endpoint_url"], ProxyFaults(latency=0.1)) as proxy:
        ds = lakeio.open_dataset(
            URL, storage_options=_through(proxy, s3_options), cache=lakeio.Cache(memory=0)
        )
        chunk_bytes = ds.chunk_nbytes(("images", "labels"))
        with ds.loader(32, seed=5, prefetch_bytes=16 * chunk_bytes) as loader:
            assert_same(collect(loader), bucket_lake)
            stats, counts = loader.stats(), proxy.counts
    assert stats["load_threads"] == 16
    assert counts["peak_in_flight"] >= 16  # 16 chunks at once, each with its two fields
    assert 0.1 <= stats["cache"]["origin_read_s"] < 5
    local = tmp_path / "copy"
    lakeio.ingest(np.zeros((64, 8, 8, 3), np.uint8), local, labels=np.zeros(64, int),
                  progress=False, echo=None)  # fmt: skip
    assert lakeio.open_dataset(local).loader(16).stats()["load_threads"] == 4


@pytest.mark.parametrize("botocore_checks", [True, False], ids=["botocore-checks", "lakeio-checks"])
def test_a_body_changed_on_the_way_is_read_again(bucket_lake, s3_options, botocore_checks):
    """botocore checks a GET against the checksum S3 keeps (by default); where it does not,
    the chunk's own crc32c catches the changed byte. Either way the chunk is read again, and
    the epoch is exact."""
    options = dict(s3_options)
    if not botocore_checks:
        options["config_kwargs"] = {"response_checksum_validation": "when_required"}
    with FaultProxy(s3_options["endpoint_url"], ProxyFaults(corrupt_every=5)) as proxy:
        ds = lakeio.open_dataset(URL, storage_options=_through(proxy, options))
        # (no next epoch read ahead: every corrupted body is then one this epoch read again)
        with ds.loader(32, seed=5, prefetch_next_epoch=False) as loader:
            got = collect(loader)
            reread = loader.stats()["cache"]["corrupt_reread"]
        counts = proxy.counts
    assert_same(got, bucket_lake)
    assert counts["corrupted"] >= 15
    assert reread == (0 if botocore_checks else counts["corrupted"])


def _epoch_with_one_odd_worker(s3_options, monkeypatch, faults, odd_env, options_without):
    """An epoch on a cluster of two workers, one of which ("odd") runs with ``odd_env`` on
    top of the environment the others have (the store's address and credentials, which the
    storage options then leave out: ``options_without``); what it raised, and the odd worker's
    name and address as errors give them."""
    from distributed import Client

    from lakeio.testing.cluster import extra_worker, process_cluster

    with FaultProxy(s3_options["endpoint_url"], faults) as proxy:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_options["key"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_options["secret"])
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        options = {k: v for k, v in _through(proxy, s3_options).items() if k not in options_without}
        with (
            process_cluster(n_workers=1) as address,
            extra_worker(address, "odd", env=odd_env),
            Client(address) as client,
        ):
            client.wait_for_workers(2, timeout=60)
            odd = next(
                a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "odd"
            )
            ds = lakeio.open_dataset(URL, storage_options=options)
            started = time.monotonic()
            with (
                pytest.raises(lakeio.LakeError) as caught,
                ds.loader(32, seed=5, cluster=client, prefetch_next_epoch=False) as loader,
            ):
                collect(loader)
            elapsed = time.monotonic() - started
    return caught.value, f"odd ({odd})", elapsed


def test_on_the_cluster_a_worker_the_store_refuses_is_named(bucket_lake, s3_options, monkeypatch):
    """One worker runs with other credentials (its own environment), which the store refuses:
    the error names that worker, the chunk and the lake."""
    error, odd, elapsed = _epoch_with_one_odd_worker(
        s3_options, monkeypatch, ProxyFaults(deny_access_keys=("stale-key",)),
        {"AWS_ACCESS_KEY_ID": "stale-key"}, options_without=("key", "secret"),
    )  # fmt: skip
    assert isinstance(error, ChunkUnavailableError) and elapsed < 10
    assert error.worker == odd
    assert error.lake == URL and error.key.startswith("segments/")
    assert f"read by worker {odd}" in str(error)
    assert "access denied" in error.reason


def test_on_the_cluster_a_worker_that_cannot_reach_the_store_is_named(
    bucket_lake, s3_options, monkeypatch
):
    """One worker's network does not reach the store (its endpoint is a closed port): once
    its read deadline (2 s there) passes, the epoch ends with one error naming that worker."""
    error, odd, elapsed = _epoch_with_one_odd_worker(
        s3_options, monkeypatch, ProxyFaults(),
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "DASK_LAKEIO__READ__DEADLINE": "2"},
        options_without=("endpoint_url",),
    )  # fmt: skip
    assert isinstance(error, lakeio.ReadError) and elapsed < 30
    assert f"worker {odd} could not read the lake" in str(error)
    assert "127.0.0.1:1" in str(error)


def test_a_chunk_damaged_in_the_store_fails_at_once_after_one_read_again(s3_options):
    url = "s3://lakeio-test/faults/damaged"
    distinct_lake(url, chunks=2, seed=4, storage_options=s3_options)
    ds = lakeio.open_dataset(url, storage_options=s3_options, cache=lakeio.Cache(memory=0))
    key = ds.source.key(0, "images", 0)
    stored = bytearray(ds.loc.read_bytes(key))
    stored[len(stored) // 2] ^= 0x01
    ds.loc.write(key, bytes(stored))
    started = time.monotonic()
    with pytest.raises(lakeio.CorruptChunkError, match="checksum mismatch") as caught:
        ds.load_chunk(0, ("images",))
    assert time.monotonic() - started < 10
    assert caught.value.key == key and caught.value.lake == url
    assert ds.stats()["corrupt_reread"] == 1  # the same bytes twice: the store's own copy


def test_a_cold_epoch_from_a_bucket_fills_the_disk_tier_behind_it(
    bucket_lake, s3_options, tmp_path
):
    cache = lakeio.Cache(memory=0, disk=str(tmp_path / "disk"), disk_size="1GB")
    with FaultProxy(s3_options["endpoint_url"], ProxyFaults(latency=0.05)) as proxy:
        options = _through(proxy, s3_options)
        ds = lakeio.open_dataset(URL, storage_options=options, cache=cache)
        with ds.loader(32, seed=5) as loader:
            assert_same(collect(loader), bucket_lake)
        assert ds.source.disk.flush(timeout=60)
        chunks = len(ds._chunk_table[0])
        proxy.reset_counts()
        again = lakeio.open_dataset(URL, storage_options=options, cache=cache)
        with again.loader(32, seed=5, prefetch_next_epoch=False) as loader:
            assert_same(collect(loader), bucket_lake)
        counts = proxy.counts
    assert chunks == 48
    assert counts["GET"] <= 3  # the manifest, its listing and its fragment; no chunk: all on disk
    disk = again.stats()["disk"]
    assert disk["hits"] == disk["requests"] == 2 * chunks  # images and labels of each


def _paced_epoch(ds, budget_chunks: int) -> dict:
    """An epoch whose loop works 50 ms a batch; the loader's read figures after it."""
    chunk = ds.chunk_nbytes(("images", "labels"))
    with ds.loader(32, seed=5, prefetch_bytes=budget_chunks * chunk,
                   prefetch_next_epoch=False) as loader:  # fmt: skip
        for _ in loader:
            time.sleep(0.05)
        return loader.stats()["reads"]


def test_the_loader_says_when_too_few_reads_are_in_flight_for_the_latency(bucket_lake, s3_options):
    """Little's law: a loop taking 4 chunks per 50 ms batch from a store 200 ms away needs
    about 16 reads in flight. A budget of 2 chunks gives 4 threads: the loader's figures say
    so, and what to pass; a budget of 64 chunks (and as many threads) is enough."""
    with FaultProxy(s3_options["endpoint_url"], ProxyFaults(latency=0.2)) as proxy:
        options = _through(proxy, s3_options)

        def fresh():
            return lakeio.open_dataset(URL, storage_options=options, cache=lakeio.Cache(memory=0))

        small = _paced_epoch(fresh(), 2)
        with dask.config.set({"lakeio.read.max-in-flight": 64}):
            big = _paced_epoch(fresh(), 64)
    assert small["cap_limits"] and small["in_flight_cap"] == small["threads"] == 4
    assert small["threads_set_by"] == "budget"
    assert 0.2 <= small["latency_s"] < 2 and small["origin_share"] == 1.0
    assert small["in_flight_needed"] > 4
    assert small["peak_in_flight"] <= 4 * 2  # 4 threads, a chunk's two fields at once
    assert "Little's law" in small["advice"] and "prefetch_bytes=" in small["advice"]
    assert not big["cap_limits"] and big["in_flight_cap"] == 64 and big["advice"] is None
    # (how many Little's law asks for grows with the latency, which 64 reads at once on this
    # 2-core machine inflate: 65-87 in loaded runs. The cap covers the epoch's 48 chunks, so
    # no setting would help and none is advised.)
    assert big["in_flight_needed"] > 4 and big["epoch_chunks"] == 48 <= big["in_flight_cap"]
    assert big["peak_in_flight"] > 4 * 2
