"""The disk tier under pressure: values of unlike sizes, and damaged copies read at once."""

import contextlib
import threading
from pathlib import Path

import numpy as np

import lakeio
from lakeio.cache.disk import DiskTier
from lakeio.cache.source import ChunkSource
from lakeio.errors import CorruptChunkError

UNIT = 64 * 1024


def _value(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_big_values_stored_after_small_ones_keep_the_tier_within_its_limit(tmp_path):
    tier = DiskTier(tmp_path / "disk", 16 * UNIT)
    for i in range(40):  # a labels-only pass: many tiny chunks, the oldest in the tier
        tier.put(f"labels{i}", _value(100, i))
    for i in range(30):  # then the images: each store used to cull one tiny value only
        tier.put(f"images{i}", _value(UNIT, 100 + i))
        assert tier.stats().bytes_held <= 17 * UNIT, i
    assert tier.get("images29") == _value(UNIT, 129)
    assert tier.stats().items >= 8  # culled to fit, not emptied


class _MeetingOnDamage(ChunkSource):
    """A source whose readers, on finding a damaged copy, wait for each other before going on:
    the interleaving an epoch's load and the next epoch's prefetch of one chunk can take."""

    both = threading.Barrier(2)

    def _decode(self, field, raw, key):
        try:
            return super()._decode(field, raw, key)
        except CorruptChunkError:
            with contextlib.suppress(threading.BrokenBarrierError):
                self.both.wait(timeout=5)
            raise


def test_readers_finding_one_damaged_copy_at_once_fetch_the_original_once(small_lake, tmp_path):
    path, images, _ = small_lake
    cache = lakeio.Cache(memory=0, disk=str(tmp_path / "disk"), disk_size="64MB")
    first = lakeio.open_dataset(path, cache=cache).source
    first.get(0, "images", 0)
    first.disk.flush()  # stored behind the read
    (stored,) = Path(tmp_path / "disk").rglob("*.val")
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0x10
    stored.write_bytes(bytes(damaged))
    ds = lakeio.open_dataset(path)
    source = _MeetingOnDamage(ds.loc, ds.manifest, cache)
    got = []

    def read():
        got.append(source.get(0, "images", 0))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    for r in readers:
        r.join(timeout=30)
    assert len(got) == 2 and all(np.array_equal(g, images[:16]) for g in got)
    stats = source.stats()
    assert (stats["corrupt_refetched"], stats["origin_reads"]) == (1, 1)
