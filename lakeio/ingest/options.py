"""The knobs of an ingest, grouped, validated once, and recorded in the manifest's history."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from lakeio.errors import clipped
from lakeio.format.codecs import parse_codec
from lakeio.format.manifest import FORMAT_VERSIONS
from lakeio.ingest.decode import DecodeOptions

ON_ERROR = ("skip", "fail")
MODES = ("create", "append", "overwrite")


@dataclass(frozen=True)
class IngestOptions:
    """How sources become a lake.

    ``size``/``channels``/``codec``/``chunk_samples`` left as None are taken from the lake being
    appended to, else from the sources (their shared size; grayscale only if all are), else the
    defaults (codec ``lz4``, chunks of about 4 MiB). ``on_error="skip"`` turns bad images into
    report lines; ``"fail"`` stops at the first and commits nothing. ``format_version`` left as
    None keeps the lake's (a lake keeps its format until `lakeio upgrade`), else the newest.
    """

    size: tuple[int, int] | None = None
    resize: str = "center-crop"
    channels: int | None = None
    codec: str | None = None
    chunk_samples: int | None = None
    on_error: str = "skip"
    max_pixels: int = 64_000_000
    max_aspect: float = 20.0
    format_version: int | None = None

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ValueError(
                f"on_error must be one of {', '.join(ON_ERROR)}, not {self.on_error!r}"
            )
        if self.codec is not None:
            parse_codec(self.codec)
        if self.format_version is not None and self.format_version not in FORMAT_VERSIONS:
            raise ValueError(
                f"format_version must be one of {FORMAT_VERSIONS}, not {self.format_version!r}"
            )
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, not {self.max_pixels}")
        if self.max_aspect < 1:
            raise ValueError(
                f"max_aspect must be >= 1 (width/height or height/width), not {self.max_aspect}"
            )
        if self.chunk_samples is not None and self.chunk_samples < 1:
            raise ValueError(f"chunk_samples must be >= 1, not {self.chunk_samples}")
        if self.size is not None:
            object.__setattr__(self, "size", tuple(int(v) for v in self.size))
            _check_target_size(self.size, self.max_pixels)
        DecodeOptions(size=self.size, resize=self.resize, channels=self.channels or 3)

    def decode_options(self, size: tuple[int, int] | None, channels: int) -> DecodeOptions:
        """How each source image is decoded for a lake of ``size`` and ``channels``."""
        return DecodeOptions(
            size=size,
            resize=self.resize,
            channels=channels,
            max_pixels=self.max_pixels,
            max_aspect=self.max_aspect,
        )

    def as_dict(self) -> dict:
        """The options as JSON-ready values (kept in the manifest's history)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _check_target_size(size: tuple[int, ...], max_pixels: int) -> None:
    """A lake's image size is bounded like a source image's: every task allocates room for its
    images, so 100000x100000 would fail on the workers instead of here."""
    if len(size) == 2 and size[0] * size[1] > max_pixels:
        raise ValueError(
            f"size {size[0]}x{size[1]} is {size[0] * size[1]:,} pixels per image, over "
            f"max_pixels {max_pixels:,}; pick a smaller size (or raise max_pixels)"
        )


_SIZE = re.compile(r"\s*([0-9]{1,9})\s*(?:[x×X]\s*([0-9]{1,9})\s*)?")


def parse_size(text: str) -> tuple[int, int]:
    """``"224x224"`` or ``"224"`` → (height, width); `ValueError` for anything else.

    Only ASCII digits: ``int()`` alone would also take "2_24", "+224" and other scripts' digits.
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        shown = clipped(text)
        raise ValueError(f"size {shown!r} is not HxW (e.g. 224x224)")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    if min(height, width) < 1:
        raise ValueError(f"size {text!r} is not HxW with positive numbers (e.g. 224x224)")
    return height, width
