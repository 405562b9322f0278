"""The loader as a torch IterableDataset, for users who want a plain ``torch.utils.data.DataLoader``."""

from __future__ import annotations

from collections.abc import Iterator

import torch.utils.data


class LakeIterableDataset(torch.utils.data.IterableDataset):
    """Yields whole batches; use ``DataLoader(it, batch_size=None, num_workers=k)``.

    Work is split by worker info — worker w of k takes batches w, w+k, w+2k… — and the
    DataLoader collects from its workers round-robin, so batches arrive in plan order, each once.
    Limits: every worker decodes the chunks its batches touch (with a shuffle window that is
    most chunks, so k workers do up to k times the decoding and hold k memory tiers); the epoch
    reaches workers when they start, so use ``persistent_workers=False``; resuming mid-epoch is
    the in-process loader's job. The in-process loader is faster and is the recommended path.
    """

    def __init__(self, loader) -> None:
        if loader._device.device.type != "cpu":
            raise ValueError(
                "as_iterable_dataset() runs in DataLoader worker processes: build the loader with "
                "device=None and move batches yourself (DataLoader(pin_memory=True) helps)"
            )
        if loader.cluster is not None:
            raise ValueError(
                "as_iterable_dataset() runs in DataLoader worker processes, where a Dask client "
                "cannot work; a cluster loader already loads in parallel on the cluster — "
                "iterate it directly"
            )
        self.loader = loader

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        info = torch.utils.data.get_worker_info()
        batches = self.loader.batches()
        if info is not None:
            batches = batches[info.id :: info.num_workers]
        return self.loader.iterate(batches)
