"""Assembling one batch: gather rows from decoded chunks into contiguous per-field arrays."""

from __future__ import annotations

import numpy as np

from lakeio.loader.buffers import RecycledArrays
from lakeio.loader.kernels import copy_rows_kernel

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


class Batcher:
    """Gathers batches from the chunks the prefetcher holds (`add` when one is loaded, `drop`
    once its last batch is out): with the compiled kernel (`lakeio.loader.kernels`) once it is
    ready, through a table of each held chunk's address per field; with `gather` until then,
    and for fields the kernel cannot copy (strings, non-contiguous rows or destinations).

    `gather` may run on several threads at once while one thread adds and drops chunks, as
    long as a batch's chunks are added before its gather starts and dropped after it ends."""

    def __init__(self, fields: tuple[str, ...], buffers: RecycledArrays | None = None) -> None:
        self.fields = fields
        self._buffers = buffers if buffers is not None else RecycledArrays(0)  # (0: fresh)
        self._chunks: dict[int, dict[str, np.ndarray]] = {}
        self._addresses = {f: np.zeros(0, np.int64) for f in fields}  # by chunk id; 0: none
        self._lengths = {f: np.zeros(0, np.int64) for f in fields}  # rows of each held chunk
        self._rows: dict[str, tuple[tuple[int, ...], np.dtype]] = {}  # a row's shape and dtype
        self._copyable = dict.fromkeys(fields, True)  # every chunk's rows contiguous so far
        self._kernel = copy_rows_kernel()

    @property
    def compiled(self) -> bool:
        """Whether batches are gathered with the compiled kernel now."""
        return self._kernel is not None

    def add(self, chunk: int, arrays: dict[str, np.ndarray]) -> None:
        """Hold ``chunk`` (its decoded ``arrays``) until `drop`."""
        chunk = int(chunk)
        self._chunks[chunk] = arrays
        for field in self.fields:
            array = arrays[field]
            row = (array.shape[1:], array.dtype)
            if self._rows.setdefault(field, row) != row:  # (rows unlike the first chunk's: the
                self._copyable[field] = False  # kernel copies one row size; numpy will say)
            if not len(array):  # (no row of it can be asked for)
                continue
            if array.dtype == object or not array.flags.c_contiguous:
                self._copyable[field] = False
                continue
            if chunk >= len(self._addresses[field]):
                self._addresses[field] = _grown(self._addresses[field], chunk)
                self._lengths[field] = _grown(self._lengths[field], chunk)
            self._lengths[field][chunk] = len(array)
            self._addresses[field][chunk] = array.ctypes.data

    def drop(self, chunk: int) -> None:
        """Let go of ``chunk`` (no batch gathered from now on may ask for it)."""
        chunk = int(chunk)
        if self._chunks.pop(chunk, None) is None:
            return
        for table in (*self._addresses.values(), *self._lengths.values()):
            if chunk < len(table):
                table[chunk] = 0

    def gather(
        self,
        chunk_ids: np.ndarray,
        rows: np.ndarray,
        out: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Rows ``rows`` of chunks ``chunk_ids`` for each field, as `gather` does."""
        if self._kernel is None:
            self._kernel = copy_rows_kernel()
        if self._kernel is None or not len(rows):
            if out is None:  # (into arrays let go of, as the kernel's copies are)
                out = {
                    f: self._buffers.empty((len(rows), *shape), dtype)
                    for f, (shape, dtype) in self._rows.items()
                    if not dtype.hasobject
                }
            return gather(self.fields, chunk_ids, rows, dict(self._chunks), out)
        ids = np.ascontiguousarray(chunk_ids, dtype=np.int64)
        places = np.ascontiguousarray(rows, dtype=np.int64)
        result: dict[str, np.ndarray] = {}
        rest: list[str] = []
        for field in self.fields:
            dest = self._compiled_gather(field, ids, places, out)
            if dest is None:
                rest.append(field)
            else:
                result[field] = dest
        if rest:  # (a copy of the held chunks: another thread may add one meanwhile)
            result.update(gather(tuple(rest), chunk_ids, rows, dict(self._chunks), out))
        return {f: result[f] for f in self.fields}

    def _compiled_gather(
        self, field: str, ids: np.ndarray, rows: np.ndarray, out: dict[str, np.ndarray] | None
    ) -> np.ndarray | None:
        """The field's rows gathered by the kernel, or None where it cannot copy them."""
        if not self._copyable[field] or field not in self._rows:
            return None
        shape, dtype = self._rows[field]
        if out is not None and field in out:
            dest = out[field][: len(ids)]
            if dest.dtype != dtype or not dest.flags.c_contiguous or dest.shape[1:] != shape:
                return None
        else:
            dest = self._buffers.empty((len(ids), *shape), dtype)
        row_bytes = dest[:1].nbytes
        table, lengths = self._addresses[field], self._lengths[field]
        bad = self._kernel(dest.ctypes.data, row_bytes, table, lengths, ids, rows)
        if bad >= 0:
            chunk, row = int(ids[bad]), int(rows[bad])
            held = self._chunks.get(chunk)
            raise IndexError(
                f"sample {bad} of the batch asks for row {row} of chunk {chunk}, which "
                + ("is not loaded" if held is None else f"has {len(held[field])} rows")
            )
        return dest


def _grown(table: np.ndarray, index: int) -> np.ndarray:
    """``table`` (zeros past its end) long enough to hold ``index``."""
    grown = np.zeros(max(index + 1, 2 * len(table)), np.int64)
    grown[: len(table)] = table
    return grown
