"""``predict-zstd``: the lakeio.predict codec (issue 15): exact, checked, readable by zarr-python."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lakeio
from lakeio.errors import CorruptChunkError
from lakeio.format.chunks import decode_chunk, encode_chunk
from lakeio.format.codecs import parse_codec
from lakeio.format.predict import PredictCodec, predict, unpredict


@st.composite
def image_chunks(draw):
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    n, height, width = draw(st.integers(1, 4)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    channels = draw(st.sampled_from([None, 1, 3, 4]))
    shape = (n, height, width) if channels is None else (n, height, width, channels)
    top = np.iinfo(dtype).max
    kind = draw(st.sampled_from(["random", "extremes", "smooth"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "random":
        chunk = rng.integers(0, top, shape, endpoint=True)
    elif kind == "extremes":  # 0 next to the maximum: every residual wraps
        chunk = rng.choice([0, 1, top - 1, top], shape)
    else:
        chunk = np.cumsum(rng.integers(-3, 4, shape), axis=1) % (top + 1)
    return chunk.astype(dtype)


@settings(max_examples=150, deadline=None)
@given(chunk=image_chunks(), colour=st.booleans())
def test_the_inverse_gives_back_every_image_bit_for_bit(chunk, colour):
    planes = predict(chunk, colour)
    assert planes.dtype == chunk.dtype
    assert planes.shape == (
        chunk.shape[0],
        chunk.shape[3] if chunk.ndim == 4 else 1,
        *chunk.shape[1:3],
    )
    out = np.empty_like(chunk)
    np.testing.assert_array_equal(unpredict(planes.copy(), out, colour), chunk)


@settings(max_examples=60, deadline=None)
@given(chunk=image_chunks(), level=st.sampled_from([1, 3]))
def test_a_stored_chunk_decodes_exactly_and_a_changed_byte_is_caught(chunk, level):
    codec = parse_codec(f"predict-zstd:{level}")
    raw = b"".join(bytes(part) for part in encode_chunk(chunk, len(chunk), codec))
    np.testing.assert_array_equal(decode_chunk(raw, codec, chunk.shape, chunk.dtype, "k"), chunk)
    damaged = bytearray(raw)
    damaged[len(raw) // 2] ^= 0x10
    with pytest.raises(CorruptChunkError, match="checksum mismatch"):  # never decoded into garbage
        decode_chunk(bytes(damaged), codec, chunk.shape, chunk.dtype, "k")


def test_fields_that_are_not_images_are_zstd_alone():
    labels = np.arange(64, dtype=np.int64) % 7
    predicted = encode_chunk(labels, 64, parse_codec("predict-zstd:3"))
    assert predicted[0] == bytes(encode_chunk(labels, 64, parse_codec("zstd:3"))[0])
    raw = b"".join(bytes(p) for p in predicted)
    np.testing.assert_array_equal(
        decode_chunk(raw, parse_codec("predict-zstd:3"), (64,), "int64", "k"), labels
    )
    assert str(parse_codec("predict-zstd")) == "predict-zstd:1"


def test_zarr_python_writes_and_reads_with_the_codec(tmp_path):
    import zarr

    images = np.random.default_rng(3).integers(0, 256, (10, 6, 5, 3), dtype=np.uint8)
    array = zarr.create_array(
        tmp_path / "a", shape=images.shape, chunks=(4, 6, 5, 3), dtype="uint8",
        filters=[PredictCodec()], compressors=parse_codec("predict-zstd").compressors(),
    )  # fmt: skip
    array[:] = images
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a", mode="r")[:], images)
    with pytest.raises(ValueError, match="predicts images"):
        zarr.create_array(
            tmp_path / "b", shape=(8,), chunks=(4,), dtype="int64", filters=[PredictCodec()]
        )


def _size(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)


def test_a_predicted_lake_is_smaller_reads_exactly_and_opens_in_plain_zarr(tmp_path):
    """Photo crops: the lake in lakeio's loader equal to the images, well under the lz4 lake's
    size, and read by a zarr-python process that never imports lakeio (the codec found
    through zarr's entry points, as any environment with lakeio installed has it)."""
    from lakeio.testing.images import photo_crop_arrays

    images, labels = photo_crop_arrays(300, (64, 64))
    for codec in ("predict-zstd", "lz4"):
        lakeio.ingest(
            images, tmp_path / codec, labels=labels, codec=codec, progress=False, echo=None
        )
    assert _size(tmp_path / "lz4") > 1.4 * _size(tmp_path / "predict-zstd")
    ds = lakeio.open_dataset(tmp_path / "predict-zstd")
    loader = ds.loader(32, seed=1)
    for (x, y), batch in zip(loader, loader.batches(), strict=True):
        np.testing.assert_array_equal(x.numpy(), images[batch])
        np.testing.assert_array_equal(y.numpy(), labels[batch])
    np.save(tmp_path / "images.npy", images)
    segments = [f"{tmp_path}/predict-zstd/segments/{s.id}/images" for s in ds.manifest.segments]
    counts = [s.samples for s in ds.manifest.segments]
    code = (
        "import sys, json, numpy as np, zarr\n"
        "paths, counts, expected = json.loads(sys.argv[1])\n"
        "assert 'lakeio' not in sys.modules  # (zarr loads it through the entry point)\n"
        "rows = [zarr.open_array(p, mode='r')[:n] for p, n in zip(paths, counts)]\n"
        "print(np.array_equal(np.concatenate(rows), np.load(expected)))\n"
    )
    import json

    args = json.dumps([segments, counts, str(tmp_path / "images.npy")])
    out = subprocess.run(
        [sys.executable, "-c", code, args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_big_endian_arrays_and_bare_metadata_read_back(tmp_path):
    """A zarr array stored big-endian through the codec reads back; the codec's name alone
    (no configuration) means its defaults; an unknown setting is named."""
    import zarr
    from zarr.codecs import BytesCodec

    images = np.random.default_rng(4).integers(0, 65536, (6, 5, 4, 3), dtype=np.uint16)
    array = zarr.create_array(
        tmp_path / "big", shape=images.shape, chunks=(3, 5, 4, 3), dtype="uint16",
        filters=[PredictCodec()], serializer=BytesCodec(endian="big"),
    )  # fmt: skip
    array[:] = images
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "big", mode="r")[:], images)
    assert PredictCodec.from_dict({"name": "lakeio.predict"}) == PredictCodec()
    with pytest.raises(ValueError, match="unknown configuration level"):
        PredictCodec.from_dict({"name": "lakeio.predict", "configuration": {"level": 3}})


def test_predicting_leaves_the_callers_images_as_they_were():
    for shape in ((2, 4, 5), (2, 4, 5, 1), (2, 4, 5, 3)):
        chunk = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
        before = chunk.copy()
        predict(chunk)
        np.testing.assert_array_equal(chunk, before)
