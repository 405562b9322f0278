"""Ingest into a bucket behind the fault proxy: every committed segment complete and verified,
a failed run resumes, and concurrent appends through the faults lose nothing."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import dask.config
import numpy as np
import pytest

import lakeio
from lakeio.format.location import Location
from lakeio.format.manifest import read_manifest
from lakeio.testing.s3proxy import FaultProxy, ProxyFaults
from lakeio.verify import verify_lake

# 503 on every 4th request, a dropped connection on every 9th, and every 7th reaches the store
# but its answer is lost: the PUT landed (a conditional one too) and the writer cannot know
WRITE_FAULTS = ProxyFaults(slowdown_every=4, reset_every=9, lose_reply_every=7, on_writes=True)


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = np.arange(n) % 256, seed  # distinct, by origin
    return images, rng.integers(0, 3, n)


def _ingest(images, labels, url, options, **kwargs):
    return lakeio.ingest(images, url, labels=labels, storage_options=options, chunk_samples=8,
                         codec="lz4", progress=False, echo=None,
                         **kwargs)  # fmt: skip


def _through(proxy: FaultProxy, s3_options: dict) -> dict:
    return {**s3_options, "endpoint_url": proxy.endpoint}


def _all_samples(url: str, options: dict) -> dict[bytes, int]:
    ds = lakeio.open_dataset(url, storage_options=options)
    return {ds[i][0].tobytes(): int(ds[i][1]) for i in range(len(ds))}


def test_ingest_into_a_bucket_under_write_faults_commits_a_complete_verified_lake(s3_options):
    url = "s3://lakeio-test/writes/faulty.lake"
    images, labels = _images(96, seed=1)
    with FaultProxy(s3_options["endpoint_url"], WRITE_FAULTS) as proxy:
        summary = _ingest(images, labels, url, _through(proxy, s3_options))
        counts = proxy.counts
    assert summary.written == 96
    assert counts["slowdown"] >= 5 and counts["reset"] >= 2 and counts["reply_lost"] >= 2
    ds = lakeio.open_dataset(url, storage_options=s3_options)  # straight to the store
    report = verify_lake(ds)
    assert report.ok and report.chunks_checked > 0
    expected = {img.tobytes(): int(lab) for img, lab in zip(images, labels, strict=True)}
    assert _all_samples(url, s3_options) == expected
    assert read_manifest(Location.of(url, s3_options)).version == 1


def test_an_exclusive_create_whose_answer_was_lost_is_still_the_writers_own(s3_options):
    """The retried conditional PUT meets the object its first attempt created: that must count
    as success (else a commit that landed reads as a conflict), a rival's must not."""
    loc_options = {"lose_reply_rate": 0.5, "on_writes": True, "seed": 11}
    with FaultProxy(s3_options["endpoint_url"], ProxyFaults(**loc_options)) as proxy:
        loc = Location.of("s3://lakeio-test/writes/exclusive", _through(proxy, s3_options))
        for i in range(8):
            loc.create_exclusive(f"k{i}", b"mine %d" % i)
            with pytest.raises(FileExistsError):
                loc.create_exclusive(f"k{i}", b"theirs %d" % i)
        counts = proxy.counts
    assert counts["reply_lost"] >= 4
    direct = Location.of("s3://lakeio-test/writes/exclusive", s3_options)
    assert [direct.read_bytes(f"k{i}") for i in range(8)] == [b"mine %d" % i for i in range(8)]


def test_an_ingest_stopped_by_the_store_resumes_without_rewriting_what_it_wrote(s3_options):
    url = "s3://lakeio-test/writes/resumed.lake"
    images, labels = _images(128, seed=2)
    denied = ProxyFaults(deny=("lakeio-test/writes/resumed.lake/segments/s000005-*",))
    with FaultProxy(s3_options["endpoint_url"], denied) as proxy:
        options = _through(proxy, s3_options)
        with pytest.raises(PermissionError, match="s000005-"):
            _ingest(images, labels, url, options)
        assert not Location.of(url, s3_options).list("_lakeio/manifests")  # nothing committed
        proxy.set_faults(deny=())
        proxy.reset_counts()
        summary = _ingest(images, labels, url, options)
        resumed = proxy.counts
        proxy.reset_counts()
        _ingest(images, labels, url + "-fresh", options)
        fresh = proxy.counts
    assert summary.written == 128
    # the rerun wrote the denied segment and what was not reached, not the whole lake again
    assert resumed["PUT"] < fresh["PUT"]
    assert verify_lake(lakeio.open_dataset(url, storage_options=s3_options)).ok
    expected = {img.tobytes(): int(lab) for img, lab in zip(images, labels, strict=True)}
    assert _all_samples(url, s3_options) == expected


def test_concurrent_appends_through_faults_lose_no_segment(s3_options):
    url = "s3://lakeio-test/writes/appended.lake"
    base = _images(32, seed=3)
    _ingest(*base, url, s3_options)
    batches = [_images(24, seed=4 + k) for k in range(3)]
    faults = ProxyFaults(latency=0.02, jitter=0.02, slowdown_every=5, lose_reply_every=11,
                         on_writes=True)  # fmt: skip
    errors: list[BaseException] = []
    with FaultProxy(s3_options["endpoint_url"], faults) as proxy:
        options = _through(proxy, s3_options)

        def append(images, labels) -> None:
            try:
                _ingest(images, labels, url, options, mode="append")
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=append, args=b) for b in batches]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        counts = proxy.counts
    assert not errors, errors
    assert counts["slowdown"] > 0
    manifest = read_manifest(Location.of(url, s3_options))
    assert manifest.version == 4  # the base, then each append exactly once
    assert sum(1 for e in manifest.history if e.get("mode") == "append") == 3
    expected = {}
    for images, labels in (base, *batches):
        expected |= {img.tobytes(): int(lab) for img, lab in zip(images, labels, strict=True)}
    assert _all_samples(url, s3_options) == expected
    assert verify_lake(lakeio.open_dataset(url, storage_options=s3_options)).ok


def test_two_writers_committing_equal_manifests_at_once_do_not_both_win(s3_options, monkeypatch):
    """Two identical appends in the same second (every DDP rank running the same ingest) make
    byte-equal manifests but for each commit's own mark: the read-back after a lost answer
    must not take the rival's version for its own."""
    import lakeio.format.manifest as manifest_module
    from lakeio.errors import CommitConflictError
    from lakeio.format.manifest import commit_manifest

    url = "s3://lakeio-test/writes/twins.lake"
    _ingest(*_images(16, seed=9), url, s3_options)
    loc = Location.of(url, s3_options)
    base = read_manifest(loc)
    same = base.with_segments(base.segments, {"op": "same"})
    # both listed the lake before either committed, and both commit in the same second
    monkeypatch.setattr(manifest_module, "manifest_versions", lambda _loc: [1])
    now = datetime.now(timezone.utc)
    monkeypatch.setattr(manifest_module, "datetime", type("Frozen", (), {"now": lambda tz: now}))
    # every answer to a write lost (reads answered: the read-back is what decides)
    faults = ProxyFaults(lose_reply_every=1, on_writes=True, on_reads=False)
    with FaultProxy(s3_options["endpoint_url"], faults) as proxy:
        through = Location.of(url, _through(proxy, s3_options))
        with dask.config.set({"lakeio.write.deadline": 3}):
            first = commit_manifest(through, same)
            with pytest.raises(CommitConflictError):
                commit_manifest(through, same)
    assert read_manifest(loc, 2).history[-1]["commit"] == first.history[-1]["commit"]
