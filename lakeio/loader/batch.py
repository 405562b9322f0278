"""Assembling one batch: gather rows from decoded chunks into contiguous per-field arrays."""

from __future__ import annotations

import numpy as np

PER_SAMPLE_COPY_BYTES = 32768


def gather(
    fields: tuple[str, ...],
    chunk_ids: np.ndarray,
    rows: np.ndarray,
    chunks: dict[int, dict[str, np.ndarray]],
    out: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Rows ``rows`` of chunks ``chunk_ids`` (one pair per sample) for each field, in batch order.

    Large samples are copied one by one straight into place (a ``take`` would copy them twice:
    into a temporary, then into place); small ones with one ``take`` per chunk, the batch
    positions of every chunk found with one sort. ``out`` may supply the destination arrays
    (e.g. pinned buffers); they must hold at least ``len(rows)`` samples.
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
    chunk_list, row_list = chunk_ids.tolist(), rows.tolist()
    groups = None
    for field in fields:
        dest = result[field]
        if dest[:1].nbytes >= PER_SAMPLE_COPY_BYTES:  # one copy per sample, straight into place
            arrays = {c: fields_of[field] for c, fields_of in chunks.items()}
            for i, (chunk, row) in enumerate(zip(chunk_list, row_list, strict=True)):
                dest[i] = arrays[chunk][row]
            continue
        if groups is None:  # small samples: one copy per chunk beats a Python loop
            groups = _positions_by_chunk(chunk_ids)
        for chunk, positions in groups:
            dest[positions] = chunks[chunk][field].take(rows[positions], axis=0)
    return result


def _positions_by_chunk(chunk_ids: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Batch positions grouped by chunk, each group in batch order (one stable sort)."""
    if chunk_ids.size == 0:
        return []
    order = np.argsort(chunk_ids, kind="stable")
    cuts = np.flatnonzero(np.diff(chunk_ids[order])) + 1
    return [(int(chunk_ids[group[0]]), group) for group in np.split(order, cuts)]
