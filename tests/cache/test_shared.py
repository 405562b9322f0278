"""The node-shared tier: one decoded copy per node, safe when a process dies (issue 14).

Processes here are real ones (``python -c``), meeting in a folder under /dev/shm as a node's
ranks do."""

from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lakeio
from lakeio.cache.shared import HEADER_BYTES, SharedTier
from lakeio.format.index import SampleIndex

MB = 1 << 20
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None


@pytest.fixture
def folder(tmp_path):
    """A fresh folder in shared memory (removed after, whatever the test left)."""
    import shutil
    import tempfile

    base = tempfile.mkdtemp(prefix="lakeio-test-", dir=SHM or str(tmp_path))
    yield os.path.join(base, "tier")
    shutil.rmtree(base, ignore_errors=True)


def _run(code: str, *args, wait: bool = True):
    """A separate process running ``code`` with ``args`` (JSON) as ``ARGS``."""
    script = f"import json, sys\nARGS = json.loads(sys.argv[1])\n{code}"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(list(args))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    if wait:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        return out
    return proc


dtypes = st.sampled_from([np.uint8, np.uint16, np.int64, np.float32])
shapes = st.lists(st.integers(0, 6), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(dtype=dtypes, shape=shapes, seed=st.integers(0, 2**16))
def test_a_chunk_comes_back_exactly_mapped_read_only_from_the_nodes_copy(
    tmp_path_factory, dtype, shape, seed
):
    import tempfile

    base = tempfile.mkdtemp(dir=SHM or str(tmp_path_factory.mktemp("shm")))
    tier = SharedTier(os.path.join(base, "tier"), 64 * MB)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else np.finfo(dtype)
    array = np.random.default_rng(seed).uniform(info.min / 2, info.max / 2, size=shape)
    array = array.astype(dtype)
    array.flat[:1] = info.max  # extreme values too
    assert tier.put("lake/images/c/0", array)
    back = tier.get("lake/images/c/0")
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert not back.flags.writeable
    base_object = back
    while isinstance(base_object, (np.ndarray, memoryview)):
        base_object = base_object.base if isinstance(base_object, np.ndarray) else base_object.obj
    assert isinstance(base_object, mmap.mmap)  # read in place, no private copy
    assert tier.get("lake/images/c/1") is None
    tier.close()
    assert not os.path.exists(os.path.join(base, "tier"))  # the last user removed it
    assert os.listdir(base) == ["tier.lock"]  # (beside it, for joining and leaving)
    os.remove(os.path.join(base, "tier.lock"))
    os.rmdir(base)


def test_object_arrays_and_chunks_over_the_budget_are_not_kept(folder):
    tier = SharedTier(folder, 2 * MB)
    assert not tier.put("strings", np.array(["a", "b"], dtype=object))
    assert not tier.put("big", np.zeros(2 * MB, np.uint8))  # (+ its header: over 2 MiB)
    loaded = tier.get_or_load("big", lambda: np.ones(2 * MB, np.uint8))
    assert loaded.sum() == 2 * MB and tier.get("big") is None
    tier.close()


def test_the_ranks_of_a_node_decode_each_chunk_once_between_them(folder, tmp_path):
    """Three processes miss the same ten chunks at once: each is loaded by one of them, and all
    three read every chunk's right values."""
    log = tmp_path / "loads"
    code = """
import os, time, numpy as np
from lakeio.cache.shared import SharedTier
folder, log, go = ARGS
tier = SharedTier(folder, 64 << 20)
open(f"{go}.{os.getpid()}", "w").close()  # ready: joined
while not os.path.exists(go):
    time.sleep(0.005)
for k in range(10):
    def load(k=k):
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {k}\\n")
        time.sleep(0.03)  # decoding
        return np.full((4, 16, 16, 3), k, np.uint8)
    got = tier.get_or_load(f"chunk/{k}", load)
    assert got.shape == (4, 16, 16, 3) and (got == k).all(), k
print("ok")
tier.close()
"""
    go = str(tmp_path / "go")
    procs = [_run(code, folder, str(log), go, wait=False) for _ in range(3)]
    deadline = time.monotonic() + 60  # all three joined before any starts (a late one would
    while len(list(tmp_path.glob("go.*"))) < 3 and time.monotonic() < deadline:  # find the
        time.sleep(0.01)  # folder gone with the other two, and load everything again)
    open(go, "w").close()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
    loads = [line.split()[1] for line in log.read_text().splitlines()]
    assert sorted(loads, key=int) == [str(k) for k in range(10)]  # once each, by someone
    assert not os.path.exists(folder)  # the last of the three removed it


def test_a_rank_killed_mid_write_leaves_no_torn_chunk_and_the_next_run_is_clean(folder):
    tier = SharedTier(folder, 64 * MB)
    code = """
import os, signal, numpy as np
from lakeio.cache.shared import SharedTier
tier = SharedTier(ARGS[0], 64 << 20)
tier.put("chunk/0", np.ones((8, 64, 64, 3), np.uint8))
tier.put("chunk/1", np.ones((8, 64, 64, 3), np.uint8),
         before_publish=lambda: os.kill(os.getpid(), signal.SIGKILL))
"""
    proc = _run(code, folder, wait=False)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert tier.get("chunk/0").sum() == 8 * 64 * 64 * 3  # published before it died: whole
    assert tier.get("chunk/1") is None  # written, never published: nobody sees it
    assert len(os.listdir(os.path.join(folder, "tmp"))) == 1  # its leftover, while in use
    reloaded = tier.get_or_load("chunk/1", lambda: np.full((8, 64, 64, 3), 2, np.uint8))
    assert (reloaded == 2).all()
    tier.close()
    again = SharedTier(folder, 64 * MB)  # the next run on the node
    assert os.listdir(os.path.join(folder, "tmp")) == [] and again.get("chunk/1") is None
    again.close()


def test_a_killed_runs_chunks_are_cleared_by_the_next_first_user(folder):
    code = """
import os, signal, numpy as np
from lakeio.cache.shared import SharedTier
tier = SharedTier(ARGS[0], 64 << 20)
tier.put("chunk/0", np.ones(MB := 1 << 20, np.uint8))
os.kill(os.getpid(), signal.SIGKILL)  # never closes
"""
    proc = _run(code, folder, wait=False)
    proc.communicate(timeout=120)
    assert os.listdir(os.path.join(folder, "chunks"))  # left behind
    tier = SharedTier(folder, 64 * MB)
    assert tier.get("chunk/0") is None and tier.used_bytes() == 0
    tier.close()


def test_the_budget_keeps_the_recently_used_and_never_pulls_a_chunk_from_under_a_reader(folder):
    size = HEADER_BYTES + MB
    tier = SharedTier(folder, 3 * size)
    for k in "abc":
        assert tier.put(k, np.full(MB, ord(k), np.uint8))
        time.sleep(0.02)
    held = tier.get("a")  # used now: b is the least recently used
    time.sleep(0.02)
    assert tier.put("d", np.full(MB, ord("d"), np.uint8))
    assert tier.get("b") is None and tier.used_bytes() == 3 * size
    assert tier.stats().evictions == 1
    for k in "ef":  # a goes too now, while this process still reads it
        time.sleep(0.02)
        tier.put(k, np.full(MB, ord(k), np.uint8))
    assert tier.get("a") is None
    assert (held == ord("a")).all()  # the mapping outlives the file
    assert tier.used_bytes() <= 3 * size
    tier.close()


def test_the_folder_goes_with_the_last_process_of_the_node_not_the_first(folder):
    tier = SharedTier(folder, 64 * MB)
    tier.put("chunk/0", np.ones(16, np.uint8))
    code = """
import sys
from lakeio.cache.shared import SharedTier
tier = SharedTier(ARGS[0], 64 << 20)
assert tier.get("chunk/0").sum() == 16  # this one's copy, not cleared: someone uses it
print("ready", flush=True)
sys.stdin.readline()
tier.close()
"""
    other = _run(code, folder, wait=False)
    assert other.stdout.readline().strip() == "ready"
    tier.close()
    assert os.path.exists(folder)  # the other process still uses it
    other.communicate("go\n", timeout=120)
    assert other.returncode == 0 and not os.path.exists(folder)


def test_a_forked_child_leaving_does_not_remove_the_parents_folder(folder):
    tier = SharedTier(folder, 64 * MB)
    tier.put("chunk/0", np.ones(16, np.uint8))
    pid = os.fork()
    if pid == 0:  # a DataLoader worker: reads, then exits (its finalizers run)
        try:
            ok = tier.get("chunk/0").sum() == 16
            tier.close()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tier.get("chunk/0").sum() == 16 and os.path.exists(folder)
    tier.close()
    assert not os.path.exists(folder)


def test_two_ranks_with_a_shared_tier_decode_each_chunk_once_and_read_the_lake(
    small_lake, folder, tmp_path
):
    """`Cache(shared=...)`: two processes of one node read the whole lake through their
    loaders; every batch is the lake's, and the node read each chunk from the origin once."""
    path, images, _ = small_lake
    np.save(tmp_path / "images.npy", images)
    code = """
import os, time, numpy as np, lakeio
lake, images, base, rank, go = ARGS
cache = lakeio.Cache(memory=0, shared="64MiB", shared_folder=base)
ds = lakeio.open_dataset(lake, cache=cache)
loader = ds.loader(16, seed=3, rank=rank, world_size=2, prefetch_next_epoch=False)
expected = np.load(images)
open(f"{go}.{rank}", "w").close()  # ready: joined the node's tier
while not os.path.exists(go):
    time.sleep(0.005)
for epoch in range(2):
    loader.set_epoch(epoch)
    for batch, (x, _) in zip(loader.batches(), loader):
        assert np.array_equal(x.numpy(), expected[batch])
s = ds.source.stats()
print(s["origin_reads"], s["shared"]["hits"], s["shared"]["requests"])
"""
    go = str(tmp_path / "go")
    args = (str(path), str(tmp_path / "images.npy"), folder)
    procs = [_run(code, *args, rank, go, wait=False) for rank in range(2)]
    deadline = time.monotonic() + 60  # both joined before either reads
    while len(list(tmp_path.glob("go.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    open(go, "w").close()
    reads = hits = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        origin, shared_hits, _ = (int(v) for v in out.split())
        reads, hits = reads + origin, hits + shared_hits
    chunks = len(lakeio.open_dataset(path).chunk_members()) * 2  # images and labels
    assert reads == chunks  # each chunk of each field decoded once on the node
    assert hits > 0  # the other rank's decodes, and each rank's second epoch


def test_a_shared_folder_others_may_write_is_refused(folder):
    """Chunks in it are trusted when mapped: a folder planted by, or open to, another user
    must not be used (/dev/shm is writable by everyone)."""
    from lakeio.errors import LakeError

    os.makedirs(folder, mode=0o700)
    os.chmod(folder, 0o777)
    with pytest.raises(LakeError, match="writable by other users"):
        SharedTier(folder, 64 * MB)


def test_full_shared_memory_never_fails_a_read(folder, monkeypatch):
    """ENOSPC while publishing (a /dev/shm filled by something else): the chunk is served
    from this process's own copy, nothing half-written is left, one warning says so."""
    import errno
    import warnings

    from lakeio.cache import shared

    tier = SharedTier(folder, 64 * MB)
    real_write = os.write

    def full(fd, data):
        real_write(fd, bytes(memoryview(data)[:100]))  # a little, then the space runs out
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shared.os, "write", full)
    from lakeio.cache import tier as tiers

    monkeypatch.setattr(tiers, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(3):
            got = tier.get_or_load(f"chunk/{k}", lambda k=k: np.full((4, 8, 8, 3), k, np.uint8))
            assert (got == k).all() and got.shape == (4, 8, 8, 3)
    assert [w.category.__name__ for w in caught] == ["SharedTierWarning"]
    assert "No space left" in str(caught[0].message)
    assert tier.stats().write_errors == 3 and tier.used_bytes() == 0
    assert os.listdir(os.path.join(folder, "tmp")) == []  # the partial files went
    monkeypatch.undo()
    assert tier.put("chunk/0", np.zeros(4, np.uint8)) and tier.get("chunk/0") is not None
    tier.close()


def test_a_rank_killed_mid_epoch_holding_a_chunk_lock_stops_nobody(small_lake, folder, tmp_path):
    """Three ranks read the lake; the third is killed (SIGKILL) in its first epoch while it
    holds a chunk's lock, half way through loading it, as the other two start. They read every
    batch right, a new process in its place reads its epochs right from the tier it finds,
    and when all are done nothing is left in shared memory."""
    path, images, _ = small_lake
    np.save(tmp_path / "images.npy", images)
    code = """
import os, signal, time, numpy as np, lakeio
lake, images, base, rank, go, dying = ARGS
ds = lakeio.open_dataset(lake, cache=lakeio.Cache(memory=0, shared="64MiB", shared_folder=base))
if dying:  # killed inside its first load: the chunk's lock held, nothing published
    def dying_load(*args):
        open(go, "w").close()  # the others start now
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    ds.source._load = dying_load
loader = ds.loader(16, seed=5, rank=rank, world_size=3, prefetch_next_epoch=False)
expected = np.load(images)
while not (dying or os.path.exists(go)):
    time.sleep(0.005)
for epoch in range(3):
    loader.set_epoch(epoch)
    for batch, (x, _) in zip(loader.batches(), loader):
        assert np.array_equal(x.numpy(), expected[batch])
print("ok")
"""
    go = str(tmp_path / "go")
    args = (str(path), str(tmp_path / "images.npy"), folder)
    procs = [_run(code, *args, rank, go, rank == 2, wait=False) for rank in range(3)]
    procs[2].communicate(timeout=120)
    assert procs[2].returncode == -signal.SIGKILL
    procs[2] = _run(code, *args, 2, go, False, wait=False)  # the new rank 2
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
    node = os.path.join(folder, f"lakeio-{os.getuid()}")
    assert [name for name in os.listdir(node) if not name.endswith(".lock")] == []


@pytest.mark.parametrize(
    "local_world, asked, expected",
    [
        (None, None, 0),  # one process: nothing to share with
        ("1", None, 0),
        ("4", None, 4 * 100 * MB),  # torchrun, 4 ranks a node: the node's 4 budgets, one copy
        ("8", "3GB", 3_000_000_000),  # said outright
        ("8", 0, 0),  # turned off
        ("8", "auto", 8 * 100 * MB),
    ],
)
def test_the_shared_tier_is_on_where_torchrun_puts_several_ranks_on_a_node(
    monkeypatch, local_world, asked, expected
):
    if local_world is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
    assert lakeio.Cache(memory=100 * MB, shared=asked).shared_bytes() == expected


def test_a_bad_local_world_size_is_named(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "four")
    with pytest.raises(ValueError, match=r"LOCAL_WORLD_SIZE must be a whole number.*'four'"):
        lakeio.Cache()


def test_a_budget_over_the_free_shared_memory_keeps_to_what_is_free(folder, monkeypatch):
    """A container's /dev/shm is 64 MB unless told otherwise: the tier keeps within what is
    free (plus what it holds already) and says so once, instead of failing every write."""
    import warnings

    from lakeio.cache import shared
    from lakeio.cache import tier as tiers

    monkeypatch.setattr(tiers, "_warned", set())
    first = SharedTier(folder, 64 * MB)
    assert first.put("chunk/0", np.zeros(MB, np.uint8))
    monkeypatch.setattr(shared, "free_bytes", lambda path: 3 * MB)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = SharedTier(folder, 64 * MB)
    assert second.capacity == 3 * MB // 2 + MB + HEADER_BYTES  # half the free, and its own
    assert [w.category.__name__ for w in caught] == ["SharedTierWarning"]
    assert "--shm-size" in str(caught[0].message) and "64.0 MiB asked for" in str(caught[0].message)
    for k in range(1, 6):  # 1 MiB chunks: no more than 2 stay
        assert second.get_or_load(f"chunk/{k}", lambda: np.ones(MB, np.uint8)).sum() == MB
    assert second.used_bytes() <= second.capacity
    second.close()
    first.close()


def _deleted_mappings(folder: str) -> int:
    """Bytes this process has mapped of files since removed from ``folder``: memory the node
    cannot get back while they are held."""
    total = 0
    with open("/proc/self/maps") as fh:
        for line in fh:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith(folder) and "(deleted)" in fields[5]:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                total += end - start
    return total


@pytest.mark.parametrize("slots", [8192, 2], ids=["log", "log-overrun"])
def test_mappings_of_chunks_the_node_evicted_are_let_go(small_lake, folder, monkeypatch, slots):
    """A shared budget of about half the lake, a memory tier that could hold it all: the memory
    tier keeps the node's mappings at no charge, and lets go of each one the shared tier
    evicts, also where another reader caused the eviction (the log read by every process)
    and where more were evicted than the log keeps (then all are let go): none is left
    pinning memory the budget counts as free."""
    import gc

    from lakeio.cache import shared

    monkeypatch.setattr(shared, "EVICTION_SLOTS", slots)
    path, images, _ = small_lake
    cache = lakeio.Cache(memory="64MiB", shared=300_000, shared_folder=folder)
    first, second = lakeio.open_dataset(path, cache=cache), lakeio.open_dataset(path, cache=cache)
    members = first.chunk_members()
    refs = SampleIndex([s.samples for s in first.manifest.segments], 16).chunks()
    for ref, samples in zip(refs, members, strict=True):
        got = first.source.get(ref.segment, "images", ref.chunk)
        np.testing.assert_array_equal(got[: len(samples)], images[samples])
    tier = first.source.shared
    assert tier.stats().evictions > 0 and tier.used_bytes() <= tier.capacity
    memory = first.source.memory.stats()
    held = len(os.listdir(os.path.join(tier.folder, "chunks")))
    assert memory.bytes_held == 0  # mappings of the node's copy: nothing charged here
    # and only those of chunks still there (the last reads' evictions are seen at the next)
    assert held <= memory.items <= held + 1 and memory.evictions >= tier.stats().evictions - 1
    for ref in reversed(refs):  # another reader evicts what the first holds
        second.source.get(ref.segment, "images", ref.chunk)
    first.source.get(refs[0].segment, "images", refs[0].chunk)  # it looks at the log first
    chunk_files = os.path.join(tier.folder, "chunks")
    for name in first.source._views:
        assert os.path.exists(os.path.join(chunk_files, name)), name  # no stale mapping
    gc.collect()
    assert _deleted_mappings(tier.folder) <= 2 * (HEADER_BYTES + images[:16].nbytes)
    for source in (first.source, second.source):
        source.shared.close()


def test_a_hit_in_the_memory_tier_counts_as_a_use_of_the_nodes_copy(
    small_lake, folder, monkeypatch
):
    """The shared tier evicts the least recently used chunk; a chunk read over and over from
    a rank's memory tier (never from the shared tier itself) must count as used."""
    from lakeio.cache import source as sources

    monkeypatch.setattr(sources, "TOUCH_EVERY_S", 0.0)
    path, _, _ = small_lake
    chunk_bytes = HEADER_BYTES + 16 * 32 * 32 * 3
    cache = lakeio.Cache(memory="64MiB", shared=3 * chunk_bytes + 100, shared_folder=folder)
    ds = lakeio.open_dataset(path, cache=cache)
    refs = list(SampleIndex([s.samples for s in ds.manifest.segments], 16).chunks())[:4]
    for k in (0, 1, 2, 0, 3):  # 0 again: a memory-tier hit, now the most recently used
        ds.source.get(refs[k].segment, "images", refs[k].chunk)  # 3: over the budget
        time.sleep(0.02)
    tier = ds.source.shared
    keys = [ds.source.cache_key(r.segment, "images", r.chunk) for r in refs]
    assert {k for k in range(4) if tier.get(keys[k]) is not None} == {0, 2, 3}  # 1 went
    tier.close()


def test_a_folder_nobody_uses_is_removed_when_any_lake_opens_its_tier(small_lake, folder):
    """torchrun ends a failed run with SIGTERM, which skips finalizers: the run's folder, and
    the memory it holds, would stay until that very lake version is opened again. Opening any
    lake's tier removes the folders of the node that no process uses, and only those."""
    node = os.path.join(folder, f"lakeio-{os.getuid()}")
    code = """
import os, signal, numpy as np
from lakeio.cache.shared import SharedTier
tier = SharedTier(ARGS[0], 64 << 20)
tier.put("chunk/0", np.ones(1 << 20, np.uint8))
os.kill(os.getpid(), signal.SIGKILL)
"""
    os.makedirs(node, mode=0o700)
    abandoned, in_use = os.path.join(node, "abandoned"), os.path.join(node, "in-use")
    proc = _run(code, abandoned, wait=False)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL and os.path.isdir(abandoned)
    user = SharedTier(in_use, 64 * MB)
    assert user.put("chunk/0", np.ones(MB, np.uint8))
    path, _, _ = small_lake
    ds = lakeio.open_dataset(path, cache=lakeio.Cache(shared="64MiB", shared_folder=folder))
    assert ds.source.shared is not None
    assert not os.path.exists(abandoned)  # nobody's: gone
    assert user.get("chunk/0") is not None  # in use: kept
    ds.source.close_shared()
    user.close()
