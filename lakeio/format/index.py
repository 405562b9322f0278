"""The lake's sample index: global sample number ↔ (segment, chunk, row). Pure integer arithmetic."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChunkRef:
    """One chunk of one segment: which segment (position in the manifest), which chunk, how many rows."""

    segment: int
    chunk: int
    rows: int


class SampleIndex:
    """Maps global sample numbers to segments and chunks, given per-segment sample counts."""

    def __init__(self, segment_samples: list[int], chunk_samples: int) -> None:
        self.chunk_samples = chunk_samples
        self.segment_samples = np.asarray(segment_samples, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.segment_samples)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, i: int) -> tuple[int, int, int]:
        """(segment, chunk, row in chunk) of global sample ``i`` (0 <= i < len)."""
        segment = int(np.searchsorted(self.offsets, i, side="right") - 1)
        local = i - int(self.offsets[segment])
        return segment, local // self.chunk_samples, local % self.chunk_samples

    def chunks(self) -> list[ChunkRef]:
        """Every chunk of the lake in order, with its number of valid rows."""
        out = []
        for segment, count in enumerate(self.segment_samples.tolist()):
            for start in range(0, count, self.chunk_samples):
                out.append(
                    ChunkRef(
                        segment, start // self.chunk_samples, min(self.chunk_samples, count - start)
                    )
                )
        return out

    def chunk_table(self) -> tuple[list[ChunkRef], np.ndarray, np.ndarray]:
        """Every chunk, and for every global sample the position of its chunk in that list and its row."""
        refs = self.chunks()
        rows = np.asarray([c.rows for c in refs], dtype=np.int64)
        chunk_of = np.repeat(np.arange(len(refs), dtype=np.int64), rows)
        starts = np.repeat(np.cumsum(rows) - rows, rows)
        row_of = np.arange(len(self), dtype=np.int64) - starts
        return refs, chunk_of, row_of
