"""Run under torchrun by test_ddp.py: each rank records the samples and batch count it got."""

import gc
import json
import sys
from collections import Counter

import torch.distributed as dist

import lakeio


def main(lake: str, out: str, cluster: str | None = None) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    ds = lakeio.open_dataset(lake)
    loads = Counter()  # chunks this process decoded from the origin, by field
    load = ds.source._load

    def counted(field, key, cache_key):
        loads[field] += 1
        return load(field, key, cache_key)

    ds.source._load = counted
    # rank/world from dist; with a scheduler address, each rank is its own client of the cluster
    loader = ds.loader(batch_size=10, seed=7, fields=("labels", "paths"), cluster=cluster)
    record = {"rank": rank, "world": dist.get_world_size(), "epochs": []}
    for epoch in range(2):
        loader.set_epoch(epoch)
        record["epochs"].append([list(paths) for _, paths in loader])
    loader.close()
    if cluster is None:  # this process read the lake: through the node's shared tier?
        source = ds.source.stats()
        record["loads"] = dict(loads)
        record["shared"] = source["shared"]
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump(record, fh)
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
