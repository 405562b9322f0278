"""Batches of an (images, labels) loader as numpy copies, and their comparison: what tests
and reliability cases check a cluster loader against the in-process one with."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

Batches = list[tuple[np.ndarray, np.ndarray]]


def collect(loader: Iterable) -> Batches:
    """Every batch of one epoch, copied (a loader may reuse its buffers)."""
    return [(images.numpy().copy(), labels.numpy().copy()) for images, labels in loader]


def same(got: Batches, want: Batches) -> bool:
    """The same batches, in the same order, bit for bit."""
    return len(got) == len(want) and all(
        np.array_equal(gi, wi) and np.array_equal(gl, wl)
        for (gi, gl), (wi, wl) in zip(got, want, strict=True)
    )


def assert_same(got: Batches, want: Batches) -> None:
    """As `same`, but saying where they differ."""
    assert len(got) == len(want) > 0, f"{len(got)} batches, expected {len(want)} (not 0)"
    for (gi, gl), (wi, wl) in zip(got, want, strict=True):
        np.testing.assert_array_equal(gi, wi)
        np.testing.assert_array_equal(gl, wl)
