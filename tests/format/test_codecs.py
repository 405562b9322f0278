import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lakeio.errors import CodecError, CorruptChunkError
from lakeio.format.chunks import decode_chunk
from lakeio.format.codecs import CODECS, parse_codec

SPECS = [
    "none",
    "lz4",
    "lz4:9",
    "zstd",
    "zstd:19",
    "gzip:1",
    "blosc-lz4",
    "blosc-lz4:5:shuffle",
    "blosc-lz4:9:bitshuffle",
    "blosc-zstd",
    "blosc-zstd:1:noshuffle",
    "blosc-zstd:5:bitshuffle",
]


def _write(tmp_path, spec, data, chunk):
    array = zarr.create_array(
        zarr.storage.LocalStore(tmp_path),
        name="a",
        shape=data.shape,
        chunks=(chunk, *data.shape[1:]),
        dtype=data.dtype,
        compressors=parse_codec(spec).compressors(),
        config={"write_empty_chunks": True},
    )
    array[...] = data
    return array


@pytest.mark.parametrize("spec", SPECS)
def test_every_codec_round_trips_bit_exactly_through_zarr_and_lakeio(tmp_path, spec):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    data[3:6] = 0  # an all-zero stretch must still be stored, not left to the fill value
    _write(tmp_path, spec, data, chunk=4)
    reopened = zarr.open_array(zarr.storage.LocalStore(tmp_path), path="a", mode="r")
    np.testing.assert_array_equal(reopened[...], data)
    raw = (tmp_path / "a" / "c" / "1" / "0" / "0" / "0").read_bytes()
    chunk = decode_chunk(raw, parse_codec(spec), (4, 8, 8, 3), "uint8", "a/c/1/0/0/0")
    np.testing.assert_array_equal(chunk, data[4:8])


@settings(max_examples=25, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    data=arrays(np.int64, st.integers(1, 40), elements=st.integers(-(2**40), 2**40)),
)
def test_codecs_round_trip_arbitrary_integer_columns(tmp_path_factory, spec, data):
    path = tmp_path_factory.mktemp("codec")
    _write(path, spec, data, chunk=64)
    raw = (path / "a" / "c" / "0").read_bytes()
    np.testing.assert_array_equal(
        decode_chunk(raw, parse_codec(spec), (64,), "int64", "k")[: len(data)], data
    )


def test_flipped_byte_is_reported_with_the_chunk_key(tmp_path):
    data = np.arange(64, dtype=np.uint8).reshape(4, 4, 4)
    _write(tmp_path, "zstd", data, chunk=4)
    raw = bytearray((tmp_path / "a" / "c" / "0" / "0" / "0").read_bytes())
    raw[len(raw) // 2] ^= 0x40
    with pytest.raises(CorruptChunkError, match=r"segments/x/images/c/0/0/0: checksum mismatch"):
        decode_chunk(
            bytes(raw), parse_codec("zstd"), (4, 4, 4), "uint8", "segments/x/images/c/0/0/0"
        )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("snappy", "unknown codec 'snappy'; valid: none, lz4"),
        ("zstd:99", "level 99 is outside 1..22"),
        ("zstd:fast", "level 'fast' is not an integer"),
        ("blosc-lz4:5:bytes", "shuffle 'bytes' is not one of noshuffle, shuffle, bitshuffle"),
        ("lz4:1:shuffle", "too many ':' parts; expected lz4[:LEVEL]"),
        ("none:3", "too many ':' parts"),
        ("", "non-empty"),
    ],
)
def test_bad_spec_is_a_clear_error_listing_valid_forms(spec, message):
    with pytest.raises(CodecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_codec(spec)


@given(st.sampled_from(SPECS))
def test_canonical_form_parses_back_to_the_same_spec(spec):
    parsed = parse_codec(spec)
    assert parse_codec(str(parsed)) == parsed
    assert parsed.name in CODECS


@pytest.mark.parametrize("spec", [s for s in SPECS if s != "none"])
def test_a_large_chunk_is_decoded_into_pages_of_its_own(tmp_path, spec):
    """Pages the kernel takes back when the chunk goes (`own_pages`), not a malloc heap's."""
    import mmap

    data = np.random.default_rng(1).integers(0, 256, size=(2, 512, 512, 3), dtype=np.uint8)
    _write(tmp_path, spec, data, chunk=2)  # one 1.5 MiB chunk
    raw = (tmp_path / "a" / "c" / "0" / "0" / "0" / "0").read_bytes()
    chunk = decode_chunk(raw, parse_codec(spec), data.shape, "uint8", "a/c/0/0/0/0")
    np.testing.assert_array_equal(chunk, data)
    base = chunk
    while isinstance(base, (np.ndarray, memoryview)):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    assert isinstance(base, mmap.mmap)


@settings(max_examples=200, deadline=None)
@given(st.integers(1 << 20, 64 << 20))
def test_huge_pages_cover_whole_2mib_spans_and_cost_at_most_a_sixteenth(nbytes):
    from lakeio.format.chunks import HUGE_PAGE, _huge_span

    span = _huge_span(nbytes)
    assert span % HUGE_PAGE == 0
    assert nbytes - HUGE_PAGE < span <= nbytes + nbytes // 16
    if span > nbytes:  # rounded up: only when the chunk ends close under a boundary
        assert span - nbytes <= nbytes // 16


@pytest.mark.parametrize("nbytes", [2_088_960, 4 << 20, 3_000_000, 1_500_000])
def test_own_pages_start_on_a_huge_page_and_hold_what_is_written(nbytes):
    """A 64x64 chunk (2,088,960 bytes) sits in one 2 MiB huge page (one fault, not 510);
    the array is exactly the size asked, zeroed, writable, and outlives nothing it needs."""
    import mmap

    from lakeio.format.chunks import HUGE_PAGE, _huge_span, own_pages

    out = own_pages(nbytes)
    assert out.shape == (nbytes,) and out.dtype == np.uint8 and not out.any()
    if hasattr(mmap, "MADV_HUGEPAGE") and _huge_span(nbytes):
        assert out.ctypes.data % HUGE_PAGE == 0
    data = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8)
    out[:] = data
    view = out[nbytes // 2 :]
    del out
    np.testing.assert_array_equal(view, data[nbytes // 2 :])
