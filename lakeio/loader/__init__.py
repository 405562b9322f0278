"""The streaming loader: plan → prefetch → batch → device, for PyTorch training (DDP-aware)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from lakeio.errors import LakeWarning
from lakeio.loader.device import (
    Accelerator,
    CudaAccelerator,
    DeviceOptions,
    lake_normalization,
)
from lakeio.loader.loader import Loader
from lakeio.loader.options import StreamOptions
from lakeio.loader.plan import PlanSpec
from lakeio.loader.reads import lake_fits
from lakeio.sizes import human_bytes


def make_loader(
    dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    shuffle_window: int = 32,
    fields: tuple[str, ...] = ("images", "labels"),
    layout: str = "NHWC",
    dtype: torch.dtype = torch.uint8,
    normalize: tuple | str | None = None,
    transform: Callable | None = None,
    device: str | torch.device | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    output: str = "tuple",
    prefetch_bytes: int | None = None,
    threads: int | None = None,
    prefetch_next_epoch: bool = True,
    cluster=None,
    decode: str = "worker",
    affinity: bool = True,
    sharding: str = "epoch",
) -> Loader:
    """Batches of ``dataset`` as torch tensors.

    ``shuffle_window`` chunks are shuffled together: more mixes better and holds more decoded
    chunks in memory (32 chunks ≈ 128 MiB decoded, plus as much prefetched; measured quality per
    window size in docs/benchmarks.md — a class-sorted lake needs a wide window). ``rank``/``world_size`` default to torch.distributed's when it is
    initialised. ``drop_last`` cuts the epoch to whole global batches; otherwise the order is
    padded by repeating its first samples so every rank yields the same number of batches.
    ``sharding``: ``"epoch"`` (default) splits each epoch's global order between the ranks, so
    over a few epochs every rank reads every sample; ``"chunks"`` keeps each rank on the same
    chunks (r, r + world, …) every epoch, shuffled among themselves: each rank then reads (and
    caches) only its 1/world of the lake, and only ever sees those samples. The global batch
    still mixes all ranks' data (measured quality: docs/benchmarks.md, `benchmarks/shuffle.py`).
    ``normalize="lake"`` uses the per-channel mean and std stored by ``lakeio stats``.
    ``prefetch_next_epoch``: when an epoch has been read to its end, start loading the first
    chunks of the next one (the usual ``set_epoch(e + 1)``) while the training loop finishes;
    another epoch (or none) next just drops that work.
    ``transform`` is called on each batch (a dict of tensors) after the device stage.
    ``threads`` load chunks in process: by default 4 for a lake on a local disk, and for a
    remote one as many as the prefetch budget has chunks (at most ``lakeio.read.max-in-flight``,
    32), since there each load mostly waits for the store: Little's law wants rate × latency /
    chunk size requests in flight, and the budget bounds what may be.

    ``cluster`` (a `distributed.Client`, a scheduler address, or ``"local"``) runs the chunk
    loads as ``lakeio-load-…`` tasks on the Dask workers, each worker caching the chunks it owns
    (same plan, order and state_dict as in process). ``decode="worker"`` (default) ships decoded
    samples; ``"trainer"`` ships stored bytes and decodes here. ``affinity=False`` lets Dask place loads
    anywhere (for comparison). Close the loader (or use it in ``with``) to release the cluster.
    """
    rank, world_size = _rank_and_world(rank, world_size)
    if isinstance(normalize, str):
        if normalize != "lake":
            raise ValueError(f'normalize must be (mean, std), "lake" or None, not {normalize!r}')
        normalize = lake_normalization(dataset.manifest)
    if output not in ("tuple", "dict"):
        raise ValueError(f"output must be 'tuple' or 'dict', not {output!r}")
    if prefetch_bytes is None and cluster is None:  # (on a cluster, Cache is the workers')
        shuffle_window = window_within_budget(dataset, tuple(fields), shuffle_window)
    plan = PlanSpec(
        batch_size, shuffle, seed, shuffle_window, drop_last, rank, world_size, sharding
    )
    device_opts = DeviceOptions(device, layout, dtype, normalize)
    stream = StreamOptions(
        tuple(fields), prefetch_bytes, threads, output=output,
        prefetch_next_epoch=prefetch_next_epoch,
    )  # fmt: skip
    session = options = None
    if cluster is not None:
        from lakeio.cluster.loads import ClusterOptions
        from lakeio.cluster.session import ClusterSession

        options = ClusterOptions(decode=decode, affinity=affinity)
        session = ClusterSession(cluster)
    try:
        return Loader(dataset, plan, device_opts, stream, transform, session, options)
    except BaseException:
        if session is not None:  # a connection (or a whole LocalCluster) nobody would close
            session.close()
        raise


def window_within_budget(dataset, fields: tuple[str, ...], window: int) -> int:
    """The shuffle window, shrunk where two of it (what the prefetch holds) would not fit in the
    memory tier's budget, with one warning that says to what and what it costs."""
    tier = dataset.source.memory
    if tier is None or any(f not in dataset.fields for f in fields):  # (the Loader says which)
        return window
    chunk = max(1, dataset.chunk_nbytes(fields))
    if 2 * window * chunk <= tier.capacity or lake_fits(dataset, tier, fields):
        return window  # (a lake the tier holds whole: the window's chunks are the tier's)
    fits = max(1, tier.capacity // (2 * chunk))
    warnings.warn(
        f"Cache(memory={human_bytes(tier.capacity)}) cannot hold two shuffle windows of "
        f"{window} chunks ({human_bytes(2 * window * chunk)} of decoded chunks, which the "
        f"loader holds within that budget); the shuffle window is {fits} chunk"
        f"{'s' if fits > 1 else ''} instead. A narrower window mixes less: see 'Shuffle "
        "quality' in docs/benchmarks.md; give the cache more memory, or a disk tier for the rest.",
        LakeWarning,
        stacklevel=4,  # (the caller of Dataset.loader)
    )
    return fits


def _rank_and_world(rank: int | None, world: int | None) -> tuple[int, int]:
    """As given; else torch.distributed's, when it is initialised; else rank 0 of 1."""
    if rank is not None and world is not None:
        return rank, world
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return rank or 0, world or 1


__all__ = [
    "Accelerator",
    "CudaAccelerator",
    "DeviceOptions",
    "Loader",
    "PlanSpec",
    "StreamOptions",
    "make_loader",
]
