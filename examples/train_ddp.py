"""Train the classic small CNN on a lake with PyTorch DDP, fed by lakeio's loader.

    torchrun --nproc_per_node=2 examples/train_ddp.py demo-output/photos.lake --epochs 5

gloo on CPU, NCCL on GPU. Each epoch logs loss, accuracy on a deterministic held-out split,
images/s, the share of time the training loop waited for data (stall) and cache hit rates.
``--checkpoint`` saves model, optimizer and loader state (also mid-epoch with
``--checkpoint-every``); ``--resume`` continues from it, mid-epoch included.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time

import torch
import torch.distributed as dist
from torch import nn

import lakeio


class SmallCNN(nn.Module):
    """conv 32 3x3 → maxpool → conv 64 3x3 → maxpool → dense 128 → dense classes."""

    def __init__(self, channels: int, height: int, width: int, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        h, w = ((height - 2) // 2 - 2) // 2, ((width - 2) // 2 - 2) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * h * w, 128), nn.ReLU(), nn.Linear(128, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("lake", help="lake path or URL")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64, help="per rank")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--held-out", type=float, default=0.1, help="fraction held out for accuracy")
    p.add_argument("--cache-memory", default="1GB")
    p.add_argument("--cache-dir", help="disk tier folder (worth it for object stores)")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--checkpoint", help="save model, optimizer and loader state here")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also save every N batches")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument(
        "--stop-after", type=int, default=0, help="stop after N batches (to test resuming)"
    )
    p.add_argument(
        "--cluster",
        help="load through this Dask scheduler (tcp://host:8786) or 'local'; each worker then "
        "caches the chunks it owns (hit rates below are the workers')",
    )
    return p.parse_args()


def setup() -> tuple[int, int, torch.device]:
    if "WORLD_SIZE" in os.environ:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def all_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def evaluate(model: nn.Module, held: lakeio.Dataset, device: torch.device, norm) -> float:
    """Accuracy on the whole held-out split (each rank computes it; it is small)."""
    model.eval()
    loader = held.loader(
        256,
        shuffle=False,
        prefetch_next_epoch=False,  # read once: nothing to load ahead for
        layout="NCHW",
        dtype=torch.float32,
        normalize=norm,
        device=device,
        rank=0,
        world_size=1,
    )
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    model.train()
    return correct / max(1, total)


def _memory_figures(stats: dict) -> dict | None:
    """The memory tier's requests and hits: this process's, or summed over the Dask workers
    when the loader runs on a cluster (the trainer's own tier is then unused)."""
    if "workers" not in stats:
        return stats["cache"]["memory"]
    workers = stats["workers"].values()
    return {
        "requests": sum(w["memory_requests"] for w in workers),
        "hits": sum(w["memory_hits"] for w in workers),
    }


def _epoch_rate(before: dict | None, after: dict | None) -> float | None:
    """This epoch's hit rate of a tier (the loader's counters are cumulative)."""
    if not after:
        return None
    requests = after["requests"] - (before or {}).get("requests", 0)
    hits = after["hits"] - (before or {}).get("hits", 0)
    return round(hits / requests, 4) if requests else None


def save(path: str, model, optimizer, epoch: int, loader) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "loader": loader.state_dict(),
    }
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def main() -> None:
    args = parse_args()
    rank, world, device = setup()
    torch.manual_seed(args.seed)
    options = dict(kv.split("=", 1) for kv in args.storage_option)
    cache = lakeio.Cache(memory=args.cache_memory, disk=args.cache_dir)
    ds = lakeio.open_dataset(args.lake, cache=cache, storage_options=options)
    train, held = ds.split(args.held_out, seed=args.seed)
    h, w, c = ds.manifest.fields["images"].shape
    # the lake's own per-channel mean/std when `lakeio stats` stored them, else a generic guess
    norm = "lake" if ds.manifest.stats.get("images") else ((0.5,) * c, (0.25,) * c)
    model = SmallCNN(c, h, w, len(ds.classes)).to(device)
    ddp = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    optimizer = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    loader = train.loader(
        args.batch_size,
        seed=args.seed,
        drop_last=True,
        layout="NCHW",
        dtype=torch.float32,
        normalize=norm,
        device=device,
        cluster=args.cluster,
    )
    first_epoch = 0
    if args.resume and args.checkpoint and os.path.exists(args.checkpoint):
        state = torch.load(args.checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        first_epoch = state["loader"]["epoch"]
        if rank == 0:
            print(
                json.dumps(
                    {
                        "resumed": True,
                        "epoch": first_epoch,
                        "batches_done": state["loader"]["batches_done"],
                    }
                ),
                flush=True,
            )
    loss_fn = nn.CrossEntropyLoss()
    steps = 0
    for epoch in range(first_epoch, args.epochs):
        loader.set_epoch(epoch)
        before = loader.stats()
        started, loss_sum, batches = time.perf_counter(), 0.0, 0
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(ddp(x), y)
            loss.backward()
            optimizer.step()
            loss_sum, batches, steps = loss_sum + loss.detach().item(), batches + 1, steps + 1
            if (
                args.checkpoint
                and args.checkpoint_every
                and steps % args.checkpoint_every == 0
                and rank == 0
            ):
                save(args.checkpoint, model, optimizer, epoch, loader)
            if args.stop_after and steps >= args.stop_after:
                break
        seconds = time.perf_counter() - started
        after = loader.stats()
        samples = after["samples"] - before["samples"]
        stall = after["stall_seconds"] - before["stall_seconds"]
        loss_total, n_batches, images, stall_total, secs = all_sum(
            [loss_sum, batches, samples, stall, seconds], device
        )
        stopped = bool(args.stop_after and steps >= args.stop_after)
        if rank == 0:
            accuracy = evaluate(model, held, device, norm)
            mem = _epoch_rate(*(_memory_figures(s) for s in (before, after)))
            disk = _epoch_rate(before["cache"]["disk"], after["cache"]["disk"])
            print(json.dumps({
                "epoch": epoch, "loss": round(loss_total / max(1, n_batches), 4), "held_out_accuracy": round(accuracy, 4),
                "images_per_s": round(images / max(1e-9, secs / world)), "stall_pct": round(100 * stall_total / max(1e-9, secs), 1),
                "memory_hit_rate": mem, "disk_hit_rate": disk,
                "batches_per_rank": int(n_batches / world), "stopped_early": stopped,
            }), flush=True)  # fmt: skip
            if args.checkpoint and not stopped:
                save(args.checkpoint, model, optimizer, epoch + 1, loader)
        if stopped:
            break
    loader.close()
    del ddp, model
    gc.collect()
    if dist.is_initialized():
        dist.barrier()  # ending together avoids gloo's abort at exit (see PITFALLS)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
