"""The pinned-memory (CUDA) branch of the device stage, run without a GPU through a stand-in
accelerator: it must deliver exactly the CPU path's batches, each copied through the seam."""

from __future__ import annotations

import threading

import pytest
import torch

import lakeio
from lakeio.loader import DeviceOptions, Loader, PlanSpec, StreamOptions
from lakeio.loader.device import CudaAccelerator


class HostAccelerator:
    """Stands in for CUDA on the CPU: a "pinned" buffer is a plain tensor, the "copy" a clone.

    After each copy the host buffer is overwritten, as a pinned block handed out again would be,
    so a batch still reading its host buffer shows up as wrong values. Every buffer and copy is
    counted, so a path that bypasses the seam fails the counts.
    """

    def __init__(self) -> None:
        self.buffers: dict[int, torch.Tensor] = {}
        self.copies = 0
        self._lock = threading.Lock()  # buffers come from the producer thread, copies from ours

    def available(self, device: torch.device) -> bool:
        return True

    def pinned_empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        buffer = torch.empty(shape, dtype=dtype)
        with self._lock:
            self.buffers[id(buffer)] = buffer
        return buffer

    def copy(self, host: torch.Tensor, device: torch.device) -> torch.Tensor:
        with self._lock:
            assert self.buffers.get(id(host)) is host, "copied something other than a pinned buffer"
            self.copies += 1
        on_device = host.clone()
        host.bitwise_not_()  # the pinned block is reused once the copy is issued
        return on_device


def _loaders(ds, fields, output="tuple", **device):
    """A CPU loader and a pinned one through a `HostAccelerator`, alike in everything else."""
    plan = PlanSpec(batch_size=24, seed=5, window=4)  # 203 samples: the last batch is short
    stream = StreamOptions(tuple(fields), output=output)
    host = HostAccelerator()
    cpu = Loader(ds, plan, DeviceOptions(**device), stream)
    pinned = Loader(ds, plan, DeviceOptions(**device, accelerator=host), stream)
    return cpu, pinned, host


def _assert_same_batch(got, expected) -> None:
    if isinstance(expected, dict):
        assert got.keys() == expected.keys()
        got, expected = list(got.values()), list(expected.values())
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        if isinstance(e, torch.Tensor):
            assert g.dtype == e.dtype and g.shape == e.shape and g.device == e.device
            assert torch.equal(g, e)
        else:
            assert g == e  # paths: lists of str, never pinned


@pytest.mark.parametrize(
    ("fields", "output", "device"),
    [
        (("images", "labels"), "tuple", {}),
        (
            ("images", "labels"),
            "tuple",
            {"layout": "NCHW", "dtype": torch.float32, "normalize": ((0.5,) * 3, (0.2,) * 3)},
        ),
        (("images", "labels", "paths"), "dict", {"layout": "NCHW"}),
    ],
    ids=["nhwc-uint8", "nchw-float32-normalized", "with-paths"],
)
def test_pinned_batches_equal_the_cpu_path_over_two_epochs(small_lake, fields, output, device):
    cpu, pinned, host = _loaders(lakeio.open_dataset(small_lake[0]), fields, output, **device)
    assert pinned._device.pinned and not cpu._device.pinned
    for epoch in range(2):
        cpu.set_epoch(epoch)
        pinned.set_epoch(epoch)
        expected = list(cpu)
        got = list(pinned)
        assert len(got) == len(expected) == len(cpu)
        for g, e in zip(got, expected, strict=True):
            _assert_same_batch(g, e)
    copied = 2 * len(cpu) * len([f for f in fields if f != "paths"])
    assert host.copies == len(host.buffers) == copied  # each pinned field of each batch, once


def test_pinned_loader_resumes_from_its_state_like_the_cpu_path(small_lake):
    ds = lakeio.open_dataset(small_lake[0])
    cpu, pinned, _ = _loaders(ds, ("images", "labels"))
    for loader in (cpu, pinned):
        loader.set_epoch(1)
    expected = list(cpu)
    it = iter(pinned)
    for _ in range(3):
        next(it)
    state = pinned.state_dict()
    assert state["batches_done"] == 3 and state["epoch"] == 1
    _, resumed, _ = _loaders(ds, ("images", "labels"))
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(expected) - 3
    for g, e in zip(rest, expected[3:], strict=True):
        _assert_same_batch(g, e)


def test_pinned_loader_as_iterable_dataset_yields_the_cpu_batches(small_lake):
    cpu, pinned, host = _loaders(lakeio.open_dataset(small_lake[0]), ("images", "labels"))
    expected = list(cpu.as_iterable_dataset())
    got = list(pinned.as_iterable_dataset())
    assert len(got) == len(expected) and host.copies == 2 * len(expected)
    for g, e in zip(got, expected, strict=True):
        _assert_same_batch(g, e)


def test_the_default_accelerator_is_cuda_and_pins_only_for_a_present_gpu():
    accelerator = DeviceOptions().accelerator
    assert isinstance(accelerator, CudaAccelerator)
    assert not accelerator.available(torch.device("cpu"))
    assert accelerator.available(torch.device("cuda")) == torch.cuda.is_available()
