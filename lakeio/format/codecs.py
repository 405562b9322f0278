"""Codec spec strings (``lz4``, ``zstd:3``, ``blosc-zstd:5:bitshuffle`` …) mapped onto Zarr v3 codecs.

Every codec here but one is zarr-python's own (``blosc``, ``zstd``, ``gzip``, ``crc32c``), so
such a lake also opens in tensorstore, xarray and dask without lakeio. ``predict-zstd`` puts
lakeio's own ``lakeio.predict`` (`lakeio.format.predict`) before zstd on image fields: zarr-python
reads it where lakeio is installed, other readers cannot. Parsing is pure; the zarr codec
objects are built on demand.
"""

from __future__ import annotations

from dataclasses import dataclass

from lakeio.errors import CodecError, clipped

SHUFFLES = ("noshuffle", "shuffle", "bitshuffle")


@dataclass(frozen=True)
class CodecInfo:
    """One codec family as `lakeio codecs` lists it."""

    name: str
    syntax: str
    default_level: int | None
    levels: tuple[int, int] | None
    summary: str


CODECS: dict[str, CodecInfo] = {
    info.name: info
    for info in (
        CodecInfo("none", "none", None, None, "no compression (checksum only); fastest reads"),
        CodecInfo(
            "lz4",
            "lz4[:LEVEL]",
            5,
            (1, 9),
            "LZ4 in a Blosc frame, no shuffle; very fast decode, modest ratio (default)",
        ),
        CodecInfo("zstd", "zstd[:LEVEL]", 3, (1, 22), "Zstandard; better ratio, slower decode"),
        CodecInfo("gzip", "gzip[:LEVEL]", 6, (0, 9), "gzip/deflate; the most widely readable"),
        CodecInfo(
            "predict-zstd",
            "predict-zstd[:LEVEL]",
            1,
            (1, 22),
            "images as residuals of the row above (lakeio.predict), then Zstandard: about half "
            "the bytes of lz4 on photos, ~0.9 GB/s decode; needs lakeio to read",
        ),
        CodecInfo(
            "blosc-lz4",
            "blosc-lz4[:LEVEL[:SHUFFLE]]",
            5,
            (0, 9),
            "Blosc with LZ4; SHUFFLE in noshuffle|shuffle|bitshuffle (default noshuffle)",
        ),
        CodecInfo(
            "blosc-zstd",
            "blosc-zstd[:LEVEL[:SHUFFLE]]",
            5,
            (0, 9),
            "Blosc with Zstandard (clevel 1/3/5 ≈ zstd 1/5/9); SHUFFLE as for blosc-lz4",
        ),
    )
}

DEFAULT_CODEC = "lz4"


@dataclass(frozen=True)
class CodecSpec:
    """A parsed codec spec: family, level and (for Blosc) shuffle; ``str()`` gives the canonical form."""

    name: str
    level: int | None = None
    shuffle: str = "noshuffle"

    def __str__(self) -> str:
        if self.name == "none":
            return "none"
        if self.name.startswith("blosc-"):
            return f"{self.name}:{self.level}:{self.shuffle}"
        return f"{self.name}:{self.level}"

    def predicts(self, dtype, sample_shape: tuple[int, ...]) -> bool:
        """Whether a field of this dtype and per-sample shape goes through `lakeio.predict`."""
        from lakeio.format.predict import applies

        return self.name == "predict-zstd" and applies(dtype, sample_shape)

    def filters(self, dtype, sample_shape: tuple[int, ...]) -> list:
        """The zarr array-to-array codecs for a field of this dtype and per-sample shape."""
        if not self.predicts(dtype, sample_shape):
            return []
        from lakeio.format.predict import PredictCodec, register

        register()
        return [PredictCodec()]

    def compressors(self) -> list:
        """The zarr bytes→bytes codecs for this spec, checksum last, ready for ``create_array``."""
        from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec

        if self.name == "none":
            chain = []
        elif self.name == "lz4":
            chain = [BloscCodec(cname="lz4", clevel=self.level, shuffle="noshuffle")]
        elif self.name.startswith("blosc-"):
            cname = self.name.split("-", 1)[1]
            chain = [BloscCodec(cname=cname, clevel=self.level, shuffle=self.shuffle)]
        elif self.name in ("zstd", "predict-zstd"):
            chain = [ZstdCodec(level=self.level)]
        elif self.name == "gzip":
            chain = [GzipCodec(level=self.level)]
        else:  # pragma: no cover - parse_codec admits only the names above
            raise CodecError(f"unknown codec {self.name!r}")
        return [*chain, Crc32cCodec()]


def _valid_list() -> str:
    return ", ".join(info.syntax for info in CODECS.values())


def parse_codec(spec: str) -> CodecSpec:
    """Parse a codec spec string; a bad one raises `CodecError` listing the valid forms."""
    if not isinstance(spec, str) or not spec.strip():
        raise CodecError(f"codec spec must be a non-empty string; valid: {_valid_list()}")
    shown = clipped(spec)
    parts = spec.strip().lower().split(":")
    name, args = parts[0], parts[1:]
    info = CODECS.get(name)
    if info is None:
        raise CodecError(f"unknown codec {shown!r}; valid: {_valid_list()}")
    max_args = 0 if info.levels is None else (2 if name.startswith("blosc-") else 1)
    if len(args) > max_args:
        raise CodecError(f"codec {shown!r} has too many ':' parts; expected {info.syntax}")
    level = info.default_level
    if args and args[0] != "":
        level = _parse_level(shown, args[0], info)
    shuffle = "noshuffle"
    if len(args) == 2:
        shuffle = args[1]
        if shuffle not in SHUFFLES:
            raise CodecError(
                f"codec {shown!r}: shuffle {shuffle[:20]!r} is not one of {', '.join(SHUFFLES)}"
            )
    return CodecSpec(name=name, level=level, shuffle=shuffle)


def _parse_level(spec: str, text: str, info: CodecInfo) -> int:
    shown = clipped(text, 12)
    if not (text.isascii() and text.isdigit()):  # int() alone takes " 5", "+5", "1_0" and "٣"
        raise CodecError(f"codec {spec!r}: level {shown!r} is not an integer (ASCII digits)")
    low, high = info.levels  # type: ignore[misc]
    if len(text) > 9 or not low <= int(text) <= high:  # int() refuses 4,300+ digits
        raise CodecError(f"codec {spec!r}: level {shown} is outside {low}..{high} for {info.name}")
    return int(text)
