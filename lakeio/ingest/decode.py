"""Turning one source image (bytes or array) into a lake sample: validate, decode, orient, convert, resize.

Everything a hostile or sloppy folder can hold is refused here with a `SourceError` that names
the file and the reason, before it can reach the lake: empty and truncated files, non-images,
decompression bombs, absurd aspect ratios. Colour modes are converted deliberately (16-bit is
scaled, not clipped; alpha is composited onto a background, not dropped).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lakeio.errors import SourceError
from lakeio.ingest.header import fast_header

RESIZE_MODES = ("center-crop", "pad", "stretch")
_ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
Image.init()  # register every plugin now, so formats= below can name any of them
_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


@dataclass(frozen=True)
class DecodeOptions:
    """How images become samples.

    ``size`` is (height, width) or None to keep the images' own (shared) size. ``max_pixels``
    refuses decompression bombs before any pixel is decoded; ``max_aspect`` refuses slivers whose
    crop or pad would be mostly artefact. ``background`` is the grey level alpha is composited on.
    """

    size: tuple[int, int] | None = None
    resize: str = "center-crop"
    channels: int = 3
    max_pixels: int = 64_000_000
    max_aspect: float = 20.0
    background: int = 255

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(
                f"resize must be one of {', '.join(RESIZE_MODES)}, not {self.resize!r}"
            )
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {self.channels!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"size must be (height, width) of positive ints, not {self.size!r}")


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, after EXIF orientation: display width and height, and colour."""

    width: int
    height: int
    grayscale: bool


def _likely_formats(data: bytes) -> tuple[str, ...] | None:
    """Pillow plugins to try first, from magic bytes (trying every plugin costs as much as a decode)."""
    head = data[:12]
    if head.startswith(b"\xff\xd8\xff"):
        return ("JPEG",)  # its factory hands multi-picture files to MPO itself
    if head.startswith(b"\x89PNG"):
        return ("PNG",)
    if head.startswith(b"GIF8"):
        return ("GIF",)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return ("WEBP",)
    if head.startswith(b"BM"):
        return ("BMP",)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return ("TIFF",)
    return None


def _open(data: bytes, path: str) -> Image.Image:
    if len(data) == 0:
        raise SourceError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=_likely_formats(data))
    except Image.DecompressionBombError as exc:
        raise SourceError(path, f"decompression bomb refused ({exc})") from None
    except UnidentifiedImageError:
        raise SourceError(path, "not a recognised image (unknown or corrupt header)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise SourceError(path, f"unreadable image header ({exc})") from None


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block is no reason to lose the image
        return 1


def _check_geometry(image: Image.Image, path: str, opts: DecodeOptions) -> None:
    _check_size(*image.size, path, opts)


def _check_size(width: int, height: int, path: str, opts: DecodeOptions) -> None:
    if width < 1 or height < 1:
        raise SourceError(path, f"image has no pixels ({width}x{height})")
    if width * height > opts.max_pixels:
        raise SourceError(
            path,
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{opts.max_pixels:,} (decompression bomb guard; raise --max-pixels to allow)",
        )
    aspect = max(width, height) / min(width, height)
    if aspect > opts.max_aspect:
        raise SourceError(
            path,
            f"aspect ratio {aspect:.1f}:1 ({width}x{height}) exceeds --max-aspect {opts.max_aspect:g}",
        )


def probe_header(data: bytes, path: str, opts: DecodeOptions) -> ImageHeader:
    """Read only the header: display size (orientation applied) and whether it is grayscale.

    ``data`` may be just the first bytes of the file; plain JPEGs and PNGs are parsed directly.
    """
    fast = fast_header(data)
    if fast is not None:
        _check_size(fast[0], fast[1], path, opts)
        return ImageHeader(*fast)
    image = _open(data, path)
    _check_geometry(image, path, opts)
    width, height = image.size
    if _orientation(image) in _ROTATED_ORIENTATIONS:
        width, height = height, width
    return ImageHeader(width, height, image.mode in _GRAY_MODES)


def _draft_request(width: int, height: int, opts: DecodeOptions, rotated: bool) -> tuple[int, int]:
    """The smallest stored-orientation size the final resize still needs (for JPEG draft mode)."""
    target_h, target_w = opts.size  # type: ignore[misc]
    if rotated:
        target_h, target_w = target_w, target_h
    if opts.resize == "stretch":
        return target_w, target_h
    pick = max if opts.resize == "center-crop" else min
    scale = pick(target_w / width, target_h / height)
    return math.ceil(width * scale), math.ceil(height * scale)


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float images to 8-bit (Pillow's convert would clip them)."""
    array = np.asarray(image)
    if array.dtype.kind == "f":
        top = 1.0 if np.nanmax(array, initial=0) <= 1.0 else 255.0
        array = np.clip(np.nan_to_num(array) * (255.0 / top), 0, 255)
    elif image.mode.startswith("I;16"):
        array = array.astype(np.uint16) >> 8  # the declared depth decides, never the content
    elif array.dtype.itemsize > 1:  # mode "I": 32-bit container; 16-bit data is the norm
        array = array.astype(np.int64)
        array = np.clip(array >> (24 if array.max(initial=0) > 65535 else 8), 0, 255)
    return Image.fromarray(array.astype(np.uint8))


def _to_colour(image: Image.Image, opts: DecodeOptions) -> Image.Image:
    """Convert any Pillow mode to 'L' or 'RGB' as ``opts.channels`` asks."""
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (opts.background,) * 3 + (255,))
        image = Image.alpha_composite(background, rgba)
    target = "L" if opts.channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def _resize(image: Image.Image, opts: DecodeOptions) -> Image.Image:
    if opts.size is None:
        return image
    height, width = opts.size
    if image.size == (width, height):
        return image
    method = Image.Resampling.BILINEAR
    if opts.resize == "stretch":
        return image.resize((width, height), method)
    if opts.resize == "center-crop":
        return ImageOps.fit(image, (width, height), method)
    return ImageOps.pad(image, (width, height), method, color=0)


def _decode_plain_jpeg(
    data: bytes, path: str, opts: DecodeOptions, out: np.ndarray | None
) -> np.ndarray | None:
    """libjpeg-turbo straight into numpy (simplejpeg) for JPEGs without EXIF; None → use Pillow.

    Pillow spends more time parsing a small JPEG's header in Python than decoding it; this path
    gives the same pixels (same libjpeg-turbo) several times faster, with reduced-size decoding.
    """
    import simplejpeg

    if fast_header(data) is None:  # EXIF (may rotate) or an odd layout: Pillow handles those
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None  # let Pillow name the problem
    if colorspace not in ("Gray", "YCbCr", "RGB"):
        return None  # CMYK / YCCK need Pillow's conversion
    _check_size(width, height, path, opts)
    scale = {}
    if opts.size is not None:
        min_width, min_height = _draft_request(width, height, opts, rotated=False)
        scale = {"min_width": min_width, "min_height": min_height}
    target = (height, width) if opts.size is None else tuple(opts.size)
    if out is not None and (height, width) == target and out.shape == (*target, opts.channels):
        scale["buffer"] = out  # decode straight into the caller's batch: no allocation, no copy
    try:
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="GRAY" if opts.channels == 1 else "RGB", **scale
        )
    except ValueError as exc:
        raise SourceError(path, f"truncated or corrupt image data ({exc})") from None
    if opts.size is not None and pixels.shape[:2] != tuple(opts.size):
        pixels = np.asarray(
            _resize(Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels), opts)
        )
    return pixels[..., None] if pixels.ndim == 2 else pixels


def decode_image(
    data: bytes, path: str, opts: DecodeOptions, out: np.ndarray | None = None
) -> np.ndarray:
    """Decode one encoded image into an (H, W, C) uint8 array; `SourceError` if it cannot be.

    ``out``, if given, is a buffer the result may (not must) be decoded into. Hostile bytes
    trip decoder plugins in ways they do not report as decode errors: any exception raised
    inside Pillow or simplejpeg is a `SourceError` naming the file too. One raised in lakeio's
    own code is a bug, not a bad image: it propagates, so it can never reject images quietly.
    """
    try:
        return _decode_image(data, path, opts, out)
    except (SourceError, MemoryError):
        raise
    except Exception as exc:
        if not _raised_by_decoder(exc):
            raise
        raise SourceError(
            path, f"image could not be decoded ({type(exc).__name__}: {exc})"
        ) from None


_DECODERS = (f"{os.sep}PIL{os.sep}", f"{os.sep}simplejpeg{os.sep}")


def _raised_by_decoder(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc`` is in Pillow or simplejpeg."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and any(d in tb.tb_frame.f_code.co_filename for d in _DECODERS)


def _decode_image(data: bytes, path: str, opts: DecodeOptions, out: np.ndarray | None):
    if data[:3] == b"\xff\xd8\xff":
        pixels = _decode_plain_jpeg(data, path, opts, out)
        if pixels is not None:
            return pixels
    image = _open(data, path)
    _check_geometry(image, path, opts)
    orientation = _orientation(image)
    try:
        if opts.size is not None and image.format == "JPEG":
            width, height = image.size
            rotated = orientation in _ROTATED_ORIENTATIONS
            image.draft(None, _draft_request(width, height, opts, rotated))
        image.load()
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        image = _resize(_to_colour(image, opts), opts)
    except SourceError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise SourceError(path, f"truncated or corrupt image data ({exc})") from None
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def conform_array(array: np.ndarray, path: str, opts: DecodeOptions) -> np.ndarray:
    """Bring an in-memory image (H, W[, C]) to the lake's size and channels."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise SourceError(path, f"dtype {array.dtype} is not uint8; scale to 0..255 uint8 first")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise SourceError(
            path, f"shape {array.shape} is not (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    image = Image.fromarray(np.ascontiguousarray(array))  # uint8: L, RGB or RGBA by shape
    out = np.asarray(_resize(_to_colour(image, opts), opts), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out
