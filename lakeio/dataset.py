"""`open_dataset`: a committed lake snapshot as a sequence of samples and as dask arrays.

Reads go chunk by chunk through a `ChunkSource` (memory tier → disk tier → origin, checksum,
decode), which the streaming loader shares.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

import numpy as np

from lakeio.cache.config import Cache
from lakeio.cache.source import ChunkSource
from lakeio.format.index import ChunkMembers, SampleIndex
from lakeio.format.location import Location
from lakeio.format.manifest import Manifest, read_manifest

BATCH_ARRAYS_KEPT = 12  # of each shape: the batches in flight of a loader or two


class Dataset:
    """A read-only snapshot of a lake: ``len(ds)``, ``ds[i]`` → (image, label), ``ds.to_dask()``."""

    def __init__(
        self,
        loc: Location,
        manifest: Manifest,
        cache: Cache | None = None,
        *,
        source: ChunkSource | None = None,
        indices: np.ndarray | None = None,
    ) -> None:
        self.loc = loc
        self.manifest = manifest
        self.index = SampleIndex([s.samples for s in manifest.segments], manifest.chunk_samples)
        self.source = source or ChunkSource(loc, manifest, cache)
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)

    # -- views ---------------------------------------------------------------------------
    def subset(self, indices) -> Dataset:
        """A view of the samples at ``indices`` (positions in this dataset), sharing the cache."""
        chosen = self._global(np.asarray(indices, dtype=np.int64))
        return Dataset(self.loc, self.manifest, source=self.source, indices=chosen)

    def split(self, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """(rest, held_out): a deterministic random ``fraction`` held out, e.g. for validation."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be within 0..1, not {fraction}")
        order = np.random.default_rng(seed).permutation(len(self))
        held = round(fraction * len(self))
        return self.subset(np.sort(order[held:])), self.subset(np.sort(order[:held]))

    def _global(self, positions: np.ndarray) -> np.ndarray:
        n = len(self)
        if positions.size and (positions.min() < -n or positions.max() >= n):
            raise IndexError(f"indices out of range for a dataset of {n} samples")
        positions = np.where(positions < 0, positions + n, positions)
        return positions if self.indices is None else self.indices[positions]

    # -- chunk-level access for the loader ---------------------------------------------------
    @cached_property
    def _chunk_table(self):
        """(chunk refs, chunk id of each global sample, row of each global sample), built once."""
        return self.index.chunk_table()

    def sample_chunks(self) -> tuple[np.ndarray, np.ndarray]:
        """For every global sample: the id of its chunk and its row in it."""
        _, chunk_of, row_of = self._chunk_table
        return chunk_of, row_of

    @cached_property
    def chunk_starts(self) -> np.ndarray:
        """The global number of each chunk's first sample (a sample's row in its chunk is its
        number less its chunk's start), by chunk id."""
        return self.index.chunk_starts()

    @cached_property
    def batch_arrays(self):
        """Batch arrays shared by this dataset's loaders, written again once nobody holds them
        (`lakeio.loader.buffers`): a new loader starts with them instead of fresh memory."""
        from lakeio.loader.buffers import RecycledArrays

        return RecycledArrays(keep=BATCH_ARRAYS_KEPT)

    def chunk_in_memory(self, chunk: int, fields) -> bool:
        """Whether the memory tier holds chunk ``chunk`` of every one of ``fields`` now (a load
        of it then costs a lookup, not a read)."""
        ref = self._chunk_table[0][chunk]
        return all(self.source.in_memory(ref.segment, f, ref.chunk) for f in fields)

    def chunk_members(self) -> ChunkMembers:
        """The global sample ids of this dataset in each chunk, chunk by chunk (empty ones dropped)."""
        if self.indices is None:  # every sample: the chunks' own runs, from the segment figures
            starts = self.chunk_starts
            offsets = np.concatenate([starts, [len(self.index)]])
            return ChunkMembers.of_range(0, offsets)
        members = np.sort(self.indices)
        if not len(members):
            return ChunkMembers(members, np.zeros(1, dtype=np.int64))
        chunk_of, _ = self.sample_chunks()
        ids = chunk_of[members]
        cuts = np.flatnonzero(np.diff(ids)) + 1
        offsets = np.concatenate([[0], cuts, [len(members)]])
        return ChunkMembers(members, offsets, ids[offsets[:-1]])

    def load_chunk(self, chunk: int, fields) -> dict[str, np.ndarray]:
        """The decoded chunk ``chunk`` (an id from `sample_chunks`) for each field."""
        ref = self._chunk_table[0][chunk]
        return self.source.get_fields(ref.segment, tuple(fields), ref.chunk)

    def schedule_chunks(self, chunk_times) -> None:
        """Pass (chunk id, next use) pairs to the memory tier's plan-aware eviction."""
        pairs = list(chunk_times)
        if not pairs:
            return
        segment, number = self.index.segment_and_number([c for c, _ in pairs])
        refs = zip(segment.tolist(), number.tolist(), strict=True)
        self.source.schedule(zip(refs, (t for _, t in pairs), strict=True))

    def chunk_nbytes(self, fields) -> int:
        """Decoded bytes of one chunk of ``fields`` (strings counted at 64 bytes a sample)."""
        m = self.manifest
        return sum(m.chunk_samples * (m.fields[f].sample_bytes or 64) for f in fields)

    def loader(self, batch_size: int, **options):
        """Shuffled, sharded, prefetched batches as torch tensors — see `lakeio.loader.make_loader`."""
        from lakeio.loader import make_loader

        return make_loader(self, batch_size, **options)

    def stats(self) -> dict[str, Any]:
        """What the cache tiers served: requests, hits and misses per tier, origin bytes, decode time."""
        return self.source.stats()

    def __repr__(self) -> str:
        shape = self.manifest.fields["images"].shape if "images" in self.fields else ()
        return (
            f"<lakeio.Dataset {self.loc.describe()} v{self.version}: {len(self)} samples, "
            f"images {shape}, {len(self.classes)} classes>"
        )

    def __len__(self) -> int:
        return len(self.index) if self.indices is None else len(self.indices)

    @property
    def version(self) -> int:
        """The manifest version this dataset reads (a snapshot: later commits are not seen)."""
        return self.manifest.version

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names; a sample's label is its index here."""
        return self.manifest.classes

    @property
    def fields(self) -> tuple[str, ...]:
        """The stored fields (``images``, ``labels``, ``paths``, ...) a loader may ask for."""
        return tuple(self.manifest.fields)

    def _position(self, i: int) -> int:
        n = len(self)
        index = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= index < n:
            raise IndexError(f"sample {i} is out of range for a dataset of {n} samples")
        return index if self.indices is None else int(self.indices[index])

    def sample(self, i: int, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Sample ``i`` as a dict of field → value (arrays are copies the caller owns)."""
        segment, chunk, row = self.index.locate(self._position(i))
        out = {}
        for field in fields or self.fields:
            value = self.source.get(segment, field, chunk)[row]
            out[field] = value.copy() if isinstance(value, np.ndarray) else _scalar(value)
        return out

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(
                f"index a Dataset with one int, not {type(i).__name__}; use ds.subset(...) for "
                "many samples, ds.loader(...) to stream, ds.to_dask() for arrays"
            )
        item = self.sample(i, ("images", "labels"))
        return item["images"], int(item["labels"])

    def to_dask(self) -> dict[str, Any]:
        """Every field as one dask array over the dataset, one dask chunk per lake chunk.

        Blocks are read through lakeio's chunk reader, so a damaged chunk fails with an error
        naming its key (plain `dask.array.from_zarr` on a segment works too; see docs/format.md).
        """
        import dask.array as da
        from dask.base import tokenize

        m = self.manifest
        blocks = [
            (s, c, min(m.chunk_samples, seg.samples - c * m.chunk_samples))
            for s, seg in enumerate(m.segments)
            for c in range(-(-seg.samples // m.chunk_samples))
        ]
        token = tokenize(self.loc.url, m.version, m.created)
        source_key = f"lakeio-source-{token}"
        out = {}
        for field, info in m.fields.items():
            name = f"lakeio-read-{field}-{token}"
            tail = (0,) * len(info.shape)
            graph: dict = {source_key: self.source}
            for i, (s, c, rows) in enumerate(blocks):
                graph[(name, i, *tail)] = (_read_block, source_key, s, field, c, rows)
            chunks = (tuple(rows for _, _, rows in blocks) or (0,), *((d,) for d in info.shape))
            dtype = object if info.dtype == "str" else np.dtype(info.dtype)
            if not blocks:
                out[field] = da.zeros((0, *info.shape), dtype=dtype)
                continue
            out[field] = da.Array(graph, name, chunks, dtype=dtype)
        if self.indices is not None:  # a view: the selected samples, in order
            out = {name: array[self.indices] for name, array in out.items()}
        return out


def _read_block(source: ChunkSource, segment: int, field: str, chunk: int, rows: int) -> np.ndarray:
    return source.get(segment, field, chunk)[:rows]


def open_dataset(
    url: str | os.PathLike,
    *,
    cache: Cache | None = None,
    storage_options: dict | None = None,
    version: int | None = None,
) -> Dataset:
    """Open the lake at ``url`` (local path or fsspec URL) at its latest (or a given) version.

    ``cache`` sets the memory and disk tiers (default `lakeio.Cache()`: memory only).
    """
    loc = Location.of(url, storage_options)
    return Dataset(loc, read_manifest(loc, version), cache)


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
