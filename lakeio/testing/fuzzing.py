"""The "decode fuzz" reliability case: real JPEG and PNG files, mutated, through the ingest's
decode path.

Every mutated file must either decode into an (H, W, C) uint8 array of the requested size or
be refused with a `SourceError` naming that file (a line of the ingest report), within a time
limit: never another exception, a wrong array, or a hang. A mutation is plain data
(``(kind, where, value)``), so hypothesis can generate and shrink it and the soak can draw it
from a seeded generator; both apply it with `mutate`.
"""

from __future__ import annotations

import io
import os
import random
import struct
import time
import zlib
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import numpy as np
from PIL import Image

from lakeio.errors import SourceError
from lakeio.ingest.decode import DecodeOptions, decode_image
from lakeio.testing.tally import Tally

KINDS = ("flip", "truncate", "insert", "overwrite", "dimensions", "marker", "fix-crc")
Mutation = tuple[str, int, int]  # (kind, where, value); see `mutate`
# Colour mode and save options of the seed files: the decoders' main paths (simplejpeg for plain
# JPEGs, Pillow for EXIF-rotated ones, grey, palette and alpha PNGs).
VARIANTS = (
    ("jpg", "RGB", {"quality": 85}),
    ("jpg", "RGB", {"quality": 75, "progressive": True}),
    ("jpg", "L", {"quality": 85}),
    ("jpg", "RGB", {"quality": 85, "orientation": 6}),
    ("png", "RGB", {}),
    ("png", "L", {}),
    ("png", "P", {}),
    ("png", "RGBA", {}),
)


def seed_files(size: tuple[int, int] = (48, 64), seed: int = 0) -> list[tuple[str, bytes]]:
    """One real file per `VARIANTS` entry, each a different photo crop: (name, bytes)."""
    from lakeio.testing.images import photo_crops

    crops = [pixels for pixels, _ in photo_crops(len(VARIANTS), size, seed=seed)]
    files = []
    for i, ((fmt, mode, options), pixels) in enumerate(zip(VARIANTS, crops, strict=True)):
        image = Image.fromarray(pixels).convert(mode)
        options = dict(options)
        if "orientation" in options:
            exif = Image.Exif()
            exif[0x0112] = options.pop("orientation")
            options["exif"] = exif.tobytes()
        buffer = io.BytesIO()
        image.save(buffer, "JPEG" if fmt == "jpg" else "PNG", **options)
        files.append((f"{i}-{mode.lower()}.{fmt}", buffer.getvalue()))
    return files


def mutate(data: bytes, mutation: Mutation) -> bytes:
    """``data`` changed as ``mutation`` says; ``where`` and ``value`` are any non-negative ints.

    flip: XOR one byte; truncate: cut the tail; insert: junk bytes; overwrite: 4 bytes in the
    header; dimensions: width and height in the JPEG frame or PNG IHDR (CRC kept valid, so the
    decoder believes them); marker: a stray JPEG marker; fix-crc: make every PNG chunk's CRC
    right again, so damage inside a chunk reaches the decoder instead of the CRC check.
    """
    kind, where, value = mutation
    out = bytearray(data)
    if not out:
        return b""
    if kind == "flip":
        out[where % len(out)] ^= value % 255 + 1
    elif kind == "truncate":
        del out[where % len(out) :]
    elif kind == "insert":
        at = where % (len(out) + 1)
        out[at:at] = random.Random(value).randbytes(value % 64 + 1)
    elif kind == "overwrite":
        at = where % min(len(out), 256)
        out[at : at + 4] = (value % 2**32).to_bytes(4, "big")
    elif kind == "dimensions":
        _set_dimensions(out, where, value)
    elif kind == "marker":
        at = where % (len(out) + 1)
        out[at:at] = bytes([0xFF, value % 256, (value >> 8) % 256, (value >> 16) % 256])
    elif kind == "fix-crc":
        _fix_png_crcs(out)
    else:
        raise ValueError(f"unknown mutation {kind!r}; expected one of {KINDS}")
    return bytes(out)


def _set_dimensions(out: bytearray, width: int, height: int) -> None:
    if out[:8] == b"\x89PNG\r\n\x1a\n" and len(out) >= 33:
        struct.pack_into(">II", out, 16, width % 2**32, height % 2**32)
        struct.pack_into(">I", out, 29, zlib.crc32(bytes(out[12:29])))
        return
    for marker in (b"\xff\xc0", b"\xff\xc2"):  # baseline or progressive frame header
        at = out.find(marker)
        if at >= 0 and at + 9 <= len(out):
            struct.pack_into(">HH", out, at + 5, height % 2**16, width % 2**16)
            return


def _fix_png_crcs(out: bytearray) -> None:
    at = 8
    while out[:8] == b"\x89PNG\r\n\x1a\n" and at + 12 <= len(out):
        (length,) = struct.unpack_from(">I", out, at)
        end = at + 8 + length
        if end + 4 > len(out):
            return
        struct.pack_into(">I", out, end, zlib.crc32(bytes(out[at + 4 : end])))
        at = end + 4


def random_mutations(rng: random.Random, most: int = 3) -> list[Mutation]:
    """1..``most`` mutations drawn from ``rng`` (the soak's stand-in for hypothesis)."""
    count = rng.randint(1, most)
    return [(rng.choice(KINDS), rng.getrandbits(32), rng.getrandbits(32)) for _ in range(count)]


def apply_all(data: bytes, mutations: list[Mutation]) -> bytes:
    return reduce(mutate, mutations, data)


@dataclass(frozen=True)
class DecodeOutcome:
    """What the decode path made of one file: ``decoded``, ``rejected`` or ``lost``."""

    kind: str
    seconds: float
    detail: str = ""


def decode_outcome(
    data: bytes, path: str, opts: DecodeOptions, time_limit: float = 2.0
) -> DecodeOutcome:
    """Run the ingest's decode of one file (``opts.size`` must be set) and judge the result:
    a right-sized uint8 array, or a `SourceError` naming ``path``, in under ``time_limit``."""
    expected = (*opts.size, opts.channels)
    started = time.perf_counter()
    try:
        pixels = decode_image(data, path, opts, np.empty(expected, np.uint8))
    except SourceError as exc:
        kind = "rejected" if exc.path == path else "lost"
        detail = exc.reason if exc.path == path else f"SourceError names {exc.path!r}"
    except Exception as exc:  # what a fuzzed file must never cause
        kind, detail = "lost", f"{type(exc).__name__}: {exc}"
    else:
        good = isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8
        kind = "decoded" if good and pixels.shape == expected else "lost"
        detail = "" if kind == "decoded" else f"returned {getattr(pixels, 'shape', pixels)!r}"
    seconds = time.perf_counter() - started
    if seconds > time_limit:
        kind, detail = "lost", f"took {seconds:.2f} s (limit {time_limit} s); {detail}"
    return DecodeOutcome(kind, seconds, detail)


def run_decode_fuzz(
    trials: int, seed: int = 0, time_limit: float = 2.0, size: tuple[int, int] = (32, 32)
) -> Tally:
    """``trials`` mutated files through the decode path. injected: mutated files; detected:
    refused with a `SourceError` naming the file; recovered: decoded to the right array or
    refused (the ingest goes on, the file in its report); lost: anything else."""
    rng = random.Random(seed)
    files = seed_files(seed=seed)
    opts = DecodeOptions(size=size)
    tally = Tally("decode fuzz")
    for trial in range(trials):
        name, data = rng.choice(files)
        mutations = random_mutations(rng)
        path = f"fuzz/{trial:06d}-{name}"
        outcome = decode_outcome(apply_all(data, mutations), path, opts, time_limit)
        tally.trials += 1
        tally.injected += 1
        tally.detected += outcome.kind == "rejected"
        tally.recovered += outcome.kind != "lost"
        if outcome.kind == "lost":
            tally.lost += 1
            tally.notes.append(f"{path} {mutations}: {outcome.detail}")
    return tally


def write_mutated_folder(root: str | os.PathLike, count: int, seed: int = 0) -> dict[str, bytes]:
    """An ImageFolder tree (classes ``jpg`` and ``png``) of ``count`` mutated seed files, the
    first two left intact so a lake always has samples; returns {relative path: bytes}."""
    rng = random.Random(seed)
    files = seed_files(seed=seed)
    written = {}
    for i in range(count):
        name, data = files[i % len(files)]
        if i >= 2:
            data = apply_all(data, random_mutations(rng))
        rel = f"{name.rsplit('.', 1)[1]}/{i:04d}-{name}"
        target = Path(root, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written[rel] = data
    return written
