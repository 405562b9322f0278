"""The lake's sample index: global sample number ↔ (segment, chunk, row). Pure integer arithmetic.

Nothing is stored per sample or per chunk: a lake of 14 M samples in 6,000 segments keeps two
arrays of 6,000 numbers, and a sample's chunk and row are computed when asked (vectorised).
Every rank and every Dask worker holds this index, so its size is multiplied by all of them.
"""

from __future__ import annotations

import mmap
import sys
from collections.abc import Callable, Iterator
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
        self.offsets = np.concatenate([[0], np.cumsum(self.segment_samples)]).astype(np.int64)
        chunks = -(-self.segment_samples // chunk_samples)
        # the lake-wide id of each segment's first chunk (and, last, the number of chunks)
        self.first_chunk = np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def chunk_count(self) -> int:
        return int(self.first_chunk[-1])

    def locate(self, i: int) -> tuple[int, int, int]:
        """(segment, chunk, row in chunk) of global sample ``i`` (0 <= i < len)."""
        segment = int(np.searchsorted(self.offsets, i, side="right") - 1)
        local = i - int(self.offsets[segment])
        return segment, local // self.chunk_samples, local % self.chunk_samples

    def _local(self, samples) -> tuple[np.ndarray, np.ndarray]:
        """(segment, position in it) of each of ``samples``; empty segments never match
        (``side="right"`` passes over offsets they share with the next one)."""
        samples = np.asarray(samples, dtype=np.int64)
        segment = np.searchsorted(self.offsets, samples, side="right") - 1
        return segment, samples - self.offsets[segment]

    def chunk_ids(self, samples) -> np.ndarray:
        """The lake-wide chunk id of each of ``samples`` (ids run segment by segment)."""
        segment, local = self._local(samples)
        return self.first_chunk[segment] + local // self.chunk_samples

    def rows(self, samples) -> np.ndarray:
        """The row of each of ``samples`` within its chunk."""
        _, local = self._local(samples)
        return local % self.chunk_samples

    def chunk(self, chunk_id: int) -> ChunkRef:
        """Chunk ``chunk_id`` (0 <= id < chunk_count): its segment, number in it and rows."""
        if not 0 <= chunk_id < self.chunk_count:
            raise IndexError(f"chunk {chunk_id} is out of range for {self.chunk_count} chunks")
        segment = int(np.searchsorted(self.first_chunk, chunk_id, side="right") - 1)
        number = chunk_id - int(self.first_chunk[segment])
        rows = min(
            self.chunk_samples, int(self.segment_samples[segment]) - number * self.chunk_samples
        )
        return ChunkRef(segment, number, rows)

    def segment_and_number(self, chunk_ids) -> tuple[np.ndarray, np.ndarray]:
        """For each of ``chunk_ids``: its segment and its number within the segment."""
        chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
        segment = np.searchsorted(self.first_chunk, chunk_ids, side="right") - 1
        return segment, chunk_ids - self.first_chunk[segment]

    def chunk_starts(self) -> np.ndarray:
        """The global number of each chunk's first sample, chunk by chunk (ids in order)."""
        segment, number = self.segment_and_number(np.arange(self.chunk_count))
        return self.offsets[segment] + number * self.chunk_samples

    def chunks(self) -> ChunkRefs:
        """Every chunk of the lake in order, with its number of valid rows (made on demand)."""
        return ChunkRefs(self)

    def chunk_table(self) -> tuple[ChunkRefs, SampleMap, SampleMap]:
        """Every chunk, and, for any global samples, the id of their chunk and their row."""
        return self.chunks(), SampleMap(self.chunk_ids, len(self)), SampleMap(self.rows, len(self))


class ChunkRefs:
    """The lake's chunks as a read-only sequence; each `ChunkRef` is made when asked for."""

    def __init__(self, index: SampleIndex) -> None:
        self._index = index

    def __len__(self) -> int:
        return self._index.chunk_count

    def __getitem__(self, chunk_id: int) -> ChunkRef:
        return self._index.chunk(int(chunk_id))

    def __iter__(self) -> Iterator[ChunkRef]:
        return (self._index.chunk(c) for c in range(len(self)))


class SampleMap:
    """A per-sample figure (chunk id, row) read like an array indexed by global sample numbers
    (``chunk_of[batch]``), computed for the samples asked for instead of stored for all."""

    def __init__(self, compute: Callable[[np.ndarray], np.ndarray], size: int) -> None:
        self._compute, self._size = compute, size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, samples) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.int64)
        if samples.size and (samples.min() < 0 or samples.max() >= self._size):
            raise IndexError(f"sample numbers must be within 0..{self._size - 1}")
        return self._compute(samples)


class ChunkMembers:
    """The samples of each chunk, chunk by chunk, as one flat array and where each chunk's run
    starts in it: what the epoch plan shuffles, without an array object per chunk."""

    def __init__(
        self,
        flat: np.ndarray,
        offsets: np.ndarray,
        ids: np.ndarray | None = None,
        consecutive: bool = False,
    ) -> None:
        self.consecutive = consecutive  # flat is first, first + 1, …: computed, not read
        self._packable: bool | None = None
        self._flat: np.ndarray | None = np.asarray(flat, dtype=np.int64)
        self._first = int(self._flat[0]) if consecutive and len(self._flat) else 0
        self.offsets = np.asarray(offsets, dtype=np.int64)  # len(self) + 1 of them
        # the lake's id of each chunk (default: the runs are the lake's chunks, in order)
        self.ids = np.arange(len(self)) if ids is None else np.asarray(ids, dtype=np.int64)

    @classmethod
    def of_range(cls, first: int, offsets: np.ndarray) -> ChunkMembers:
        """Samples ``first``, ``first + 1``, … cut into runs at ``offsets``, without the array
        of them (a whole lake of 14 M samples: 112 MB not made unless asked for)."""
        members = cls(np.empty(0, dtype=np.int64), offsets, consecutive=True)
        members._flat, members._first = None, int(first)
        return members

    @property
    def flat(self) -> np.ndarray:
        """Every run's samples, one run after the other."""
        if self._flat is None:
            size = int(self.offsets[-1])
            self._flat = np.arange(self._first, self._first + size, dtype=np.int64)
        return self._flat

    @classmethod
    def of(cls, chunks) -> ChunkMembers:
        """From a list of per-chunk sample arrays (or a `ChunkMembers`, returned as it is)."""
        if isinstance(chunks, ChunkMembers):
            return chunks
        lengths = [len(c) for c in chunks]
        flat = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
        return cls(flat, np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, chunk: int) -> np.ndarray:
        return self.flat[self.offsets[chunk] : self.offsets[chunk + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[c] for c in range(len(self)))

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def packable(self) -> bool:
        """Whether each sample and its chunk id fit one int64 as two int32 halves (`packed`)."""
        if self._packable is None:
            size = int(self.offsets[-1])
            if self.consecutive:
                low, high = self._first, self._first + size - 1
            else:
                flat = self.flat
                low, high = (int(flat.min()), int(flat.max())) if size else (0, 0)
            ids = self.ids
            ids_fit = not len(ids) or (int(ids.min()) >= 0 and int(ids.max()) < 2**31)
            self._packable = ids_fit and (not size or (low >= 0 and high < 2**31))
        return self._packable

    def packed(self, order: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """For the chunks in ``order`` (``lengths``: theirs), one after the other: each sample
        as ``chunk id * 2**32 + sample`` (see `unpacked`). An epoch of a large lake is tens of
        millions of samples, and every fresh array that size costs page faults: this one is
        built in ordinary pages (`ordinary_pages`), a block of runs at a time."""
        base = self.ids[order] << 32
        if not self.consecutive:
            packed = np.repeat(base, lengths)
            packed |= self.gathered(order)
            return packed
        ends = np.cumsum(lengths)
        base += self._first + self.offsets[:-1][order] - (ends - lengths)  # + position: sample
        packed = ordinary_pages(int(ends[-1]) if len(ends) else 0)
        counting = np.arange(min(_BLOCK, len(packed)), dtype=np.int64)
        cuts = np.searchsorted(ends, np.arange(_BLOCK, len(packed), _BLOCK), side="right")
        first_run, start = 0, 0
        for last_run in [*cuts.tolist(), len(ends)]:  # runs first_run..last_run, whole
            stop = int(ends[last_run - 1]) if last_run else 0
            if stop > start:
                block = packed[start:stop]
                block[:] = np.repeat(base[first_run:last_run], lengths[first_run:last_run])
                for at in range(0, stop - start, len(counting)):
                    part = block[at : at + len(counting)]
                    part += counting[: len(part)]
                    part += start + at
            first_run, start = last_run, stop
        return packed

    def subset(self, runs: np.ndarray) -> ChunkMembers:
        """Only the runs ``runs`` (positions here), in that order, with their chunk ids."""
        lengths = self.lengths()[runs]
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        return ChunkMembers(self.gathered(runs), offsets, self.ids[runs])

    def gathered(self, order: np.ndarray) -> np.ndarray:
        """The samples of the chunks in ``order``, one chunk after the other (one gather)."""
        lengths = self.lengths()[order]
        starts = self.offsets[:-1][order]
        shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        return self.flat[np.arange(int(lengths.sum()), dtype=np.int64) + shift]


def unpacked(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The samples and chunk ids of a `ChunkMembers.packed` array, as int32 views into it
    (no copy: at tens of millions of samples, two arrays less to fault in)."""
    halves = packed.view(np.int32).reshape(-1, 2)
    low, high = (0, 1) if sys.byteorder == "little" else (1, 0)
    return halves[:, low], halves[:, high]


def ordinary_pages(size: int) -> np.ndarray:
    """A zero-filled int64 array of ``size`` in an anonymous mapping of ordinary pages.

    numpy asks Linux for transparent huge pages for arrays of 4 MB and more; where the kernel
    compacts memory to find them (``defrag=madvise``), the first touch of a new 112 MB array
    stalled 0.2–1.0 s on our machines, against a steady 0.07–0.1 s in ordinary pages (numpy
    issue 31590). A loader's plan is one such array per epoch, on the way to the first batch.
    Private, as numpy's own memory is: forked DataLoader workers copy it on write."""
    if not size:
        return np.empty(0, dtype=np.int64)
    private = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}  # not Windows
    return np.frombuffer(mmap.mmap(-1, size * 8, **private), dtype=np.int64)


_BLOCK = 1 << 20  # samples a block: temporaries that size come back from the allocator
