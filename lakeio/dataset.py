"""`open_dataset`: a committed lake snapshot as a sequence of samples and as dask arrays.

Reads go chunk by chunk through `ChunkReader` (raw bytes → checksum → decode), the seam where
the cache tiers and the streaming loader plug in.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import numpy as np

from lakeio.errors import CorruptChunkError
from lakeio.format.chunks import decode_chunk
from lakeio.format.codecs import parse_codec
from lakeio.format.index import SampleIndex
from lakeio.format.location import Location
from lakeio.format.manifest import Manifest, read_manifest
from lakeio.format.segment import chunk_key, segment_key


class ChunkReader:
    """Reads and decodes whole chunks of a lake's fields, keeping the last few decoded."""

    def __init__(self, loc: Location, manifest: Manifest, keep: int = 4) -> None:
        self.loc = loc
        self.manifest = manifest
        self._decoded: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._keep = keep

    def key(self, segment: int, field: str, chunk: int) -> str:
        info = self.manifest.fields[field]
        return chunk_key(self.manifest.segments[segment].id, field, chunk, 1 + len(info.shape))

    def read(self, segment: int, field: str, chunk: int) -> np.ndarray:
        """The decoded chunk (full chunk shape; rows past the segment's end are padding)."""
        slot = (segment, field, chunk)
        if slot in self._decoded:
            self._decoded.move_to_end(slot)
            return self._decoded[slot]
        array = self.fetch(segment, field, chunk)
        self._decoded[slot] = array
        while len(self._decoded) > self._keep:
            self._decoded.popitem(last=False)
        return array

    def fetch(self, segment: int, field: str, chunk: int) -> np.ndarray:
        info = self.manifest.fields[field]
        key = self.key(segment, field, chunk)
        if info.dtype == "str":
            return self._read_text(segment, field, chunk, key)
        try:
            raw = self.loc.read_bytes(key)
        except FileNotFoundError:
            raise CorruptChunkError(key, "missing from the store") from None
        shape = (self.manifest.chunk_samples, *info.shape)
        return decode_chunk(raw, parse_codec(info.codec), shape, info.dtype, key)

    def _read_text(self, segment: int, field: str, chunk: int, key: str) -> np.ndarray:
        import zarr

        if not self.loc.exists(key):
            raise CorruptChunkError(key, "missing from the store")
        seg = self.manifest.segments[segment]
        array = zarr.open_array(self.loc.zarr_store(), path=f"{seg.key}/{field}", mode="r")
        start = chunk * self.manifest.chunk_samples
        try:
            return np.asarray(array[start : min(start + self.manifest.chunk_samples, seg.samples)])
        except ValueError as exc:  # zarr's checksum failure names no chunk
            raise CorruptChunkError(key, str(exc)) from None


class Dataset:
    """A read-only snapshot of a lake: ``len(ds)``, ``ds[i]`` → (image, label), ``ds.to_dask()``."""

    def __init__(self, loc: Location, manifest: Manifest) -> None:
        self.loc = loc
        self.manifest = manifest
        self.index = SampleIndex([s.samples for s in manifest.segments], manifest.chunk_samples)
        self.reader = ChunkReader(loc, manifest)

    def __repr__(self) -> str:
        shape = self.manifest.fields["images"].shape if "images" in self.fields else ()
        return (
            f"<lakeio.Dataset {self.loc.describe()} v{self.version}: {len(self)} samples, "
            f"images {shape}, {len(self.classes)} classes>"
        )

    def __len__(self) -> int:
        return len(self.index)

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.manifest.fields)

    def _position(self, i: int) -> int:
        n = len(self)
        index = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= index < n:
            raise IndexError(f"sample {i} is out of range for a lake of {n} samples")
        return index

    def sample(self, i: int, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Sample ``i`` as a dict of field → value (arrays are copies the caller owns)."""
        segment, chunk, row = self.index.locate(self._position(i))
        out = {}
        for field in fields or self.fields:
            value = self.reader.read(segment, field, chunk)[row]
            out[field] = value.copy() if isinstance(value, np.ndarray) else _scalar(value)
        return out

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        item = self.sample(i, ("images", "labels"))
        return item["images"], int(item["labels"])

    def to_dask(self) -> dict[str, Any]:
        """Every field as one dask array over the whole lake (segments concatenated, chunks kept)."""
        import dask.array as da

        store = self.loc.zarr_store()
        parts: dict[str, list] = {name: [] for name in self.fields}
        for seg in self.manifest.segments:
            if seg.samples == 0:
                continue
            for name in self.fields:
                parts[name].append(
                    da.from_zarr(
                        store, component=f"{segment_key(seg.id)}/{name}", inline_array=True
                    )
                )
        out = {}
        for name, info in self.manifest.fields.items():
            if parts[name]:
                out[name] = da.concatenate(parts[name], axis=0)
            else:
                dtype = object if info.dtype == "str" else info.dtype
                out[name] = da.zeros((0, *info.shape), dtype=dtype)
        return out


def open_dataset(
    url: str | os.PathLike, *, storage_options: dict | None = None, version: int | None = None
) -> Dataset:
    """Open the lake at ``url`` (local path or fsspec URL) at its latest (or a given) version."""
    loc = Location.of(url, storage_options)
    return Dataset(loc, read_manifest(loc, version))


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
