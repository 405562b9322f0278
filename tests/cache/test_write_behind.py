"""The disk tier is filled behind the reads: a read returns before its copy is stored, readers
in this process take the bytes from the hand-over, other processes of the node still fetch
each chunk once, and the copies land once the writer catches up."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
import threading
import time

import dask.config
import pytest

from lakeio.cache.disk import DiskTier
from lakeio.testing.tiers import fetch_through_a_slow_disk


def _held_writer(tier: DiskTier) -> threading.Event:
    """Make ``tier``'s writer wait for the returned event before each store (a disk that is
    slower than the reads, as filling new pages is on these machines)."""
    go = threading.Event()
    store = tier._behind._store

    def slow_store(key: str, value: bytes) -> None:
        go.wait(60)
        store(key, value)

    tier._behind._store = slow_store
    return go


def _other_process_get_or_fetch(directory: str, key: str) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        from lakeio.cache.disk import DiskTier
        import sys
        tier = DiskTier({directory!r}, 1 << 30)
        sys.stdin.readline()  # started before the hand-over: a fork waits for a store
        print("ready", flush=True)
        value, hit = tier.get_or_fetch({key!r}, lambda: b"fetched again")
        print(value.decode(), hit, flush=True)
    """)
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def test_a_read_does_not_wait_for_its_copy_and_the_node_still_fetches_once(tmp_path):
    tier = DiskTier(tmp_path / "disk", 1 << 30)
    other = _other_process_get_or_fetch(str(tmp_path / "disk"), "k")
    go = _held_writer(tier)
    fetches = []

    def fetch() -> bytes:
        fetches.append(1)
        return b"the chunk"

    done = threading.Event()
    got: list = []
    reader = threading.Thread(
        target=lambda: (got.append(tier.get_or_fetch("k", fetch)), done.set())
    )
    reader.start()
    assert done.wait(30), "the read waited for the disk"
    assert got == [(b"the chunk", False)]
    assert tier._cache.get("k") is None  # not stored yet: the writer is held
    # this process: served from the hand-over, no second fetch
    assert tier.get_or_fetch("k", fetch) == (b"the chunk", True) and len(fetches) == 1
    # another process of the node waits on the key's lock, then takes the stored copy
    other.stdin.write("go\n")
    other.stdin.flush()
    assert other.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    assert other.poll() is None  # waiting for the copy, not fetching its own
    go.set()
    out, _ = other.communicate(timeout=60)
    assert out.split() == ["the", "chunk", "True"]
    assert tier.flush(timeout=30)
    assert tier._cache.get("k") == b"the chunk"
    reader.join()


def test_past_its_limit_the_writer_is_not_waited_on_in_memory_but_on_disk(tmp_path):
    tier = DiskTier(tmp_path / "disk", 1 << 30)
    go = _held_writer(tier)
    with dask.config.set({"lakeio.cache.write-behind": "1kB"}):
        tier.get_or_fetch("a", lambda: b"x" * 800)  # handed over: the first always is
        tier.get_or_fetch("b", lambda: b"y" * 800)  # over 1 kB waiting: stored in line
        assert tier._behind.queued_bytes() == 800
        assert tier._cache.get("b") == b"y" * 800 and tier._cache.get("a") is None
    go.set()
    assert tier.flush(timeout=30)
    assert tier._cache.get("a") == b"x" * 800 and tier._behind.queued_bytes() == 0


def _within(seconds: float, call):
    """``call()``'s result, failing the test if it takes longer (a lock left held hangs)."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert out, f"still waiting after {seconds} s: a key's lock was left held"
    return out[0]


def test_a_fetch_that_fails_stores_nothing_and_releases_its_lock(tmp_path):
    tier = DiskTier(tmp_path / "disk", 1 << 30)

    def broken() -> bytes:
        raise OSError("the origin went away")

    with pytest.raises(OSError, match="went away"):
        tier.get_or_fetch("k", broken)
    assert _within(30, lambda: tier.get_or_fetch("k", lambda: b"back")) == (b"back", False)
    assert tier.flush(timeout=30) and tier._cache.get("k") == b"back"


def test_a_store_that_fails_loses_that_copy_only_and_the_writer_goes_on(tmp_path):
    tier = DiskTier(tmp_path / "disk", 1 << 30)
    store, calls = tier._behind._store, []

    def failing_once(key: str, value: bytes) -> None:
        calls.append(key)
        if len(calls) == 1:
            raise RuntimeError("a store that broke")  # (or a warning made an error)
        store(key, value)

    tier._behind._store = failing_once
    tier.get_or_fetch("a", lambda: b"first")
    assert tier.flush(timeout=30) and tier._behind.failures == 1
    assert tier._cache.get("a") is None  # that copy is lost, nothing else
    tier.get_or_fetch("b", lambda: b"second")
    assert tier.flush(timeout=30) and tier._cache.get("b") == b"second"
    again = _within(30, lambda: tier.get_or_fetch("a", lambda: b"first"))  # its lock was freed
    assert again == (b"first", False)


def test_a_bad_limit_setting_is_named_and_frees_the_lock(tmp_path):
    tier = DiskTier(tmp_path / "disk", 1 << 30)
    with (
        dask.config.set({"lakeio.cache.write-behind": "lots"}),
        pytest.raises(ValueError, match=r"lakeio\.cache\.write-behind"),
    ):
        tier.get_or_fetch("k", lambda: b"v")
    assert _within(30, lambda: tier.get_or_fetch("k", lambda: b"v")) == (b"v", False)


def test_a_forked_worker_stores_what_it_fetched_before_it_exits(tmp_path):
    """DataLoader workers are multiprocessing children that end with os._exit (no atexit):
    their hand-overs are stored by a finalizer of their own. (A forkserver child ends the same
    way, and is forked from a process without this one's threads, whose locks a child of this
    busy test process could inherit held.)"""
    keys = [f"k{i}" for i in range(5)]
    child = multiprocessing.get_context("forkserver").Process(
        target=fetch_through_a_slow_disk, args=(str(tmp_path / "disk"), keys)
    )
    child.start()
    child.join(120)
    assert child.exitcode == 0
    tier = DiskTier(tmp_path / "disk", 1 << 30)
    assert [tier._cache.get(k) for k in keys] == [k.encode() for k in keys]


def test_a_limit_of_zero_stores_every_chunk_in_line(tmp_path):
    tier = DiskTier(tmp_path / "disk", 1 << 30)
    _held_writer(tier)  # never released: a chunk handed over would never be stored
    with dask.config.set({"lakeio.cache.write-behind": 0}):
        tier.get_or_fetch("a", lambda: b"x" * 800)
    assert tier._cache.get("a") == b"x" * 800 and tier._behind.queued_bytes() == 0


def test_another_tier_on_the_same_folder_sees_what_is_on_its_way(tmp_path):
    """Two datasets opened on one cache folder in one process: the second is served what the
    first handed over, instead of fetching it again (or waiting for the disk)."""
    first = DiskTier(tmp_path / "disk", 1 << 30)
    go = _held_writer(first)
    first.get_or_fetch("k", lambda: b"the chunk")
    second = DiskTier(tmp_path / "disk", 1 << 30)
    assert _within(30, lambda: second.get_or_fetch("k", lambda: b"fetched again")) == (
        b"the chunk",
        True,
    )
    go.set()
    assert first.flush(timeout=30) and second._cache.get("k") == b"the chunk"
