"""Assembling one batch: gather rows from decoded chunks into contiguous per-field arrays."""

from __future__ import annotations

import numpy as np


def gather(
    fields: tuple[str, ...],
    chunk_ids: np.ndarray,
    rows: np.ndarray,
    chunks: dict[int, dict[str, np.ndarray]],
    out: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Rows ``rows`` of chunks ``chunk_ids`` (one pair per sample) for each field, in batch order.

    One fancy-indexing copy per (chunk, field), not one per sample. ``out`` may supply the
    destination arrays (e.g. pinned buffers); they must hold at least ``len(rows)`` samples.
    """
    n = len(rows)
    result: dict[str, np.ndarray] = {}
    for field in fields:
        sample = next(iter(chunks.values()))[field]
        if out is not None and field in out:
            dest = out[field][:n]
        else:
            dest = np.empty((n, *sample.shape[1:]), dtype=sample.dtype)
        result[field] = dest
    for chunk in np.unique(chunk_ids).tolist():
        positions = np.flatnonzero(chunk_ids == chunk)
        source_rows = rows[positions]
        for field in fields:
            result[field][positions] = chunks[chunk][field][source_rows]
    return result
