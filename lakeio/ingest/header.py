"""Image size and colour from the first bytes of a JPEG or PNG, without Pillow's full header parse.

The size probe of an ingest without ``--size`` touches every file; for small images Pillow's
`Image.open` costs about half as much as decoding them, so the common formats are read here
directly. Anything unusual (EXIF that may rotate, other formats) returns None and goes to Pillow.
"""

from __future__ import annotations

import struct

# Start-of-frame markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD9)}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GRAY_TYPES = (0, 4)  # greyscale, greyscale + alpha


def fast_header(data: bytes) -> tuple[int, int, bool] | None:
    """(width, height, grayscale) of a plain JPEG or PNG, or None to ask Pillow instead."""
    if data[:2] == b"\xff\xd8":
        return _jpeg(data)
    if data[:8] == _PNG_SIGNATURE:
        return _png(data)
    return None


def _jpeg(data: bytes) -> tuple[int, int, bool] | None:
    i, end = 2, len(data)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        (length,) = struct.unpack_from(">H", data, i + 2)
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\x00\x00":
            return None  # may carry an orientation: let Pillow read it
        if marker in _SOF:
            if i + 10 > end:
                return None
            height, width = struct.unpack_from(">HH", data, i + 5)
            return (width, height, data[i + 9] == 1) if width and height else None
        if marker == 0xDA:  # scan data before any frame header: malformed
            return None
        i += 2 + length
    return None


def _png(data: bytes) -> tuple[int, int, bool] | None:
    if len(data) < 26 or data[12:16] != b"IHDR":
        return None
    if not _png_without_exif(data):  # an eXIf chunk may rotate: let Pillow decide
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return (width, height, data[25] in _PNG_GRAY_TYPES) if width and height else None


def _png_without_exif(data: bytes) -> bool:
    """Walk the chunk headers up to the first IDAT: True only if no eXIf chunk comes before it."""
    i = 8
    while i + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, i)
        if kind == b"eXIf":
            return False
        if kind == b"IDAT":
            return True
        i += 12 + length
    return False  # image data not reached in the bytes we have: do not guess
