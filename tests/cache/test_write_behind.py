"""The disk tier is filled behind the reads: a read returns before its copy is stored, readers
in this process take the bytes from the hand-over, other processes of the node still fetch
each chunk once, and the copies land once the writer catches up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import dask.config
import pytest

from lakeio.cache.disk import DiskTier


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
        tier = DiskTier({directory!r}, 1 << 30)
        print("ready", flush=True)
        value, hit = tier.get_or_fetch({key!r}, lambda: b"fetched again")
        print(value.decode(), hit, flush=True)
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_a_read_does_not_wait_for_its_copy_and_the_node_still_fetches_once(tmp_path):
    tier = DiskTier(tmp_path / "disk", 1 << 30)
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
    other = _other_process_get_or_fetch(str(tmp_path / "disk"), "k")
    assert other.stdout.readline().strip() == "ready"
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


def test_a_fetch_that_fails_stores_nothing_and_releases_its_lock(tmp_path):
    tier = DiskTier(tmp_path / "disk", 1 << 30)

    def broken() -> bytes:
        raise OSError("the origin went away")

    for _ in range(2):  # a lock left held would hang the second attempt
        with pytest.raises(OSError, match="went away"):
            tier.get_or_fetch("k", broken)
    assert tier.get_or_fetch("k", lambda: b"back") == (b"back", False)
    assert tier.flush(timeout=30) and tier._cache.get("k") == b"back"
