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


@pytest.fixture
def no_memory_tiers(monkeypatch):
    """Spares as in a process with no memory tier: other tests' tiers may still be alive."""
    from lakeio.format import pages

    monkeypatch.setattr(pages, "_rooms", {})


def test_a_chunks_mapping_is_reused_only_once_nothing_holds_the_chunk(no_memory_tiers):
    """A let-go chunk's mapping serves the next chunk of its size (no page faults), never while
    a view of the old chunk is alive, and the spares stay within `SPARE_BYTES`."""
    import gc

    from lakeio.format.pages import SPARE_BYTES, drop_spares, own_pages, spare_bytes

    drop_spares()
    n = 3 << 20
    first = own_pages(n)
    first[:] = 7
    address = first.ctypes.data
    view = first[n // 2 :]
    del first
    gc.collect()
    second = own_pages(n)  # the first is still held through its view: a new mapping
    assert second.ctypes.data != address and not np.shares_memory(second, view)
    second[:] = 9
    assert (view == 7).all()
    del view
    gc.collect()
    assert spare_bytes() == n
    third = own_pages(n)
    assert third.ctypes.data == address and spare_bytes() == 0
    held = [own_pages(n) for _ in range(12)]  # 36 MiB let go at once: only 16 MiB kept
    del held, second, third
    gc.collect()
    assert spare_bytes() <= SPARE_BYTES and spare_bytes() == SPARE_BYTES // n * n
    assert own_pages(n + 4096).ctypes.data not in {address}  # another size: a new mapping
    drop_spares()
    assert spare_bytes() == 0


@pytest.mark.parametrize("spec", ["lz4", "zstd", "blosc-zstd:5:bitshuffle"])
def test_chunks_decoded_into_reused_mappings_are_exact(tmp_path, spec):
    """Decoding one chunk into the mapping another chunk left: every byte is the new chunk's."""
    import gc

    from lakeio.format.pages import drop_spares, spare_bytes

    rng = np.random.default_rng(4)
    data = rng.integers(0, 256, size=(4, 512, 512, 3), dtype=np.uint8)
    data[2:] //= 16  # the second chunk compresses differently from the first
    _write(tmp_path, spec, data, chunk=2)  # two 1.5 MiB chunks
    raws = [(tmp_path / "a" / "c" / str(i) / "0" / "0" / "0").read_bytes() for i in (0, 1)]
    drop_spares()
    for round_ in range(4):
        i = round_ % 2
        key = f"a/c/{i}/0/0/0"
        chunk = decode_chunk(raws[i], parse_codec(spec), (2, 512, 512, 3), "uint8", key)
        np.testing.assert_array_equal(chunk, data[2 * i : 2 * i + 2])
        del chunk
        gc.collect()
        assert spare_bytes() == data[:2].nbytes  # the next round decodes into this mapping


def test_spares_of_a_size_no_longer_decoded_make_room_for_the_current_one(no_memory_tiers):
    import gc

    from lakeio.format.pages import SPARE_BYTES, drop_spares, own_pages, spare_bytes

    drop_spares()
    old = [own_pages(4 << 20) for _ in range(4)]  # fills the spares once let go
    del old
    gc.collect()
    assert spare_bytes() == SPARE_BYTES
    new = [own_pages(3 << 20) for _ in range(2)]  # none of the spares fits: new mappings
    addresses = {a.ctypes.data for a in new}
    del new
    gc.collect()
    assert spare_bytes() <= SPARE_BYTES
    assert {own_pages(3 << 20).ctypes.data for _ in range(1)} <= addresses
    drop_spares()


SPARES_IN_THE_ROOM = """
import gc
from lakeio.cache.memory import MemoryTier
from lakeio.format.pages import SPARE_BYTES, own_pages, spare_bytes, spare_limit

n = 4 << 20
tier = MemoryTier(40 << 20)
kept = [own_pages(n) for _ in range(2)]  # 8 MiB alive: up to 32 MiB of spares
assert spare_limit() == (40 << 20) - 2 * n, spare_limit()
window = [own_pages(n) for _ in range(9)]  # 36 MiB let go at once
addresses = {a.ctypes.data for a in window}
del window
gc.collect()
assert spare_bytes() == 8 * n, spare_bytes()  # all the room left: more than SPARE_BYTES
again = [own_pages(n) for _ in range(8)]
assert {a.ctypes.data for a in again} <= addresses and spare_bytes() == 0
del again
gc.collect()
assert spare_bytes() == 8 * n
tier.resize(24 << 20)  # 24 MiB less the 8 alive: 16 MiB of the spares stay
assert spare_bytes() == 4 * n, spare_bytes()
del kept
gc.collect()
assert spare_bytes() <= 24 << 20
tier.resize(40 << 20)
import numpy as np
assert tier.put("plain", np.zeros(20 << 20, np.uint8))  # what the tier holds is not room
assert spare_limit() == 20 << 20 and spare_bytes() <= 20 << 20, spare_limit()
tier.evict("plain")
assert spare_limit() == 40 << 20
del tier
gc.collect()
assert spare_bytes() <= SPARE_BYTES and spare_limit() == SPARE_BYTES, spare_bytes()
print("ok")
"""


def test_spares_fill_what_the_memory_tiers_leave_of_their_budgets():
    """A memory tier's budget less the chunks alive may hold spares (a shuffle window let go at
    once is decoded into again, not mapped afresh); never more, and back to `SPARE_BYTES`
    once the budget shrinks or its tier goes. In a fresh process: this one's other tests may
    hold tiers and chunks."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", SPARES_IN_THE_ROOM], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def _own_pages_in_child(n: int) -> None:
    import gc

    from lakeio.format.pages import own_pages, spare_bytes

    first = own_pages(n)
    del first
    gc.collect()
    assert spare_bytes() >= n
    own_pages(n)


def test_a_forked_child_gets_mappings_while_a_parent_thread_holds_the_spares_lock():
    """A DataLoader worker forked while another thread of the trainer held the lock."""
    import multiprocessing
    import threading

    from lakeio.format import pages

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with pages._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        child = multiprocessing.get_context("fork").Process(
            target=_own_pages_in_child, args=(2 << 20,)
        )
        child.start()
        child.join(30)
        assert child.exitcode == 0
    finally:
        release.set()
        holder.join()
