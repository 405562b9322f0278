"""The knobs of an ingest, grouped, validated once, and recorded in the manifest's history."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lakeio.format.codecs import parse_codec
from lakeio.ingest.decode import DecodeOptions

ON_ERROR = ("skip", "fail")
MODES = ("create", "append", "overwrite")


@dataclass(frozen=True)
class IngestOptions:
    """How sources become a lake.

    ``size``/``channels``/``codec``/``chunk_samples`` left as None are taken from the lake being
    appended to, else from the sources (their shared size; grayscale only if all are), else the
    defaults (codec ``lz4``, chunks of about 4 MiB). ``on_error="skip"`` turns bad images into
    report lines; ``"fail"`` stops at the first and commits nothing.
    """

    size: tuple[int, int] | None = None
    resize: str = "center-crop"
    channels: int | None = None
    codec: str | None = None
    chunk_samples: int | None = None
    on_error: str = "skip"
    max_pixels: int = 64_000_000
    max_aspect: float = 20.0

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ValueError(
                f"on_error must be one of {', '.join(ON_ERROR)}, not {self.on_error!r}"
            )
        if self.codec is not None:
            parse_codec(self.codec)
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
        DecodeOptions(size=self.size, resize=self.resize, channels=self.channels or 3)

    def decode_options(self, size: tuple[int, int] | None, channels: int) -> DecodeOptions:
        return DecodeOptions(
            size=size,
            resize=self.resize,
            channels=channels,
            max_pixels=self.max_pixels,
            max_aspect=self.max_aspect,
        )

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def parse_size(text: str) -> tuple[int, int]:
    """``"224x224"`` or ``"224"`` → (height, width)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"size {text!r} is not HxW (e.g. 224x224)") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"size {text!r} is not HxW with positive numbers (e.g. 224x224)")
    return values[0], values[1]
