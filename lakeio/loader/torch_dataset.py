"""The loader as a torch IterableDataset, for users who want a plain ``torch.utils.data.DataLoader``."""

from __future__ import annotations

from collections.abc import Iterator

import torch.utils.data


class LakeIterableDataset(torch.utils.data.IterableDataset):
    """Yields whole batches; use ``DataLoader(it, batch_size=None, num_workers=k)``.

    Work is split by worker info — worker w of k takes batches w, w+k, w+2k… — and the
    DataLoader collects from its workers round-robin, so batches arrive in plan order, each once.
    """

    def __init__(self, loader) -> None:
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
