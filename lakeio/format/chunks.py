"""Decoding one stored chunk: checksum, decompress, reshape — the unit every read is made of.

lakeio decodes chunk bytes itself (rather than through zarr's array indexing) so that the cache
tiers can hold raw bytes, a failed checksum names its chunk key, and one decode serves many
samples. The codecs are exactly those `lakeio.format.codecs` writes.
"""

from __future__ import annotations

import contextlib
import mmap

import numpy as np

from lakeio.errors import CorruptChunkError
from lakeio.format.codecs import CodecSpec


def _crc32c(data) -> int:
    import google_crc32c

    # google_crc32c takes bytes and contiguous arrays as they are (no copy), not memoryviews
    return google_crc32c.value(_byte_view(data))


def crc32c_hex(data: bytes) -> str:
    """CRC-32C of ``data`` as 8 hex digits (the checksum lakeio puts in its JSON documents)."""
    return f"{_crc32c(data):08x}"


def _byte_view(raw) -> bytes | np.ndarray:
    """``raw`` as bytes or a flat contiguous uint8 array, so lengths and slices count bytes."""
    if isinstance(raw, bytes):
        return raw
    array = np.asarray(memoryview(raw) if not isinstance(raw, np.ndarray) else raw)
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


# CRC-32C of any message followed by its own CRC (little-endian) is this constant, so a whole
# stored chunk is checked in one pass without copying its payload out first.
_CRC32C_RESIDUE = 0x48674BC7


def verify_checksum(raw: bytes | np.ndarray | memoryview, key: str) -> memoryview:
    """The payload of a crc32c-suffixed chunk (a view, no copy); `CorruptChunkError` on mismatch."""
    raw = _byte_view(raw)
    if len(raw) < 4:
        raise CorruptChunkError(key, f"only {len(raw)} bytes, shorter than its checksum")
    if _crc32c(raw) != _CRC32C_RESIDUE:
        stored = int.from_bytes(bytes(raw[-4:]), "little")
        computed = _crc32c(raw[:-4])
        raise CorruptChunkError(
            key, f"checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )
    return memoryview(raw)[:-4]


def decompress(
    payload: bytes | memoryview, codec: CodecSpec, key: str, out: np.ndarray | None = None
) -> bytes | memoryview | np.ndarray:
    """Undo the compressor of ``codec`` (the checksum already removed), into ``out`` if given
    (a uint8 array of the decoded size; "none" returns the payload itself)."""
    try:
        if codec.name == "none":
            return payload
        if codec.name == "lz4" or codec.name.startswith("blosc-"):
            from numcodecs import blosc

            return blosc.decompress(payload, out)
        if codec.name == "zstd":
            from numcodecs import Zstd

            return Zstd().decode(payload, out)
        if codec.name == "gzip":
            from numcodecs import GZip

            return GZip().decode(payload, out)
    except (RuntimeError, ValueError, OSError) as exc:
        raise CorruptChunkError(key, f"{codec} does not decode: {exc}") from None
    raise CorruptChunkError(key, f"unknown codec {codec}")


def decode_chunk(
    raw: bytes, codec: CodecSpec, chunk_shape: tuple[int, ...], dtype: np.dtype | str, key: str
) -> np.ndarray:
    """A stored numeric chunk as an ndarray of ``chunk_shape``, decoded into pages of its own
    where it is large (`own_pages`)."""
    dtype = np.dtype(dtype).newbyteorder("<")
    expected = int(np.prod(chunk_shape)) * dtype.itemsize
    out = own_pages(expected) if codec.name != "none" and expected >= OWN_PAGES_FROM else None
    data = decompress(verify_checksum(raw, key), codec, key, out)
    if len(data) != expected:
        raise CorruptChunkError(key, f"decodes to {len(data)} bytes, expected {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(chunk_shape)


OWN_PAGES_FROM = 1 << 20  # decoded chunks this large get pages of their own
HUGE_PAGE = 2 << 20  # a transparent huge page on x86-64 and most arm64 kernels
HUGE_SLACK = 16  # a chunk may take up to 1/16 more memory to end on a huge page


def own_pages(nbytes: int) -> np.ndarray:
    """A uint8 array of ``nbytes`` in an anonymous mapping of its own, unmapped when the array
    goes. Decoded chunks come and go all epoch (the memory tier evicts, the prefetcher lets
    go); from malloc, glibc's moving mmap threshold and per-thread heaps kept what they freed,
    and a process reading a lake 4x its memory budget grew by 201 MiB for a 59 MiB budget,
    against 136 MiB with chunks in pages of their own (`benchmarks/memory_budget.py`; the rest
    is batches in flight and the heaps' other blocks, see `lakeio.loader.allocator`).

    Fresh pages cost a fault each: filling 4 MiB of 4 KiB pages ran at 1.4–2.1 GB/s here,
    slower than lz4 decodes. Where the kernel allows (Linux, transparent huge pages in
    ``madvise`` or ``always`` mode), the array starts on a 2 MiB boundary and its whole 2 MiB
    spans are huge pages (16–19 GB/s); a chunk just under a multiple of 2 MiB (a 64×64 chunk
    is 2,088,960 bytes) is rounded up when that costs at most 1/16 of it.
    """
    private = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}  # not Windows
    huge = _huge_span(nbytes)
    if not huge:
        return np.frombuffer(mmap.mmap(-1, nbytes, **private), dtype=np.uint8)
    region = mmap.mmap(-1, max(nbytes, huge) + HUGE_PAGE, **private)
    start = -np.frombuffer(region, dtype=np.uint8, count=1).ctypes.data % HUGE_PAGE
    with contextlib.suppress(OSError):  # a kernel without transparent huge pages: small pages
        region.madvise(mmap.MADV_HUGEPAGE, start, huge)
    return np.frombuffer(region, dtype=np.uint8, count=nbytes, offset=start)


def _huge_span(nbytes: int) -> int:
    """How many bytes from the start of a chunk of ``nbytes`` to back with huge pages (0: none)."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return 0
    whole = nbytes // HUGE_PAGE * HUGE_PAGE
    rounded_up = whole + HUGE_PAGE
    return rounded_up if rounded_up - nbytes <= nbytes // HUGE_SLACK else whole


def compress(data: np.ndarray, codec: CodecSpec) -> bytes | memoryview:
    """Apply the compressor of ``codec`` to a C-contiguous little-endian array's bytes."""
    if codec.name == "none":
        return memoryview(data).cast("B")  # the array's own bytes: no copy
    if codec.name == "lz4" or codec.name.startswith("blosc-"):
        from numcodecs import Blosc

        cname = "lz4" if codec.name == "lz4" else codec.name.split("-", 1)[1]
        shuffle = {
            "noshuffle": Blosc.NOSHUFFLE,
            "shuffle": Blosc.SHUFFLE,
            "bitshuffle": Blosc.BITSHUFFLE,
        }
        return bytes(
            Blosc(cname=cname, clevel=codec.level, shuffle=shuffle[codec.shuffle]).encode(data)
        )
    if codec.name == "zstd":
        from numcodecs import Zstd

        return Zstd(level=codec.level).encode(data)
    if codec.name == "gzip":
        from numcodecs import GZip

        return GZip(level=codec.level).encode(data)
    raise ValueError(f"unknown codec {codec}")


def encode_chunk(rows: np.ndarray, chunk_samples: int, codec: CodecSpec) -> list[bytes]:
    """One stored chunk exactly as zarr writes it: rows zero-padded to the chunk, compressed, crc32c."""
    if len(rows) < chunk_samples:
        padded = np.zeros((chunk_samples, *rows.shape[1:]), dtype=rows.dtype)
        padded[: len(rows)] = rows
        rows = padded
    data = np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("<"))
    payload = compress(data, codec)
    return [payload, _crc32c(payload).to_bytes(4, "little")]  # parts: no 4 MB concatenation


def encode_text_chunk(rows: np.ndarray, chunk_samples: int, codec: CodecSpec) -> list[bytes]:
    """A chunk of strings as zarr's ``vlen-utf8`` codec stores it, padded with empty strings."""
    from numcodecs import VLenUTF8

    values = np.full(chunk_samples, "", dtype=object)
    values[: len(rows)] = [str(v) for v in rows]
    payload = compress(np.frombuffer(VLenUTF8().encode(values), dtype=np.uint8), codec)
    return [payload, _crc32c(payload).to_bytes(4, "little")]


def decode_text_chunk(raw: bytes, codec: CodecSpec, chunk_samples: int, key: str) -> np.ndarray:
    """A stored vlen-utf8 chunk as an object array of ``chunk_samples`` strings."""
    from numcodecs import VLenUTF8

    data = decompress(verify_checksum(raw, key), codec, key)
    try:
        values = VLenUTF8().decode(data)
    except (ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise CorruptChunkError(key, f"strings do not decode: {exc}") from None
    if len(values) != chunk_samples:
        raise CorruptChunkError(key, f"holds {len(values)} strings, expected {chunk_samples}")
    return values
