"""The last stage: numpy batch → torch tensors on the target device, in the requested layout/dtype.

On CUDA the batch is gathered into pinned host memory and copied with ``non_blocking=True``;
NCHW conversion, the cast to float and normalisation then run on the device. On the CPU the
same code path runs without pinning (the CPU build cannot pin memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

LAYOUTS = ("NHWC", "NCHW")


@dataclass(frozen=True)
class DeviceOptions:
    """Where and how batches arrive: ``device`` (None = CPU), image ``layout`` and ``dtype``,
    and ``normalize=(mean, std)`` per channel in 0..1 units (float dtypes only)."""

    device: str | torch.device | None = None
    layout: str = "NHWC"
    dtype: torch.dtype = torch.uint8
    normalize: tuple | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if self.normalize is not None and not self.dtype.is_floating_point:
            raise ValueError(
                "normalize=(mean, std) needs a floating dtype, e.g. dtype=torch.float32"
            )


class DeviceStage:
    """Turns gathered numpy arrays into tensors on the device."""

    def __init__(self, opts: DeviceOptions, channels: int) -> None:
        self.opts = opts
        self.device = torch.device(opts.device) if opts.device is not None else torch.device("cpu")
        self.pinned = self.device.type == "cuda" and torch.cuda.is_available()
        self._mean = self._std = None
        if opts.normalize is not None:
            mean, std = (torch.as_tensor(v, dtype=opts.dtype) for v in opts.normalize)
            if mean.numel() not in (1, channels) or std.numel() not in (1, channels):
                raise ValueError(f"normalize=(mean, std) needs 1 or {channels} values each")
            shape = (1, -1, 1, 1) if opts.layout == "NCHW" else (1, 1, 1, -1)
            self._mean = mean.reshape(shape).to(self.device)
            self._std = std.reshape(shape).to(self.device)

    def host_buffer(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A destination for gathering: pinned memory when copying to CUDA, plain memory otherwise."""
        if self.pinned:
            return torch.empty(
                shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, pin_memory=True
            ).numpy()
        return np.empty(shape, dtype=dtype)

    def images(self, array: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(array)
        if self.device.type != "cpu":
            x = x.to(self.device, non_blocking=self.pinned)
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
        x = array if isinstance(array, torch.Tensor) else torch.from_numpy(array)
        return x.to(self.device, non_blocking=self.pinned) if self.device.type != "cpu" else x
