"""The tiered read path for one lake: memory tier → disk tier → origin, then checksum and decode.

Every chunk read in lakeio (``ds[i]``, the loader, verify) goes through a `ChunkSource`, which
counts what each tier served so users can see where time and bytes go.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask.config
import numpy as np

from lakeio.cache.config import Cache
from lakeio.cache.disk import DiskTier
from lakeio.cache.memory import MemoryTier
from lakeio.cache.shared import open_shared
from lakeio.errors import ChunkError, ChunkUnavailableError, CorruptChunkError
from lakeio.format.chunks import decode_chunk, decode_text_chunk, verify_checksum
from lakeio.format.codecs import parse_codec
from lakeio.format.location import Location
from lakeio.format.manifest import Manifest
from lakeio.format.pages import spare_bytes
from lakeio.format.segment import chunk_key

STORED_PREFIX = "stored:"  # memory-tier keys of stored (not decoded) chunk bytes
TOUCH_EVERY_S = 1.0  # how often a chunk mapped here counts as a use in the shared tier


class ChunkSource:
    """Decoded chunks of a lake's fields, served from the cheapest tier that has them.

    ``memory`` is a memory tier shared with other sources (a Dask worker's one budget for every
    lake and version it serves); by default the source has its own, sized by ``cache``."""

    def __init__(
        self,
        loc: Location,
        manifest: Manifest,
        cache: Cache | None = None,
        memory: MemoryTier | None = None,
    ) -> None:
        self.loc = loc
        self.manifest = manifest
        self.cache = cache or Cache()
        if memory is None and self.cache.memory:
            memory = MemoryTier(self.cache.memory, self.cache.eviction)
        self.memory = memory
        self.disk = DiskTier(self.cache.disk, self.cache.disk_size) if self.cache.disk else None
        shared = self.cache.shared_bytes()
        self.shared = (
            open_shared(self.cache.shared_folder, loc, manifest, shared) if shared else None
        )
        # mappings of the shared tier's chunks the memory tier holds (by file name), the
        # shared tier's eviction count when last looked, and when each was last touched there
        self._views: dict[str, str] = {}
        self._evictions_seen = self.shared.evictions() if self.shared is not None else 0
        self._touched: dict[str, float] = {}
        self._codecs = {name: parse_codec(f.codec) for name, f in manifest.fields.items()}
        if any(
            self._codecs[name].predicts(f.dtype, f.shape) for name, f in manifest.fields.items()
        ):
            from lakeio.format.predict import warm_up

            warm_up()  # (compiled or loaded from numba's cache now, not in the first chunk)
        self._lock = threading.Lock()
        # a chunk's name in the tiers, asked for on every lookup and schedule (a warm epoch is
        # all lookups): formatted once per chunk, for the chunks read lately
        self.cache_key = functools.lru_cache(maxsize=1 << 16)(self._cache_key)
        self._pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool) for fields
        self._in_flight = self._peak_in_flight = 0  # origin reads at once: now, at most
        self._recent_latency: float | None = None  # of origin reads, exponentially weighted
        self._counts = {
            "requests": 0,
            "memory_hits": 0,  # this source's own (the memory tier may serve other sources too)
            "origin_reads": 0,
            "origin_bytes": 0,
            "origin_seconds": 0.0,  # time in origin reads: their latency plus transfer
            "decode_seconds": 0.0,
            "corrupt_refetched": 0,
            "corrupt_reread": 0,  # origin bodies that failed their checksum and were read again
            "hit_seconds": 0.0,
            "miss_seconds": 0.0,
        }

    def __getstate__(self) -> dict:  # tiers are rebuilt (empty memory, same disk) where unpickled
        return {"loc": self.loc, "manifest": self.manifest, "cache": self.cache}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["loc"], state["manifest"], state["cache"])

    def key(self, segment: int, field: str, chunk: int) -> str:
        info = self.manifest.fields[field]
        return chunk_key(self.manifest.segments[segment].id, field, chunk, 1 + len(info.shape))

    def _cache_key(self, segment: int, field: str, chunk: int) -> str:
        """The chunk's name in the tiers: its full URL (tiers may serve several lakes)."""
        return self.loc.describe(self.key(segment, field, chunk))

    def get(self, segment: int, field: str, chunk: int) -> np.ndarray:
        """The decoded chunk (full chunk length; rows past the segment's end are padding)."""
        cache_key = self.cache_key(segment, field, chunk)

        def load() -> np.ndarray:
            return self._load(field, self.key(segment, field, chunk), cache_key)

        if self.shared is None or self.manifest.fields[field].dtype == "str":
            return self._serve(cache_key, load)  # (strings are not shared: objects)
        if self.shared.evictions() != self._evictions_seen:
            self._forget_evicted()
        return self._serve(cache_key, load, shared=True)

    def in_memory(self, segment: int, field: str, chunk: int) -> bool:
        """Whether the memory tier holds the decoded chunk now."""
        if self.memory is None:
            return False
        return self.cache_key(segment, field, chunk) in self.memory

    def get_fields(
        self, segment: int, fields: tuple[str, ...], chunk: int
    ) -> dict[str, np.ndarray]:
        """Chunk ``chunk`` of each of ``fields``, fetched at once from a remote store (see
        `get_many`)."""
        values = self.get_many([(segment, f, chunk) for f in fields])
        return dict(zip(fields, values, strict=True))

    def get_many(self, items: list[tuple[int, str, int]], stored: bool = False) -> list[np.ndarray]:
        """The chunks ``items`` ((segment, field, chunk) triples), decoded (``stored``: their
        verified stored bytes, as `get_raw`). From a remote store they are fetched at once:
        each field of each chunk is its own object, and one after the other a 3 KB labels
        chunk would cost a full round trip after its 4 MB images chunk."""
        get = self.get_raw if stored else self.get
        if len(items) < 2 or self.loc.is_local:
            return [get(*item) for item in items]
        pool = self._field_pool()
        rest = [pool.submit(get, *item) for item in items[1:]]
        try:
            first = get(*items[0])  # meanwhile, here
            return [first, *(future.result() for future in rest)]
        finally:
            for future in rest:  # after a failure: what has not started never will
                future.cancel()

    def _field_pool(self) -> ThreadPoolExecutor:
        """This process's pool: a forked child (a DataLoader worker) inherits the parent's pool
        object but none of its threads, and work submitted there would wait for ever."""
        with self._lock:
            if self._pool is None or self._pool[0] != os.getpid():
                pool = ThreadPoolExecutor(
                    int(dask.config.get("lakeio.read.max-in-flight", 32)),
                    thread_name_prefix="lakeio-fetch",
                )
                self._pool = (os.getpid(), pool)
            return self._pool[1]

    def get_raw(self, segment: int, field: str, chunk: int) -> np.ndarray:
        """The chunk's stored bytes (compressed, checksum included) as a read-only uint8 array,
        verified, from the cheapest tier.

        For a trainer that decodes itself (cluster loading with ``decode="trainer"``): the memory
        tier then holds stored bytes, which cost less memory and less network than decoded ones.
        """
        key = self.key(segment, field, chunk)
        cache_key = STORED_PREFIX + self.loc.describe(key)
        return self._serve(cache_key, lambda: np.frombuffer(self._load_stored(key), np.uint8))

    def _serve(self, cache_key: str, load, shared: bool = False) -> np.ndarray:
        """The memory tier's copy of ``cache_key``, or ``load()`` kept there; counts and times it.

        ``shared``: through the node-shared tier. The memory tier then keeps the mapping of the
        node's copy at no charge (the shared budget counts those bytes) until that tier removes
        the chunk (`_forget_evicted`), and a hit counts as a use there now and then."""
        started = time.perf_counter()
        value = self.memory.get(cache_key) if self.memory is not None else None
        hit = value is not None
        if not hit:
            mapped = False
            try:
                if shared:
                    before = self.shared.evictions()
                    value, mapped = self.shared.get_or_load_mapped(cache_key, load)
                else:
                    value = load()
            except ChunkError as exc:
                raise exc.of_lake(self.loc.describe()) from None
            if self.memory is not None and not mapped:
                self.memory.put(cache_key, value)
            elif self.memory is not None:
                self._keep_mapped(cache_key, value, before)
        elif shared:
            now = time.monotonic()
            if now - self._touched.get(cache_key, 0.0) > TOUCH_EVERY_S:
                self._touched[cache_key] = now
                self.shared.touch(cache_key)
        with self._lock:
            self._counts["hit_seconds" if hit else "miss_seconds"] += time.perf_counter() - started
            self._counts["requests"] += 1
            self._counts["memory_hits"] += hit
        return value

    def _keep_mapped(self, cache_key: str, value: np.ndarray, before: int) -> None:
        """Keep a mapping of the node's copy in the memory tier at no charge, unless the shared
        tier evicted that chunk since ``before`` (the count read before it was mapped): another
        thread reading the log meanwhile would not have known to drop it. Under the source's
        lock, as `_forget_evicted`, so a mapping is never kept untracked."""
        name = self.shared.name(cache_key)
        with self._lock:
            self._views[name] = cache_key
            self.memory.put(cache_key, value, charge=0)
            _, names = self.shared.evicted_since(before)
            if names is None or name in names:  # (maybe an older copy: mapped again if so)
                del self._views[name]
                self.memory.evict(cache_key)

    def _forget_evicted(self) -> None:
        """Let go of the mappings whose chunks the node-shared tier removed since last looked
        (all of them if too many were): their memory goes back to the node once unmapped."""
        with self._lock:
            seen, names = self.shared.evicted_since(self._evictions_seen)
            self._evictions_seen = seen
            if names is None:
                keys = list(self._views.values())
                self._views.clear()
            else:
                keys = [k for k in map(self._views.pop, names, [None] * len(names)) if k]
            for key in keys:
                self._touched.pop(key, None)
                self.memory.evict(key)  # (views are only kept where there is a memory tier)

    def close_shared(self) -> None:
        """Let go of the node-shared tier: the mappings the memory tier keeps of it (that tier
        may outlive this source: a Dask worker's), then the tier itself."""
        if self.shared is None:
            return
        with self._lock:
            keys, self._views = list(self._views.values()), {}
            for key in keys:
                self.memory.evict(key)
        self.shared.close()

    def _load_stored(self, key: str) -> bytes:
        def verify(b: bytes) -> None:
            verify_checksum(b, key)

        if self.disk is None:
            return self._origin(key, verify)
        cache_key = self.loc.describe(key)
        raw, hit = self.disk.get_or_fetch(cache_key, lambda: self._origin(key, verify))
        if hit:
            try:
                verify(raw)
            except CorruptChunkError:  # a damaged cached copy: replace it with the original
                raw, refetched = self.disk.replace_damaged(
                    cache_key, raw, lambda: self._origin(key, verify), verify
                )
                self._add("corrupt_refetched", int(refetched))
        return raw

    def decode_stored(self, field: str, raw: bytes, key: str) -> np.ndarray:
        """Verify and decode stored chunk bytes of ``field`` (e.g. received from a worker)."""
        return self._decode(field, raw, key)

    def schedule(
        self, refs_and_times, stored: bool = False, reader: str = "", now: float = 0.0
    ) -> None:
        """Tell the memory tier when chunks are needed next: ((segment, chunk), time) pairs.

        ``stored`` schedules the stored-bytes entries (`get_raw`) instead of the decoded ones;
        ``reader`` and ``now`` (on the reader's clock) matter where readers share the tier."""
        if self.memory is None:
            return
        prefix = STORED_PREFIX if stored else ""
        times = {}
        for (segment, chunk), when in refs_and_times:
            for field in self.manifest.fields:
                times[prefix + self.cache_key(segment, field, chunk)] = when
        self.memory.schedule(times, reader, now)

    def read_origin(self, segment: int, field: str, chunk: int) -> np.ndarray:
        """The chunk decoded straight from the origin, bypassing every tier (for verification)."""
        key = self.key(segment, field, chunk)
        decoded: list[np.ndarray] = []
        try:
            self._origin(key, lambda b: decoded.append(self._decode(field, b, key)))
        except ChunkError as exc:
            raise exc.of_lake(self.loc.describe()) from None
        return decoded[-1]

    def _load(self, field: str, key: str, cache_key: str) -> np.ndarray:
        decoded: list[np.ndarray] = []

        def decode(b: bytes) -> None:
            decoded.append(self._decode(field, b, key))

        if self.disk is None:
            self._origin(key, decode)
            return decoded[-1]
        raw, _ = self.disk.get_or_fetch(cache_key, lambda: self._origin(key, decode))
        if decoded:  # fetched from the origin and checked before it was stored
            return decoded[-1]
        try:
            return self._decode(field, raw, key)
        except CorruptChunkError:  # a damaged cached copy: replace it (a bad origin raises)
            # (the original's checksum is checked as it is read: read again if it fails)
            _, refetched = self.disk.replace_damaged(
                cache_key, raw, lambda: self._origin(key, lambda b: verify_checksum(b, key)), decode
            )
            self._add("corrupt_refetched", int(refetched))
            return decoded[-1]

    def _origin(self, key: str, check: Callable[[bytes], object]) -> bytes:
        """The chunk's bytes from the origin, passed through ``check`` (a checksum, a decode:
        it raises `CorruptChunkError` on bad bytes). From a remote store, a body that fails is
        read again until one passes, or two reads agree (a damaged copy in the store is the
        same every time; a byte changed in transit is not), or ``lakeio.read.deadline`` ends;
        then the check's error names the chunk."""
        raw = self._origin_once(key)
        if self.loc.is_local:
            check(raw)
            return raw
        deadline = time.monotonic() + float(dask.config.get("lakeio.read.deadline", 60))
        previous = None
        while True:
            try:
                check(raw)
                return raw
            except CorruptChunkError:
                if raw == previous or time.monotonic() > deadline:
                    raise
            self._add("corrupt_reread", 1)
            previous, raw = raw, self._origin_once(key)

    def _origin_once(self, key: str) -> bytes:
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        started = time.perf_counter()
        try:
            raw = self.loc.read_bytes(key)
        except FileNotFoundError:
            raise ChunkUnavailableError(key, "missing from the store") from None
        except PermissionError as exc:  # e.g. S3's 403 AccessDenied: not retried, named
            reason = exc.strerror if exc.filename and exc.strerror else f"access denied ({exc})"
            raise ChunkUnavailableError(key, reason) from None
        finally:
            with self._lock:
                self._in_flight -= 1
        seconds = time.perf_counter() - started
        with self._lock:
            self._counts["origin_reads"] += 1
            self._counts["origin_bytes"] += len(raw)
            self._counts["origin_seconds"] += seconds
            recent = self._recent_latency
            self._recent_latency = seconds if recent is None else recent + 0.2 * (seconds - recent)
        return raw

    def _decode(self, field: str, raw: bytes, key: str) -> np.ndarray:
        started = time.perf_counter()
        info = self.manifest.fields[field]
        n = self.manifest.chunk_samples
        if info.dtype == "str":
            value = decode_text_chunk(raw, self._codecs[field], n, key)
        else:
            value = decode_chunk(raw, self._codecs[field], (n, *info.shape), info.dtype, key)
        self._add("decode_seconds", time.perf_counter() - started)
        return value

    def _add(self, name: str, amount: float) -> None:
        with self._lock:
            self._counts[name] += amount

    def stats(self, sizes: bool = True) -> dict[str, Any]:
        """Requests and hits per tier, origin reads and bytes, decode time, average access time.

        ``sizes=False`` skips the disk tier's size queries (for frequent polling)."""
        with self._lock:
            c = dict(self._counts)
            peak, recent = self._peak_in_flight, self._recent_latency or 0.0
        requests = c["requests"]
        memory = self.memory.stats() if self.memory is not None else None
        if memory is not None:  # requests and hits are this source's, the rest the tier's
            memory.requests, memory.hits = requests, c["memory_hits"]
        out: dict[str, Any] = {
            "requests": requests,
            "origin_reads": c["origin_reads"],
            "origin_bytes": c["origin_bytes"],
            # mean time of one origin read, first byte to last (with retries, if any)
            "origin_read_s": c["origin_seconds"] / c["origin_reads"] if c["origin_reads"] else 0.0,
            "origin_latency_s": recent,  # the same, weighted to the recent reads
            "origin_in_flight_peak": peak,  # origin reads at once, at most (each field its own)
            "decode_seconds": round(c["decode_seconds"], 6),
            "corrupt_refetched": c["corrupt_refetched"],
            "corrupt_reread": c["corrupt_reread"],
            "memory": memory.as_dict() if memory else None,
            "disk": self.disk.stats(sizes).as_dict() if self.disk is not None else None,
            # the node's copy: requests and hits this process's, bytes the node's
            "shared": (
                {**self.shared.stats().as_dict(), "capacity": self.shared.capacity}
                if self.shared is not None
                else None
            ),
            # decoded chunks' mappings kept for the next chunk of their size: this process's,
            # in what the memory tiers' budgets leave free, or 16 MiB (see lakeio.format.pages)
            "spare_mapping_bytes": spare_bytes(),
        }
        hits = memory.hits if memory else 0
        misses = requests - hits
        hit_time = c["hit_seconds"] / hits if hits else 0.0
        miss_penalty = c["miss_seconds"] / misses if misses else 0.0
        miss_rate = misses / requests if requests else 0.0
        out["hit_seconds"] = c["hit_seconds"]  # totals, for access times over an interval
        out["miss_seconds"] = c["miss_seconds"]
        out["hit_time_s"] = hit_time
        out["miss_penalty_s"] = miss_penalty
        out["average_access_time_s"] = hit_time + miss_rate * miss_penalty
        return out
