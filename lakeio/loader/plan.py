"""The epoch plan: which samples each rank reads, in which order — pure functions of integers.

Shuffling is two-level so reads stay whole-chunk: the chunk order is permuted per (seed, epoch),
consecutive chunks are grouped into windows of ``window`` chunks, and samples are shuffled
within each window. A larger window mixes better and holds more decoded chunks in memory.

DDP: every rank computes the same global order and takes a contiguous, equal share of it
(contiguous, so each rank touches ~1/world of the chunks in an epoch, a different part each
epoch). ``sharding="chunks"`` instead gives each rank the same chunks every epoch (`_chunk_shares`:
a node's ranks then read disjoint parts of the lake, each cache holding its own part; a rank
only ever sees its part). With ``drop_last`` the order is cut
to a multiple of ``world * batch_size``; without it, it is padded (by repeating its start) to a
multiple of ``world`` and the last batch of every rank is equally short. Either way every rank
yields the same number of batches.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from lakeio.format.index import ChunkMembers, unpacked

SHARDINGS = ("epoch", "chunks")


@dataclass(frozen=True)
class PlanSpec:
    """Everything the order depends on, besides the lake's chunk layout."""

    batch_size: int
    shuffle: bool = True
    seed: int = 0
    window: int = 32
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1
    sharding: str = "epoch"

    def __post_init__(self) -> None:
        if self.sharding not in SHARDINGS:
            raise ValueError(
                f"sharding must be one of {', '.join(map(repr, SHARDINGS))}, not {self.sharding!r}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {self.batch_size}")
        if self.window < 1:
            raise ValueError(f"shuffle_window must be >= 1 chunk, not {self.window}")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in 0..{self.world_size - 1}")


def global_order(chunks, spec: PlanSpec, epoch: int) -> np.ndarray:
    """All ranks' samples in epoch order: chunks permuted, samples shuffled within windows.

    ``chunks``: a `ChunkMembers` or a list of per-chunk sample arrays. The chunks are gathered
    in their permuted order at once and each window is shuffled in place, which draws exactly
    what permuting each window's concatenation did (orders are kept from version to version:
    a resumed run sees the order it saved its place in)."""
    return _ordered(ChunkMembers.of(chunks), spec, epoch, samples=True, chunks=False)[0]


def global_order_and_chunks(chunks, spec: PlanSpec, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """`global_order`, and the chunk id of each of its samples (``chunks``' ids: a loader
    needs them for every sample of an epoch, and here they come without a search)."""
    return _ordered(ChunkMembers.of(chunks), spec, epoch, samples=True, chunks=True)


def _ordered(
    members: ChunkMembers, spec: PlanSpec, epoch: int, samples: bool, chunks: bool, *salt: int
):
    """(samples in epoch order, their chunk ids); what is not asked for is left empty. With the
    chunk ids, both come as int32 views of one packed array where they fit (`unpacked`).
    ``salt``: more numbers for the random stream (a rank's own, with chunk sharding)."""
    empty = np.empty(0, dtype=np.int64)
    if not len(members):
        return empty, empty
    lengths = members.lengths()
    if not spec.shuffle:
        if chunks and members.packable():
            return unpacked(members.packed(np.arange(len(members)), lengths))
        runs = np.repeat(np.arange(len(members)), lengths) if chunks else None
        return (members.flat.copy() if samples else empty), (members.ids[runs] if chunks else empty)
    rng = np.random.default_rng([spec.seed, epoch, *salt])
    chunk_order = rng.permutation(len(members))
    lengths = lengths[chunk_order]
    ends = np.cumsum(lengths)[spec.window - 1 :: spec.window].tolist()
    total = int(lengths.sum())
    if not ends or ends[-1] != total:
        ends.append(total)
    if not chunks:  # the samples alone: shuffle each window in place
        order = members.gathered(chunk_order)
        start = 0
        for end in ends:
            rng.shuffle(order[start:end])
            start = end
        return order, empty
    if members.packable():  # one array to shuffle: chunk id * 2**32 + sample
        packed = members.packed(chunk_order, lengths)
        start = 0
        for end in ends:
            rng.shuffle(packed[start:end])  # the draws of shuffling the samples alone
            start = end
        order, chunk_ids = unpacked(packed)
        return (order if samples else empty), chunk_ids
    # with the chunks: the same draws as a permutation of positions, applied to both at once
    order = members.gathered(chunk_order) if samples else empty
    moved = np.empty(total, dtype=np.int64)
    start = 0
    for end in ends:
        moved[start:end] = rng.permutation(end - start) + start
        start = end
    runs = np.repeat(chunk_order, lengths)[moved]
    return (order[moved] if samples else empty), members.ids[runs]


def samples_per_rank(total: int, spec: PlanSpec) -> int:
    if spec.drop_last:
        return (total // (spec.world_size * spec.batch_size)) * spec.batch_size
    return math.ceil(total / spec.world_size)


def rank_orders(chunks, spec: PlanSpec, epoch: int) -> np.ndarray:
    """Every rank's samples for ``epoch``, in order: row r is rank r's share."""
    if spec.sharding == "chunks":
        return _chunk_shares(ChunkMembers.of(chunks), spec, epoch, samples=True, chunks=False)[0]
    return _shares(global_order(chunks, spec, epoch), spec)


def rank_orders_and_chunks(chunks, spec: PlanSpec, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """`rank_orders`, and the chunk id of each sample in them."""
    if spec.sharding == "chunks":
        return _chunk_shares(ChunkMembers.of(chunks), spec, epoch, samples=True, chunks=True)
    order, chunk_ids = global_order_and_chunks(chunks, spec, epoch)
    return _shares(order, spec), _shares(chunk_ids, spec)


def deal_chunks(lengths: np.ndarray, world_size: int) -> np.ndarray:
    """The rank that keeps each chunk: dealt longest first (ties in the lake's order), each to
    the rank with the fewest samples so far (ties to the lowest rank). Equal chunks go round
    the ranks in the lake's order, so each rank gets a stripe of the lake (of every class, in
    a lake ingested class by class); the ranks' sample counts differ by at most one chunk."""
    owner = np.empty(len(lengths), dtype=np.int64)
    loads = [(0, rank) for rank in range(world_size)]  # (samples so far, rank): a heap
    for chunk in np.argsort(-np.asarray(lengths), kind="stable").tolist():
        samples, rank = heapq.heappop(loads)
        owner[chunk] = rank
        heapq.heappush(loads, (samples + int(lengths[chunk]), rank))
    return owner


def _chunk_shares(
    members: ChunkMembers, spec: PlanSpec, epoch: int, samples: bool, chunks: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Chunk sharding: each rank keeps the same chunks every epoch (`deal_chunks`), and orders
    them as a one-rank plan would (chunks permuted, samples shuffled in windows), from a random
    stream of its own. Shares are cut or padded (by repeating their start) to
    `samples_per_rank`, as the global order is, so every rank yields the same number of
    batches."""
    if len(members) < spec.world_size:
        raise ValueError(
            f"sharding='chunks' needs a chunk for every rank: {len(members)} chunks for "
            f"{spec.world_size} ranks (use sharding='epoch')"
        )
    per_rank = samples_per_rank(int(members.offsets[-1]), spec)
    orders = np.empty((spec.world_size, per_rank), dtype=np.int64) if samples else None
    ids = np.empty((spec.world_size, per_rank), dtype=np.int64) if chunks else None
    owner = deal_chunks(members.lengths(), spec.world_size)
    for rank in range(spec.world_size):
        mine = members.subset(np.flatnonzero(owner == rank))
        for out, got in zip(
            (orders, ids), _ordered(mine, spec, epoch, samples, chunks, rank), strict=True
        ):
            if out is not None:
                out[rank] = np.resize(got, per_rank)
    empty = np.empty((spec.world_size, 0), dtype=np.int64)
    return (orders if samples else empty), (ids if chunks else empty)


def _shares(order: np.ndarray, spec: PlanSpec) -> np.ndarray:
    per_rank = samples_per_rank(len(order), spec)
    needed = per_rank * spec.world_size
    if needed > len(order) and len(order):  # pad by repeating the start of the order
        order = np.concatenate([order, np.resize(order, needed - len(order))])
    return order[:needed].reshape(spec.world_size, per_rank)


def rank_order(chunks, spec: PlanSpec, epoch: int) -> np.ndarray:
    """This rank's samples for ``epoch``, in order (global sample indices)."""
    return rank_orders(chunks, spec, epoch)[spec.rank]


def first_need(members: ChunkMembers, spec: PlanSpec, epoch: int) -> dict[int, float]:
    """When each chunk is first read in ``epoch`` by any rank, as a share of the epoch (0 = at
    its start; ranks read their shares side by side). Chunks no rank reads are left out.

    For caches that serve all ranks (a Dask worker's): one rank's plan alone would call a
    chunk that only another rank reads next "never needed"."""
    if spec.sharding == "chunks":
        shares = _chunk_shares(members, spec, epoch, samples=False, chunks=True)[1]
    else:
        shares = _shares(_ordered(members, spec, epoch, samples=False, chunks=True)[1], spec)
    per_rank = shares.shape[1]
    if not per_rank:
        return {}
    size = int(shares.max()) + 1
    soonest = np.full(size, per_rank, dtype=np.int64)
    for share in shares:  # the first place in any share
        np.minimum(soonest, first_and_last_places(share, size, last=False)[0], out=soonest)
    needed = np.flatnonzero(soonest < per_rank)
    return dict(zip(needed.tolist(), (soonest[needed] / per_rank).tolist(), strict=True))


def first_and_last_places(
    ids: np.ndarray, size: int, last: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """For each id in ``0..size-1``: its first place in ``ids`` (``len(ids)`` where it is
    absent) and, if asked, its last (-1 where absent). Read block by block: an epoch's chunk
    ids are tens of millions, and no temporary of that length is made."""
    firsts = np.full(size, len(ids), dtype=np.int64)
    lasts = np.full(size, -1, dtype=np.int64) if last else None
    counting = np.arange(min(len(ids), _BLOCK), dtype=np.int64)
    where = np.empty_like(counting)
    for start in range(0, len(ids), _BLOCK):
        block = ids[start : start + _BLOCK]
        np.add(counting[: len(block)], start, out=where[: len(block)])
        np.minimum.at(firsts, block, where[: len(block)])
        if lasts is not None:
            np.maximum.at(lasts, block, where[: len(block)])
    return firsts, lasts


_BLOCK = 1 << 20  # samples a block: temporaries that size come back from the allocator


def batch_count(total: int, spec: PlanSpec) -> int:
    """Batches each rank yields per epoch (the same on every rank)."""
    per_rank = samples_per_rank(total, spec)
    return per_rank // spec.batch_size if spec.drop_last else math.ceil(per_rank / spec.batch_size)


def batch_slices(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
