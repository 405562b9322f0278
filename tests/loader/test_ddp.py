"""Real DDP: `torchrun --nproc_per_node=2` processes with the gloo backend on the CPU."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TORCHRUN = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2"]


def _torchrun(*args, timeout=240):
    run = subprocess.run(
        [*TORCHRUN, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.timeout(300)
@pytest.mark.parametrize("on_cluster", [False, True], ids=["in-process", "dask-cluster"])
def test_two_ranks_split_every_epoch_exactly_once_with_equal_batches(
    small_lake, tmp_path, cluster_address, on_cluster
):
    cluster = [cluster_address] if on_cluster else []  # two processes, two clients, one cluster
    _torchrun(Path(__file__).with_name("ddp_check.py"), small_lake[0], tmp_path, *cluster)
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in records] == [2, 2]
    for epoch in range(2):
        per_rank = [r["epochs"][epoch] for r in records]
        assert len(per_rank[0]) == len(per_rank[1]) == 11  # ceil(ceil(203 / 2) / 10)
        seen = Counter(p for batches in per_rank for batch in batches for p in batch)
        assert len(seen) == 203 and sum(seen.values()) == 204  # one sample repeated to even out
    assert records[0]["epochs"][0] != records[0]["epochs"][1]  # epochs are reshuffled
    if not on_cluster:  # torchrun put two ranks on this node: they share one decoded copy
        assert all(r["shared"] is not None for r in records)
        # each labels chunk decoded once on the node (ceil(203 / 16) of them), by one rank or
        # the other; (paths, strings, are not shared: each rank decodes its own)
        assert sum(r["loads"].get("labels", 0) for r in records) == 13
        assert all(r["loads"].get("paths", 0) > 0 for r in records)


def _log(run):
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


@pytest.mark.timeout(300)
def test_train_example_learns_and_resumes_mid_epoch(small_lake, tmp_path):
    script = EXAMPLES / "train_ddp.py"
    lake = small_lake[0]
    full = _log(_torchrun(script, lake, "--epochs", "2", "--batch-size", "16"))
    assert [e["epoch"] for e in full] == [0, 1]
    assert full[1]["loss"] < full[0]["loss"]
    for e in full:
        assert (
            0.0 <= e["held_out_accuracy"] <= 1.0
            and e["images_per_s"] > 0
            and 0 <= e["stall_pct"] <= 100
        )
    assert full[1]["memory_hit_rate"] > 0.4  # the second epoch comes from the memory tier

    ckpt = tmp_path / "ckpt.pt"
    stopped = _log(
        _torchrun(
            script,
            lake,
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--checkpoint",
            ckpt,
            "--checkpoint-every",
            "1",
            "--stop-after",
            "3",
        )
    )
    assert stopped[0]["stopped_early"] and stopped[0]["batches_per_rank"] == 3
    resumed = _log(
        _torchrun(
            script, lake, "--epochs", "2", "--batch-size", "16", "--checkpoint", ckpt, "--resume"
        )
    )
    assert resumed[0] == {"resumed": True, "epoch": 0, "batches_done": 3}
    assert (
        resumed[1]["epoch"] == 0
        and resumed[1]["batches_per_rank"] == full[0]["batches_per_rank"] - 3
    )
    assert (
        resumed[2]["epoch"] == 1 and resumed[2]["batches_per_rank"] == full[1]["batches_per_rank"]
    )
    # the checkpoint now holds the end of epoch 1: a third epoch starts afresh, no empty replay
    extended = _log(
        _torchrun(
            script, lake, "--epochs", "3", "--batch-size", "16", "--checkpoint", ckpt, "--resume"
        )
    )
    assert extended[0] == {"resumed": True, "epoch": 2, "batches_done": 0}
    assert [e["epoch"] for e in extended[1:]] == [2]
    assert extended[1]["batches_per_rank"] == full[0]["batches_per_rank"]


@pytest.mark.timeout(300)
def test_train_example_streams_through_a_dask_cluster(small_lake, cluster_address):
    script = EXAMPLES / "train_ddp.py"
    run = _torchrun(
        script, small_lake[0], "--epochs", "2", "--batch-size", "16", "--cluster", cluster_address
    )
    log = _log(run)
    assert [e["epoch"] for e in log] == [0, 1]
    assert log[1]["loss"] < log[0]["loss"]
    # the workers' memory tiers (summed) serve the second epoch: every chunk is cached by its owner
    assert log[1]["memory_hit_rate"] == 1.0
    assert "lakeio loading on the Dask cluster" in run.stdout
