"""The "corrupt" reliability case: flipped bytes in an origin chunk, a disk-tier entry, the
newest manifest and a segment's zarr.json, each at a seeded random place.

What must happen:
- origin chunk: reading it fails with `CorruptChunkError` naming the chunk and the lake, and
  `verify_lake` reports that chunk; nothing wrong is ever delivered;
- disk-tier entry: the loader drops it, fetches the origin's copy, counts it, and the epoch is
  exactly right;
- newest manifest: `open_dataset` refuses naming the file; the previous version still opens;
- a segment's zarr.json: `verify_lake` reports the file; loading is unaffected.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lakeio.testing.tally import Tally

TARGETS = ("origin chunk", "disk-tier entry", "newest manifest", "segment zarr.json")


def make_lake(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A two-version lake of photo crops, chunks large enough that the disk tier keeps them as
    files (diskcache keeps small values inside SQLite); returns its columns."""
    import lakeio
    from lakeio.testing.images import photo_crops

    pairs = list(photo_crops(120, (48, 48), seed=seed))
    images = np.stack([p for p, _ in pairs])
    labels = np.array([label for _, label in pairs])
    common = {"chunk_samples": 20, "codec": "zstd:1", "progress": False, "echo": None}
    lakeio.ingest(images[:80], path, labels=labels[:80], **common)
    lakeio.ingest(images[80:], path, labels=labels[80:], mode="append", **common)
    return {"images": images, "labels": labels}


def flip(path: Path, rng: random.Random, at: int | None = None) -> int:
    """XOR one byte of ``path`` (at a seeded random offset) with a non-zero mask; returns it."""
    data = bytearray(path.read_bytes())
    offset = rng.randrange(len(data)) if at is None else at
    data[offset] ^= rng.randrange(1, 256)
    path.write_bytes(bytes(data))
    return offset


def run_corrupt_trials(
    lake: Path, columns: dict, workdir: Path, trials: int, seed: int = 0, only=None
) -> list[Tally]:
    """``trials`` flips per target (those ``only`` marks true, default all), each on a fresh
    copy of ``lake``."""
    rng = random.Random(seed)
    checks: dict[str, Callable] = {
        "origin chunk": _origin_chunk,
        "disk-tier entry": _disk_entry,
        "newest manifest": _newest_manifest,
        "segment zarr.json": _segment_metadata,
    }
    tallies = []
    for target in TARGETS:
        if only is not None and not only.get(target):
            continue
        tally = Tally(f"flipped byte: {target}")
        for trial in range(trials):
            copy = workdir / f"{target.replace(' ', '-')}-{trial}"
            shutil.copytree(lake, copy)
            tally = tally.add(checks[target](copy, columns, rng, workdir / f"cache-{copy.name}"))
        tallies.append(tally)
    return tallies


def _epoch(ds, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """One unshuffled epoch of (images, labels), in sample order."""
    loader = ds.loader(batch_size=batch_size, shuffle=False, fields=("images", "labels"))
    xs, ys = zip(*((x.numpy().copy(), y.numpy().copy()) for x, y in loader), strict=True)
    loader.close()
    return np.concatenate(xs), np.concatenate(ys)


def _result(case: str, detected: bool, recovered: bool, lost: bool, note: str) -> Tally:
    return Tally(case, trials=1, injected=1, detected=int(detected), recovered=int(recovered),
                 lost=int(lost), notes=[] if detected and not lost else [note])  # fmt: skip


def _origin_chunk(lake: Path, columns: dict, rng: random.Random, _cache: Path) -> Tally:
    import lakeio
    from lakeio.errors import CorruptChunkError
    from lakeio.verify import verify_lake

    chunk = rng.choice(sorted(p for p in (lake / "segments").glob("*/*/c.*")))
    key = str(chunk.relative_to(lake))
    flip(chunk, rng)
    try:
        images, labels = _epoch(lakeio.open_dataset(lake, cache=lakeio.Cache(memory=0)))
    except CorruptChunkError as exc:
        named = key in str(exc) and str(lake) in str(exc)
        reported = [k for k, _ in verify_lake(lakeio.open_dataset(lake)).problems] == [key]
        return _result("origin chunk", named and reported, False, False,
                       f"{key}: error {exc!s}; verify {reported}")  # fmt: skip
    except Exception as exc:  # any other failure names nothing useful: counted as a loss
        return _result("origin chunk", False, False, True, f"{key}: {type(exc).__name__}: {exc}")
    same = np.array_equal(images, columns["images"]) and np.array_equal(labels, columns["labels"])
    # a chunk of a field the epoch did not load (paths): verify must still find it
    reported = [k for k, _ in verify_lake(lakeio.open_dataset(lake)).problems] == [key]
    return _result("origin chunk", reported, same, not same, f"{key}: reported {reported}")


def _disk_entry(lake: Path, columns: dict, rng: random.Random, cache_dir: Path) -> Tally:
    import lakeio

    cache = lakeio.Cache(memory=0, disk=str(cache_dir), disk_size="1GB")
    _epoch(lakeio.open_dataset(lake, cache=cache))  # fills the disk tier
    entry = rng.choice(sorted(cache_dir.rglob("*.val")))
    flip(entry, rng)
    ds = lakeio.open_dataset(lake, cache=cache)
    try:
        images, labels = _epoch(ds)
    except Exception as exc:
        return _result("disk-tier entry", False, False, True, f"{entry}: {exc!r}")
    same = np.array_equal(images, columns["images"]) and np.array_equal(labels, columns["labels"])
    refetched = ds.stats()["corrupt_refetched"]
    return _result("disk-tier entry", refetched == 1, same, not same,
                   f"{entry.name}: refetched {refetched}, same {same}")  # fmt: skip


def _newest_manifest(lake: Path, columns: dict, rng: random.Random, _cache: Path) -> Tally:
    import lakeio
    from lakeio.errors import FormatError

    newest = max((lake / "_lakeio" / "manifests").glob("v*.json"))
    flip(newest, rng)
    try:
        lakeio.open_dataset(lake)
    except FormatError as exc:
        named = str(newest) in str(exc)
        previous = lakeio.open_dataset(lake, version=1)
        images, _ = _epoch(previous)
        intact = np.array_equal(images, columns["images"][: len(previous)])
        return _result("newest manifest", named, intact, not intact, f"{exc}; v1 intact {intact}")
    except Exception as exc:
        return _result("newest manifest", False, False, True, f"{type(exc).__name__}: {exc}")
    return _result("newest manifest", False, False, True, f"{newest.name}: opened after the flip")


def _segment_metadata(lake: Path, columns: dict, rng: random.Random, _cache: Path) -> Tally:
    import lakeio
    from lakeio.verify import verify_lake

    target = rng.choice(sorted((lake / "segments").glob("s*/**/zarr.json")))
    key = str(target.relative_to(lake))
    flip(target, rng)
    try:
        ds = lakeio.open_dataset(lake)
        images, labels = _epoch(ds)
        reported = key in [k for k, _ in verify_lake(ds).problems]
    except Exception as exc:
        return _result("segment zarr.json", False, False, True, f"{key}: {exc!r}")
    same = np.array_equal(images, columns["images"]) and np.array_equal(labels, columns["labels"])
    return _result("segment zarr.json", reported, same, not same,
                   f"{key}: reported {reported}, loading intact {same}")  # fmt: skip
