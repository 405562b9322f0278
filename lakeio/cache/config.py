"""`lakeio.Cache`: how much to cache where, with defaults from dask.config (``lakeio.cache.*``).

Defaults: a memory tier of 2 GiB per process; a disk tier only when a folder is given, either
here or by ``lakeio.cache.disk`` in dask's config (e.g. the environment variable
``DASK_LAKEIO__CACHE__DISK=/nvme/lakeio``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import dask.config

from lakeio.sizes import parse_size

dask.config.update_defaults(
    {
        "lakeio": {
            "cache": {
                "memory": "2GiB",
                "disk": None,
                "disk-size": "50GiB",
                # the node-shared tier's budget: "auto" (on for several ranks per node), 0 (off)
                "shared": "auto",
                "shared-folder": None,  # where the node's processes meet (default: /dev/shm)
            }
        }
    }
)


def ranks_on_this_node() -> int:
    """How many processes of this job share the node, as torchrun says (``LOCAL_WORLD_SIZE``);
    1 where nothing says (a single process)."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "1")
    try:
        return max(1, int(value))
    except ValueError:
        raise ValueError(
            f"the environment variable LOCAL_WORLD_SIZE must be a whole number of processes "
            f"(torchrun sets it), not {value!r}"
        ) from None


@dataclass(frozen=True)
class Cache:
    """Cache budgets: ``memory`` for decoded chunks (per process), ``disk`` folder and ``disk_size``.

    Memory trades RAM for decode work (a second epoch that fits is served with no reads at all);
    the disk tier trades local disk for origin reads (worth it for object stores and slow mounts,
    not for a lake already on local NVMe). Sizes take "8GB", "512MiB" or plain bytes.
    ``eviction`` is the memory tier's policy: ``plan`` (default; keeps what the loader's plan
    needs soonest) or ``lru``; see docs/benchmarks.md for the measured difference.
    ``shared``: a budget for the node's one copy of decoded chunks, in files under
    ``shared_folder`` (default ``/dev/shm``) that every process of the node maps
    (`lakeio.cache.shared`): the DDP ranks of a node decode each chunk once and hold it once.
    ``"auto"`` (the default) turns it on where several ranks share the node — torchrun's
    ``LOCAL_WORLD_SIZE`` above 1 — with ``memory`` times their number: the node's memory stays
    what N per-process tiers would take, and holds N times as much of the lake. ``0``: off.
    With it, ``memory`` is for what a process holds privately: the mappings of the node's copy
    it keeps are not charged to it (see docs/loader.md, "Sizing a node of N GPUs").
    """

    memory: int | str | None = None
    disk: str | None = None
    disk_size: int | str | None = None
    eviction: str = "plan"
    shared: int | str | None = None
    shared_folder: str | None = None

    def shared_bytes(self) -> int:
        """The node-shared tier's budget in this process (0: none). ``"auto"`` is decided where
        the lake is read (a Dask worker is not a torchrun rank, though its client may be)."""
        if self.shared != "auto":
            return self.shared
        ranks = ranks_on_this_node()
        return self.memory * ranks if ranks > 1 else 0

    def __post_init__(self) -> None:
        memory = self.memory if self.memory is not None else dask.config.get("lakeio.cache.memory")
        disk = self.disk if self.disk is not None else dask.config.get("lakeio.cache.disk")
        disk_size = (
            self.disk_size
            if self.disk_size is not None
            else dask.config.get("lakeio.cache.disk-size")
        )
        object.__setattr__(self, "memory", parse_size(memory, "Cache(memory=...)"))
        object.__setattr__(self, "disk", disk or None)
        object.__setattr__(self, "disk_size", parse_size(disk_size, "Cache(disk_size=...)"))
        shared = self.shared if self.shared is not None else dask.config.get("lakeio.cache.shared")
        if shared != "auto":
            shared = parse_size(shared, "Cache(shared=...)")
        object.__setattr__(self, "shared", shared)
        if self.shared_folder is None:
            object.__setattr__(
                self, "shared_folder", dask.config.get("lakeio.cache.shared-folder", None)
            )
        self.shared_bytes()  # (a bad LOCAL_WORLD_SIZE said now, not at the first read)
        if self.eviction not in ("plan", "lru"):
            raise ValueError(f"Cache(eviction=...) must be 'plan' or 'lru', not {self.eviction!r}")
