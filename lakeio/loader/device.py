"""The last stage: numpy batch → torch tensors on the target device, in the requested layout/dtype.

On CUDA the batch is gathered into pinned host memory and copied with ``non_blocking=True``;
NCHW conversion, the cast to float and normalisation then run on the device. On the CPU the
same code path runs without pinning (the CPU build cannot pin memory). The calls that need the
GPU sit behind one small seam, `Accelerator`, so the pinned branch runs in tests without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from lakeio.errors import LakeError
from lakeio.format.manifest import Manifest

LAYOUTS = ("NHWC", "NCHW")


class Accelerator(Protocol):
    """The hardware calls of the pinned path: whether it applies, pinned buffers, the copy."""

    def available(self, device: torch.device) -> bool:
        """True when batches for ``device`` go through pinned host memory and `copy`."""

    def pinned_empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised host tensor the copy can read asynchronously."""

    def copy(self, host: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``host`` (from `pinned_empty`) on ``device``; the buffer may be reused afterwards."""


@dataclass(frozen=True)
class CudaAccelerator:
    """CUDA through page-locked memory, the default. The copy is handed the pinned tensor
    itself, so torch's caching host allocator records it and does not hand the memory out
    again before the transfer has finished."""

    def available(self, device: torch.device) -> bool:
        """A CUDA device with a CUDA build of torch (the CPU build cannot pin)."""
        return device.type == "cuda" and torch.cuda.is_available()  # the CPU build cannot pin

    def pinned_empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """From torch's caching host allocator, which reuses a block only after its copy."""
        return torch.empty(shape, dtype=dtype, pin_memory=True)

    def copy(self, host: torch.Tensor, device: torch.device) -> torch.Tensor:
        """An asynchronous copy on the current stream (``non_blocking=True``)."""
        return host.to(device, non_blocking=True)


@dataclass(frozen=True)
class DeviceOptions:
    """Where and how batches arrive: ``device`` (None = CPU), image ``layout`` and ``dtype``,
    and ``normalize=(mean, std)`` per channel in 0..1 units (float dtypes only).
    ``accelerator`` makes the pinned host buffers and the copy (default: CUDA's)."""

    device: str | torch.device | None = None
    layout: str = "NHWC"
    dtype: torch.dtype = torch.uint8
    normalize: tuple | None = None
    accelerator: Accelerator = CudaAccelerator()

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if self.normalize is not None and not self.dtype.is_floating_point:
            raise ValueError(
                "normalize=(mean, std) needs a floating dtype, e.g. dtype=torch.float32"
            )


class DeviceStage:
    """Turns gathered host arrays (numpy, or pinned tensors) into tensors on the device."""

    def __init__(self, opts: DeviceOptions, channels: int) -> None:
        self.opts = opts
        self.device = torch.device(opts.device) if opts.device is not None else torch.device("cpu")
        self.accelerator = opts.accelerator
        self.pinned = self.accelerator.available(self.device)
        self._mean = self._std = None
        if opts.normalize is not None:
            mean, std = (torch.as_tensor(v, dtype=opts.dtype) for v in opts.normalize)
            if mean.numel() not in (1, channels) or std.numel() not in (1, channels):
                raise ValueError(f"normalize=(mean, std) needs 1 or {channels} values each")
            shape = (1, -1, 1, 1) if opts.layout == "NCHW" else (1, 1, 1, -1)
            self._mean = mean.reshape(shape).to(self.device)
            self._std = std.reshape(shape).to(self.device)

    def host_buffer(self, shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
        """A tensor to gather into (through its ``.numpy()`` view): pinned when the stage pins.
        Hand the tensor itself to `images`/`tensor`, not the view."""
        torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
        if self.pinned:
            return self.accelerator.pinned_empty(shape, torch_dtype)
        return torch.empty(shape, dtype=torch_dtype)

    def images(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A batch of HWC images on the device, in the layout and dtype asked for. The copy
        moves uint8 (4x smaller than float32); permute, cast and normalise run on the device."""
        x = self.tensor(array)
        if self.opts.layout == "NCHW":
            x = x.permute(0, 3, 1, 2)
        if self.opts.dtype != torch.uint8:
            x = x.to(self.opts.dtype)
            if self.opts.dtype.is_floating_point:
                x = x.div_(255.0)
        if self._mean is not None:
            x = x.sub_(self._mean).div_(self._std)
        return x

    def tensor(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``array`` on the device: through the accelerator when pinning, else a plain move
        (none on the CPU, where the tensor shares the gathered array's memory)."""
        x = array if isinstance(array, torch.Tensor) else torch.from_numpy(array)
        if self.pinned:
            return self.accelerator.copy(x, self.device)
        return x.to(self.device) if self.device.type != "cpu" else x


def lake_normalization(manifest: Manifest) -> tuple[list[float], list[float]]:
    """(mean, std) per channel in 0..1 units from the lake's stored stats, for the loader."""
    stats = manifest.stats or {}
    images = stats.get("images")
    if not isinstance(images, dict):
        raise LakeError(
            'normalize="lake" needs the lake\'s statistics; compute them with `lakeio stats LAKE`'
        )
    if stats.get("samples") != manifest.samples:
        raise LakeError(
            f"the lake's statistics cover {stats.get('samples')} samples but it holds "
            f"{manifest.samples}; run `lakeio stats LAKE` again"
        )
    return [m / 255 for m in images["mean"]], [max(s, 1e-6) / 255 for s in images["std"]]
