"""``lakeio.predict``: a lossless per-image predictor, the array-to-array step of ``predict-zstd``.

Natural images change little from one row to the next, so each pixel minus the pixel above
(modulo 2**bits) is mostly near zero, and zstd stores those residuals in about half the bytes
of the pixels (`benchmarks/codecs.py`: ratios 1.8-2.5 against lz4's 1.05-1.14). With
``colour`` (three or more channels), the green residual is also taken from the red and the
blue ones (subtract-green, as WebP lossless does); being linear, it commutes with the
prediction, and the inverse undoes it first. Residuals are stored as planes, channel by
channel ((n, C, H, W)), which compresses better than interleaved pixels and makes the inverse
contiguous adds.

Of the predictors measured (vertical delta, gradient, LOCO-I's median), the vertical delta is
the one whose inverse vectorises: a row added to the row above, compiled by numba (wheels on
Linux, macOS and Windows, no compiler needed). The forward pass is numpy.

The same transform is a zarr v3 codec (`PredictCodec`, registered as ``lakeio.predict`` through
zarr's codec entry points), so zarr-python reads such a lake wherever lakeio is installed;
readers without lakeio (tensorstore, zarr-python alone) cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import NDBuffer

NAME = "lakeio.predict"
DTYPES = ("uint8", "uint16")


def applies(dtype, sample_shape: tuple[int, ...]) -> bool:
    """Whether a field of ``dtype`` and per-sample ``sample_shape`` is predicted: images, (H, W)
    or (H, W, C), of 8- or 16-bit unsigned integers (either byte order). Other fields of a
    ``predict-zstd`` lake are zstd alone."""
    dt = np.dtype(dtype)
    return dt.kind == "u" and dt.itemsize in (1, 2) and len(sample_shape) in (2, 3)


def planes_shape(chunk_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The residual planes' shape, (n, C, H, W), of a chunk of images (n, H, W[, C])."""
    n, height, width = chunk_shape[:3]
    return (n, chunk_shape[3] if len(chunk_shape) == 4 else 1, height, width)


def predict(chunk: np.ndarray, colour: bool = True) -> np.ndarray:
    """Residual planes (n, C, H, W) of a chunk of images (n, H, W[, C]), in its dtype (unsigned
    arithmetic wraps modulo 2**bits, which is the transform)."""
    n, height, width, channels = (*chunk.shape[:3], planes_shape(chunk.shape)[1])
    pixels = chunk.reshape(n, height, width, channels).transpose(0, 3, 1, 2)
    residuals = np.array(pixels, order="C")  # (a copy: never the caller's chunk)
    residuals[:, :, 1:] -= pixels[:, :, :-1]
    if colour and channels >= 3:
        residuals[:, 0] -= residuals[:, 1]
        residuals[:, 2] -= residuals[:, 1]
    return residuals


def unpredict(planes: np.ndarray, out: np.ndarray, colour: bool = True) -> np.ndarray:
    """The images (into ``out``, (n, H, W[, C]), native byte order) from their residual planes
    (n, C, H, W), which are overwritten. One compiled pass per image."""
    from lakeio.format.predict_kernels import undo

    undo(planes, out.reshape((*out.shape[:3], planes.shape[1])), colour)
    return out


def warm_up() -> None:
    """Compile the inverse for uint8 and uint16 now (or load it from numba's on-disk cache):
    the first chunk decoded then does not wait for it. Done in the calling thread, not on a
    thread of its own: a process forked meanwhile (DataLoader workers) would inherit numba's
    compiler lock held."""
    for dtype in (np.uint8, np.uint16):
        unpredict(np.zeros((1, 3, 1, 1), dtype), np.zeros((1, 1, 1, 3), dtype))


def _zarr_codec_base():
    from zarr.abc.codec import ArrayArrayCodec

    return ArrayArrayCodec


@dataclass(frozen=True)
class PredictCodec(_zarr_codec_base()):
    """The zarr v3 codec: ``{"name": "lakeio.predict", "configuration": {"predictor":
    "vertical", "colour": "subtract-green" | "none"}}``. The chunk (n, H, W[, C]) becomes its
    residual planes (n, C, H, W)."""

    is_fixed_size = True
    colour: str = "subtract-green"

    def __post_init__(self) -> None:
        if self.colour not in ("subtract-green", "none"):
            raise ValueError(
                f"{NAME}: colour must be 'subtract-green' or 'none', not {self.colour!r}"
            )

    @classmethod
    def from_dict(cls, data: dict) -> PredictCodec:
        from zarr.core.common import parse_named_configuration

        _, configuration = parse_named_configuration(data, NAME, require_configuration=False)
        configuration = dict(configuration or {})
        predictor = configuration.pop("predictor", "vertical")
        if predictor != "vertical":
            raise ValueError(f"{NAME}: predictor {predictor!r} is not known (only 'vertical')")
        unknown = sorted(set(configuration) - {"colour"})
        if unknown:
            raise ValueError(f"{NAME}: unknown configuration {', '.join(unknown)}")
        return cls(**configuration)

    def to_dict(self) -> dict:
        return {"name": NAME, "configuration": {"predictor": "vertical", "colour": self.colour}}

    def validate(self, shape, dtype, chunk_grid) -> None:
        sample = tuple(shape[1:])
        if not applies(dtype.to_native_dtype(), sample):
            raise ValueError(
                f"{NAME} predicts images (n, H, W[, C]) of {' or '.join(DTYPES)}, not an array "
                f"of shape {tuple(shape)} and dtype {dtype}"
            )

    def resolve_metadata(self, chunk_spec: ArraySpec) -> ArraySpec:
        from zarr.core.array_spec import ArraySpec

        return ArraySpec(
            shape=planes_shape(tuple(chunk_spec.shape)),
            dtype=chunk_spec.dtype,
            fill_value=chunk_spec.fill_value,
            config=chunk_spec.config,
            prototype=chunk_spec.prototype,
        )

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        chunk = np.ascontiguousarray(chunk_array.as_numpy_array())
        planes = predict(chunk, self.colour == "subtract-green")
        return chunk_array.from_numpy_array(planes)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._encode_sync(chunk_array, chunk_spec)

    def _decode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        stored = chunk_array.as_numpy_array()
        native = stored.dtype.newbyteorder("=")
        planes = np.array(stored, dtype=native)  # (a copy: the inverse overwrites it)
        out = np.empty(tuple(chunk_spec.shape), dtype=native)
        unpredict(planes, out, self.colour == "subtract-green")
        return chunk_array.from_numpy_array(out.astype(stored.dtype, copy=False))

    async def _decode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        return input_byte_length


def register() -> None:
    """Make the codec known to zarr in this process (the entry point does it for any process
    of an environment where lakeio is installed)."""
    from zarr.registry import register_codec

    register_codec(NAME, PredictCodec)
