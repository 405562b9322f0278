import os

import numpy as np
import pytest

from lakeio.cache.disk import DiskTier
from lakeio.cache.memory import MemoryTier
from lakeio.errors import LakeError
from lakeio.testing.tiers import TierTests


class TestMemoryTier(TierTests):
    def make_tier(self, capacity, tmp_path):
        return MemoryTier(capacity)

    def value(self, n_bytes, seed=0):
        return np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8)


class TestDiskTier(TierTests):
    unit = 64 * 1024  # its SQLite index counts against the limit too

    def make_tier(self, capacity, tmp_path):
        return DiskTier(tmp_path / "disk", capacity)

    def value(self, n_bytes, seed=0):
        return np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()


def test_memory_tier_values_are_read_only_so_readers_cannot_corrupt_the_cache():
    tier = MemoryTier(1000)
    tier.put("a", np.zeros(10, np.uint8))
    with pytest.raises(ValueError):
        tier.get("a")[0] = 1


def test_disk_tier_refuses_a_folder_others_can_write(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(LakeError, match="writable by other users"):
        DiskTier(shared, 1 << 20)


def test_disk_tier_stores_bytes_only(tmp_path):
    with pytest.raises(TypeError, match="bytes only"):
        DiskTier(tmp_path / "d", 1 << 20).put("k", {"not": "bytes"})


def test_disk_tier_fetches_once_and_checks_before_storing(tmp_path):
    tier = DiskTier(tmp_path / "d", 1 << 24)
    calls = []
    value, hit = tier.get_or_fetch("k", lambda: calls.append(1) or b"x" * 100_000)
    assert (hit, len(value), calls) == (False, 100_000, [1])
    again, hit = tier.get_or_fetch("k", lambda: calls.append(1) or b"y")
    assert hit and again == value and calls == [1]

    def reject(data):
        raise ValueError("corrupt")

    with pytest.raises(ValueError, match="corrupt"):
        tier.get_or_fetch("bad", lambda: b"z" * 100, check=reject)
    assert tier.get("bad") is None  # a bad origin read never enters the cache


def test_disk_tier_never_unpickles(tmp_path):
    import diskcache

    DiskTier(tmp_path / "d", 1 << 24).close()
    with diskcache.Cache(tmp_path / "d") as raw:  # someone else writes a pickle into the index
        raw.set("evil", {"a": 1})
    tier = DiskTier(tmp_path / "d", 1 << 24)
    assert tier.get("evil") is None  # a miss: never unpickled, and dropped
    assert tier.stats().refused == 1 and tier.stats().evictions == 1
    assert tier.get("evil") is None and tier.stats().refused == 1  # gone, not refused again


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a folder to another user")
def test_disk_tier_refuses_a_folder_owned_by_someone_else(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(LakeError, match="belongs to user id 65534"):
        DiskTier(theirs, 1 << 20)


@pytest.mark.timeout(60)
def test_a_process_killed_while_fetching_does_not_hold_up_the_others(tmp_path):
    """The per-key fetch lock is the kernel's: a rank that dies mid-fetch releases it at once
    (a lock row in SQLite would have stayed until it expired)."""
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "tier"
    DiskTier(folder, 1 << 20)  # create the private folder
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from lakeio.cache.disk import DiskTier\n"
            f"tier = DiskTier({str(folder)!r}, 1 << 20)\n"
            "def slow_fetch():\n"
            "    print('fetching', flush=True)\n"
            "    time.sleep(120)\n"
            "tier.get_or_fetch('chunk-7', slow_fetch)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "fetching"  # it holds the key's lock
        tier = DiskTier(folder, 1 << 20)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        started = time.monotonic()
        value, hit = tier.get_or_fetch("chunk-7", lambda: b"fetched")
        assert (value, hit) == (b"fetched", False)
        assert time.monotonic() - started < 5
    finally:
        if holder.poll() is None:
            holder.kill()


def _same_stripe(key: str, prefix: str) -> str:
    """Another key whose fetch lock is the same lock file as ``key``'s."""
    from lakeio.cache.key_locks import lock_stripe

    return next(
        f"{prefix}{i}" for i in range(100_000) if lock_stripe(f"{prefix}{i}") == lock_stripe(key)
    )


@pytest.mark.timeout(60)
def test_a_fork_during_a_fetch_leaves_no_lock_behind(tmp_path):
    """A process forked while a load thread holds a fetch lock (a DataLoader worker, say) must
    neither keep that lock held for the parent nor block on it itself."""
    import threading
    import time

    tier = DiskTier(tmp_path / "tier", 1 << 20)
    inside = threading.Event()

    def slow_fetch() -> bytes:
        inside.set()
        time.sleep(1.0)
        return b"A"

    fetching = threading.Thread(target=tier.get_or_fetch, args=("chunk-1", slow_fetch))
    fetching.start()
    inside.wait()
    child_key, parent_key = _same_stripe("chunk-1", "c"), _same_stripe("chunk-1", "p")
    pid = os.fork()
    if pid == 0:  # the child: the same lock file, after the parent's fetch is over
        ok = False
        try:
            time.sleep(1.5)
            done = threading.Event()
            threading.Thread(
                target=lambda: (tier.get_or_fetch(child_key, lambda: b"B"), done.set()),
                daemon=True,
            ).start()
            ok = done.wait(5)
        finally:
            os._exit(0 if ok else 1)
    fetching.join()
    done = threading.Event()
    threading.Thread(
        target=lambda: (tier.get_or_fetch(parent_key, lambda: b"C"), done.set()), daemon=True
    ).start()
    assert done.wait(3), "the parent waited on a lock the child inherited"
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, "the child blocked on the inherited lock"


def test_a_disk_tier_folder_that_cannot_exist_is_an_error_not_a_silent_warning(tmp_path):
    from lakeio.errors import LakeError

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(LakeError, match=r"disk cache folder .*file/cache: cannot open it"):
        DiskTier(tmp_path / "file" / "cache", 1 << 20)


def test_memory_set_aside_for_a_loader_comes_out_of_the_tier_and_back():
    """`reserve`: the tier keeps at most its capacity less what loaders hold outside it."""
    tier = MemoryTier(1000, policy="lru")
    for key in "abcd":
        assert tier.put(key, np.zeros(200, np.uint8))
    assert tier.reserve(500) == 400  # 800 held, 500 of 1000 now set aside: two chunks go
    assert tier.stats().bytes_held == 400 and tier.get("a") is None and tier.get("d") is not None
    assert not tier.put("big", np.zeros(600, np.uint8))  # more than the room left
    assert tier.put("e", np.zeros(200, np.uint8)) and tier.stats().bytes_held == 400  # c went
    tier.release(500)
    assert tier.put("f", np.zeros(600, np.uint8)) and tier.stats().bytes_held == 1000
    tier.release(10**9)  # (more than was set aside: nothing below zero)
    assert tier.reserve(0) == 0 and tier.stats().bytes_held == 1000


def test_disk_tier_keeps_each_large_value_as_one_private_file_with_its_exact_bytes(tmp_path):
    """The tier writes large values itself, whole (diskcache wrote them line by line), in 16
    folders: reopened, the tier serves every one, and each file holds exactly its value."""
    rng = np.random.default_rng(7)
    values = {
        f"k{i}": rng.integers(0, 256, 40_000 + 997 * i, np.uint8).tobytes() for i in range(48)
    }
    values["newlines"] = b"\n" * 50_000  # 50,000 "lines" to diskcache's writer
    tier = DiskTier(tmp_path / "disk", 1 << 30)
    for key, value in values.items():
        assert tier.put(key, value)
    tier.close()
    files = sorted((tmp_path / "disk").glob("*/*.val"))
    assert len(files) == len(values)
    assert {f.parent.name for f in files} <= set("0123456789abcdef")
    assert sorted(f.read_bytes() for f in files) == sorted(values.values())
    assert {os.stat(f).st_mode & 0o777 for f in files} == {0o600}
    reopened = DiskTier(tmp_path / "disk", 1 << 30)
    assert all(reopened.get(key) == value for key, value in values.items())
    reopened.evict("newlines")
    assert len(list((tmp_path / "disk").glob("*/*.val"))) == len(values) - 1
    reopened.close()


def test_entries_charged_nothing_stay_and_never_push_out_the_others():
    """The node-shared tier's mappings are kept at no charge: the capacity is for this
    process's own chunks, which evict each other as before."""
    from lakeio.cache.memory import MemoryTier

    tier = MemoryTier(100, "lru")
    for k in range(5):
        assert tier.put(f"view/{k}", np.zeros(60, np.uint8), charge=0)
    assert tier.put("own/0", np.zeros(60, np.uint8)) and tier.put("own/1", np.zeros(30, np.uint8))
    assert tier.put("own/2", np.zeros(50, np.uint8))  # own/0 goes, the views stay
    stats = tier.stats()
    assert stats.bytes_held == 80 and stats.items == 7 and stats.evictions == 1
    assert "own/0" not in tier and all(f"view/{k}" in tier for k in range(5))
    tier.evict("view/3")
    assert tier.stats().bytes_held == 80 and "view/3" not in tier
    assert tier.put("own/1", np.zeros(10, np.uint8))  # replaced: its old charge comes off
    assert tier.stats().bytes_held == 60
