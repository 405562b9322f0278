"""Decoding one stored chunk: checksum, decompress, reshape — the unit every read is made of.

lakeio decodes chunk bytes itself (rather than through zarr's array indexing) so that the cache
tiers can hold raw bytes, a failed checksum names its chunk key, and one decode serves many
samples. The codecs are exactly those `lakeio.format.codecs` writes.
"""

from __future__ import annotations

import threading

import numpy as np

from lakeio.errors import CorruptChunkError
from lakeio.format.codecs import CodecSpec
from lakeio.format.pages import own_pages


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
        if codec.name in ("zstd", "predict-zstd"):
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
    predicted = codec.predicts(dtype, chunk_shape[1:])
    # residual planes go to a scratch buffer of this thread's, the images they give to ``out``
    target = _scratch(expected) if predicted else out
    data = decompress(verify_checksum(raw, key), codec, key, target)
    if len(data) != expected:
        raise CorruptChunkError(key, f"decodes to {len(data)} bytes, expected {expected}")
    if not predicted:
        return np.frombuffer(data, dtype=dtype).reshape(chunk_shape)
    return _undo_prediction(data, tuple(chunk_shape), dtype, out)


def _undo_prediction(planes_bytes, chunk_shape: tuple[int, ...], dtype, out) -> np.ndarray:
    """The images of a ``predict-zstd`` chunk from its decompressed residual planes, into the
    chunk's own pages ``out`` where given (`lakeio.format.predict`)."""
    from lakeio.format.predict import planes_shape, unpredict

    planes = np.frombuffer(planes_bytes, dtype=dtype).reshape(planes_shape(chunk_shape))
    images = np.frombuffer(out, dtype=dtype) if out is not None else np.empty(planes.size, dtype)
    return unpredict(planes, images.reshape(chunk_shape))


_scratch_buffers = threading.local()


def _scratch(nbytes: int) -> np.ndarray:
    """A writable uint8 buffer of ``nbytes``, kept per thread (decoding is per thread: a fresh
    4 MB buffer per chunk would cost a thousand page faults each time)."""
    buffer = getattr(_scratch_buffers, "buffer", None)
    if buffer is None or len(buffer) < nbytes:
        buffer = _scratch_buffers.buffer = np.empty(nbytes, np.uint8)
    return buffer[:nbytes]


OWN_PAGES_FROM = 1 << 20  # decoded chunks this large get mappings of their own (`own_pages`)


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
    if codec.name in ("zstd", "predict-zstd"):
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
    if codec.predicts(data.dtype, data.shape[1:]):
        from lakeio.format.predict import predict

        data = predict(data)
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
