"""lakeio, MosaicML Streaming and LitData through one fault proxy: a cold first epoch per latency.

Setup: bash benchmarks/peers-setup.sh   (builds .venv-peers with the peers; never touches .venv)
Run:   .venv/bin/python benchmarks/objectstore_peers.py [--scale 1] [--rounds 3]

moto's S3 server on 127.0.0.1 holds the same natural photo crops (lakeio.testing.images,
64x64, 10,000 x scale) three ways: a lakeio lake (lz4, default chunks of about 4 MiB), a
MosaicML Streaming MDS dataset and a LitData optimized dataset (raw uint8 pixels, shards of
the same 4 MiB, so every loader fetches objects of the same size and the added latency per
request is what differs). `lakeio.testing.s3proxy.FaultProxy` sits in front of the server;
for each added latency (0, 20, 50, 100 ms per request) each loader runs one shuffled first
epoch, batch 256, from an empty cache (a new local cache dir for the peers, no cache tier for
lakeio), so every byte comes through the proxy.

Every loader runs in a child process of its own (lakeio with .venv/bin/python, the peers with
.venv-peers/bin/python), so none shares the server's and the proxy's interpreter (and GIL);
--lakeio-in-process runs lakeio's epochs in this process instead, as benchmarks/objectstore.py
does. The child times its epoch (iteration only: the index/manifest is read before the clock starts, but
its requests are counted), counts the samples and sums their pixels and labels, which must
match what was written. Rounds alternate the order of latencies and loaders. The table gives
the median epoch, each loader's rate as a share of its own +0 ms epoch in the same round, and
the proxy's requests per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
BUCKET = "lakeio-peers"
KEY = SECRET = "bench"
REGION = "us-east-1"
LATENCIES_MS = (0, 20, 50, 100)
LOADERS = ("lakeio", "MosaicML Streaming", "LitData")
PEER_OF = {"MosaicML Streaming": "streaming", "LitData": "litdata"}
PREFIX = {"lakeio": "lakeio", "MosaicML Streaming": "mds", "LitData": "litdata"}
BATCH = 256
WORKERS = 2  # DataLoader workers for the peers, as in benchmarks/peers.py
SHARD_BYTES = 4 << 20  # lakeio's default chunk (about 4 MiB decoded); the peers' shards match it
CHILD_TIMEOUT_S = 600


# --- children: one loader's epoch, or one peer's writer, in the interpreter that has it -------


def _tally(batches: Iterable[tuple[Any, Any]]) -> tuple[float, dict[str, int]]:
    """Time an epoch and count what it delivered: samples, and the sums of pixels and labels
    (order-free, so a shuffled epoch that read every sample exactly once matches the source)."""
    import torch

    samples = pixels = labels = 0
    started = time.perf_counter()
    for images, targets in batches:
        samples += int(images.shape[0])
        pixels += int(torch.as_tensor(images).sum(dtype=torch.int64))
        labels += int(torch.as_tensor(targets).sum(dtype=torch.int64))
    seconds = time.perf_counter() - started
    return seconds, {"samples": samples, "pixel_sum": pixels, "label_sum": labels}


def epoch_lakeio(remote: str, options: dict, cache: str) -> dict:
    """lakeio as benchmarks/objectstore.py runs it: no memory tier, no disk tier, no prefetch
    of a next epoch."""
    import lakeio

    opened = time.perf_counter()
    ds = lakeio.open_dataset(remote, storage_options=options, cache=lakeio.Cache(memory=0))
    loader = ds.loader(BATCH, seed=0, prefetch_next_epoch=False)
    setup = time.perf_counter() - opened
    seconds, tally = _tally(loader)
    return {
        "seconds": seconds,
        "setup_s": setup,
        **tally,
        "threads": loader.stats()["load_threads"],
    }


def _streaming_images() -> type:
    """MDS samples as (image, label) pairs, for the DataLoader's default collate."""
    from streaming import StreamingDataset

    class Images(StreamingDataset):
        def __getitem__(self, idx: int) -> tuple[np.ndarray, int]:
            obj = super().__getitem__(idx)
            return obj["image"], obj["label"]

    return Images


def epoch_streaming(remote: str, options: dict, cache: str) -> dict:
    """MosaicML Streaming's StreamingDataset (it reads the endpoint from S3_ENDPOINT_URL) and a
    torch DataLoader with 2 workers, as benchmarks/peers.py runs it."""
    import torch
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    opened = time.perf_counter()
    ds = _streaming_images()(
        remote=remote, local=cache, shuffle=True, shuffle_seed=0, batch_size=BATCH
    )
    # The dataset has just fetched index.json with a boto3 client that keeps its connection.
    # Forked DataLoader workers inherit that client and read answers off the same socket: one
    # worker then waits for a body another took (a 60 s read timeout) or stores another's
    # answer as a shard (an empty file, then `ValueError: not enough values to unpack`). Drop
    # the client, as Streaming's own pickling does for spawned workers, so each worker makes
    # its own.
    for stream in ds.streams:
        stream._downloader.clean_up()
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=WORKERS)
    setup = time.perf_counter() - opened
    seconds, tally = _tally(loader)
    return {"seconds": seconds, "setup_s": setup, **tally}


def epoch_litdata(remote: str, options: dict, cache: str) -> dict:
    """LitData's StreamingDataset (endpoint and keys in storage_options, handed to boto3's client)
    and its StreamingDataLoader with 2 workers, as benchmarks/peers.py runs it."""
    import litdata as ld
    import litdata.streaming.downloader as downloader

    # LitData fetches chunks with obstore, whose client options it fixes without allow_http, so
    # obstore refuses the proxy's http:// endpoint (BadScheme). Real S3 is https; this only adds
    # the one option a plain-http endpoint needs and leaves the download path as it is.
    downloader._OBSTORE_CLIENT_OPTIONS = {**downloader._OBSTORE_CLIENT_OPTIONS, "allow_http": True}
    opened = time.perf_counter()
    ds = ld.StreamingDataset(remote, cache_dir=cache, storage_options=options, shuffle=True, seed=0)
    loader = ld.StreamingDataLoader(ds, batch_size=BATCH, num_workers=WORKERS)
    setup = time.perf_counter() - opened
    seconds, tally = _tally((b["image"], b["label"]) for b in loader)
    return {"seconds": seconds, "setup_s": setup, **tally}


EPOCHS = {"lakeio": epoch_lakeio, "streaming": epoch_streaming, "litdata": epoch_litdata}


def write_streaming(data: Path, out: Path) -> None:
    """An MDS dataset of raw pixels: a fixed-shape uint8 ndarray column, shards of SHARD_BYTES."""
    from streaming import MDSWriter

    images, labels = np.load(data / "images.npy"), np.load(data / "labels.npy")
    h, w, c = images.shape[1:]
    columns = {"image": f"ndarray:uint8:{h},{w},{c}", "label": "int"}
    with MDSWriter(out=str(out), columns=columns, size_limit=SHARD_BYTES) as writer:
        for image, label in zip(images, labels.tolist(), strict=True):
            writer.write({"image": image, "label": label})


def _litdata_sample(item: tuple[np.ndarray, int]) -> dict:
    image, label = item
    return {"image": image, "label": label}


def write_litdata(data: Path, out: Path) -> None:
    """A LitData optimized dataset of raw pixels (numpy serializer), chunks of SHARD_BYTES."""
    import litdata as ld

    images, labels = np.load(data / "images.npy"), np.load(data / "labels.npy")
    ld.optimize(
        fn=_litdata_sample,
        inputs=list(zip(images, labels.tolist(), strict=True)),
        output_dir=str(out),
        chunk_bytes=SHARD_BYTES,
        num_workers=WORKERS,
        verbose=False,
    )


WRITERS = {"streaming": write_streaming, "litdata": write_litdata}


def _versions(dists: Iterable[str]) -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in dists:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def child(args: argparse.Namespace) -> None:
    """The --child mode: one job, its result as JSON on stdout's last line."""
    if args.write:
        started = time.perf_counter()
        WRITERS[args.child](Path(args.data), Path(args.write))
        dists = ("torch", "boto3", "mosaicml-streaming", "litdata", "obstore")
        result = {"seconds": time.perf_counter() - started, "versions": _versions(dists)}
    else:
        options = json.loads(args.options or "{}")
        result = EPOCHS[args.child](args.remote, options, args.cache)
    print(json.dumps(result), flush=True)


# --- the driver: server, proxy, datasets, rounds ----------------------------------------------


def _env(endpoint: str) -> dict[str, str]:
    """The environment of a child: the proxy as every client's S3 endpoint, moto's keys, and no
    route to anything but loopback."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(
        AWS_ACCESS_KEY_ID=KEY,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL=endpoint,  # boto3 >= 1.34 and obstore
        S3_ENDPOINT_URL=endpoint,  # MosaicML Streaming
        AWS_ALLOW_HTTP="true",  # obstore (LitData's chunk downloads) refuses http:// otherwise
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=str(ROOT),
    )
    return env


def _run_child(python: Path, argv: list[str], endpoint: str) -> dict:
    """Run this file's --child mode; its last stdout line is the result."""
    cmd = [str(python), str(Path(__file__).resolve()), *argv]
    done = subprocess.run(
        cmd, env=_env(endpoint), capture_output=True, text=True, timeout=CHILD_TIMEOUT_S
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(argv[:2])} exited {done.returncode}:\n{tail}")
    return json.loads(lines[-1])


def _upload(client: Any, local: Path, prefix: str) -> int:
    """Put a peer's written dataset into the bucket (straight to the server, not the proxy)."""
    total = 0
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(local).as_posix()}")
        total += path.stat().st_size
    return total


def _bucket_bytes(client: Any, prefix: str) -> tuple[int, int]:
    """(objects, bytes) under a prefix."""
    objects = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            objects += 1
            size += obj["Size"]
    return objects, size


def _orders(rounds: int) -> Iterator[list[tuple[int, str]]]:
    """Each round's (latency, loader) runs: even rounds ascending, odd rounds reversed."""
    runs = [(ms, name) for ms in LATENCIES_MS for name in LOADERS]
    for round_ in range(rounds):
        yield runs if round_ % 2 == 0 else runs[::-1]


def _epoch(name: str, proxy: Any, server_options: dict, work: Path, in_process: bool) -> dict:
    """One cold first epoch of one loader through the proxy, in a child process (or, for lakeio
    with ``in_process``, in this one, as benchmarks/objectstore.py runs it)."""
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
    remote = f"s3://{BUCKET}/{PREFIX[name]}"
    if name == "lakeio" and in_process:
        proxy.reset_counts()
        result = epoch_lakeio(remote, {**server_options, "endpoint_url": proxy.endpoint}, "")
        return {**result, "requests": proxy.counts.get("requests", 0)}
    if name == "lakeio":
        python, options = Path(sys.executable), {**server_options, "endpoint_url": proxy.endpoint}
    else:
        python = PEERS_PYTHON
        options = {
            "endpoint_url": proxy.endpoint,
            "aws_access_key_id": KEY,
            "aws_secret_access_key": SECRET,
            "region_name": REGION,
        }
    argv = ["--child", PEER_OF.get(name, "lakeio"), "--remote", remote, "--cache", str(cache)]
    argv += ["--options", json.dumps(options)]
    proxy.reset_counts()
    try:
        result = _run_child(python, argv, proxy.endpoint)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    result["requests"] = proxy.counts.get("requests", 0)
    return result


def _tries(name: str, ms: int, proxy: Any, options: dict, work: Path, in_process: bool) -> dict:
    """An epoch, run again once if it fails (MosaicML Streaming's workers now and then read a
    shard short here); the failed try is counted, and reported in the table."""
    failed: list[str] = []
    for _ in range(2):
        try:
            return {**_epoch(name, proxy, options, work, in_process), "failed_tries": len(failed)}
        except Exception as e:  # a failing loader is reported, not fatal
            failed.append(f"{type(e).__name__}: {e}")
            print(f"  {name} +{ms} ms failed: {failed[-1].splitlines()[-1]}", flush=True)
    return {"error": failed[-1], "failed_tries": len(failed)}


def _fmt_range(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}"


def render(results: dict, expected: dict) -> str:
    """The Markdown table: median epoch, share of the loader's own +0 ms epoch per round,
    requests per epoch, and whether every epoch delivered exactly the written samples."""
    lines = [
        "| loader | added latency | first epoch, s (median) | images/s | share of own +0 ms "
        "(median; per round) | requests per epoch | all samples read | failed tries, rerun |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in LOADERS:
        for ms in LATENCIES_MS:
            runs = results[name][ms]
            good = [r for r in runs if "error" not in r]
            if not good:
                error = runs[-1]["error"].splitlines()[-1][:120] if runs else "not run"
                lines.append(f"| {name} | +{ms} ms | failed: {error} | | | | | |")
                continue
            median = statistics.median(r["seconds"] for r in good)
            shares = [
                base["seconds"] / r["seconds"]
                for base, r in zip(results[name][0], runs, strict=True)
                if "error" not in base and "error" not in r
            ]
            share = f"{statistics.median(shares):.2f} ({_fmt_range(shares)})" if shares else "–"
            requests = sorted({r["requests"] for r in good})
            req = f"{requests[0]:,}" if len(requests) == 1 else f"{requests[0]:,}–{requests[-1]:,}"
            exact = all(all(r[k] == v for k, v in expected.items()) for r in good)
            ok = f"{'yes' if exact else 'NO'} ({len(good)}/{len(runs)} epochs)"
            failed = sum(r.get("failed_tries", 0) for r in runs)
            lines.append(
                f"| {name} | +{ms} ms | {median:.2f} | {expected['samples'] / median:,.0f} | "
                f"{share} | {req} | {ok} | {failed} |"
            )
    return "\n".join(lines)


def plot(results: dict, path: Path, title: str) -> None:
    """Left: median epoch time against added latency, one line per loader (band: min–max).
    Right: the same as a share of the loader's own +0 ms epoch in the same round (median), which
    takes each loader's speed without latency out and leaves what the latency costs it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"lakeio": "#2a9d8f", "MosaicML Streaming": "#e76f51", "LitData": "#6d597a"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.3))
    for name in LOADERS:
        base = results[name]["0"]
        xs, med, lo, hi, shares = [], [], [], [], []
        for ms in LATENCIES_MS:
            runs = results[name][str(ms)]
            times = [r["seconds"] for r in runs if "error" not in r]
            paired = [
                b["seconds"] / r["seconds"]
                for b, r in zip(base, runs, strict=True)
                if "error" not in b and "error" not in r
            ]
            if times and paired:
                xs.append(ms)
                med.append(statistics.median(times))
                lo.append(min(times))
                hi.append(max(times))
                shares.append(statistics.median(paired))
        if xs:
            color = colors.get(name)
            left.plot(xs, med, marker="o", label=name, color=color)
            left.fill_between(xs, lo, hi, alpha=0.15, color=color)
            right.plot(xs, shares, marker="o", label=name, color=color)
    left.set_ylabel("cold first epoch, s (median; band: min–max)")
    left.set_ylim(bottom=0)
    right.set_ylabel("rate as a share of own +0 ms epoch (median)")
    right.set_ylim(0, max(1.2, right.get_ylim()[1]))
    right.axhline(1.0, color="#999999", lw=0.8, ls="--")
    for ax in (left, right):
        ax.set_xticks(LATENCIES_MS)
        ax.set_xlabel("latency added per request by the proxy, ms")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw(results: dict, path: Path, title: str) -> None:
    """Plot here if this interpreter has matplotlib, else with .venv-peers' (which has it)."""
    data = json.loads(json.dumps(results))  # latencies as string keys, as the child sees them
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump({"results": data, "title": title}, fh)
        try:
            cmd = [str(PEERS_PYTHON), str(Path(__file__).resolve()), "--draw", fh.name, str(path)]
            subprocess.run(cmd, check=True, timeout=120)
        finally:
            os.unlink(fh.name)
        return
    plot(data, path, title)


def _images(n: int, size: int, data: Path) -> dict[str, int]:
    """The photo crops every loader reads, saved for the peers' writers; returns the sums an
    epoch must reproduce."""
    from lakeio.testing.images import photo_crops

    pairs = list(photo_crops(n, (size, size), seed=0))
    images = np.stack([p for p, _ in pairs])
    labels = np.array([label for _, label in pairs], dtype=np.int64)
    np.save(data / "images.npy", images)
    np.save(data / "labels.npy", labels)
    return {
        "samples": n,
        "pixel_sum": int(images.sum(dtype=np.int64)),
        "label_sum": int(labels.sum()),
    }


def _write_all(work: Path, options: dict, client: Any) -> dict[str, str]:
    """Write the lake (lakeio, in this process) and the peers' datasets (their writers, in
    .venv-peers) into the bucket, straight to the server; returns the libraries' versions."""
    import lakeio

    images, labels = np.load(work / "data" / "images.npy"), np.load(work / "data" / "labels.npy")
    started = time.perf_counter()
    lakeio.ingest(images, f"s3://{BUCKET}/{PREFIX['lakeio']}", labels=labels, codec="lz4",
                  storage_options=options, progress=False, echo=None)  # fmt: skip
    print(f"lakeio lake written in {time.perf_counter() - started:.1f} s", flush=True)
    versions = {"lakeio": lakeio.__version__}
    for name, peer in PEER_OF.items():
        out = work / f"written-{peer}"
        argv = ["--child", peer, "--data", str(work / "data"), "--write", str(out)]
        wrote = _run_child(PEERS_PYTHON, argv, options["endpoint_url"])
        versions.update(wrote["versions"])
        _upload(client, out, PREFIX[name])
        shutil.rmtree(out, ignore_errors=True)
        print(f"{name} dataset written in {wrote['seconds']:.1f} s", flush=True)
    return versions


def _rounds(
    args: argparse.Namespace, proxy: Any, options: dict, work: Path, expected: dict
) -> dict[str, dict[int, list[dict]]]:
    """Every (latency, loader) epoch, round after round; {loader: {ms: [result per round]}}."""
    results: dict[str, dict[int, list[dict]]] = {
        name: {ms: [] for ms in LATENCIES_MS} for name in LOADERS
    }
    for round_, runs in enumerate(_orders(args.rounds)):
        line = []
        for ms, name in runs:
            proxy.set_faults(latency=ms / 1000)
            r = _tries(name, ms, proxy, options, work, args.lakeio_in_process)
            results[name][ms].append(r)
            if "error" not in r:
                exact = all(r[k] == v for k, v in expected.items())
                line.append(f"{name} +{ms} {r['seconds']:.2f}s{'' if exact else ' (NOT EXACT)'}")
        print(f"round {round_ + 1}: " + ", ".join(line), flush=True)
    return results


def driver(args: argparse.Namespace) -> None:
    """Start the server and the proxy, write the three datasets, run the rounds, stop both,
    and print (and write) the table and the plot."""
    import logging

    import boto3

    from lakeio.testing.s3proxy import FaultProxy
    from lakeio.testing.s3server import moto_bucket

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server: no line per request
    if not PEERS_PYTHON.exists():
        sys.exit(f"{PEERS_PYTHON} is missing: run bash benchmarks/peers-setup.sh first")
    command = shlex.join([os.path.relpath(sys.executable, ROOT), *sys.argv])
    n, size = int(10000 * args.scale), args.size
    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="lakeio-objectstore-peers-"))
    try:
        (work / "data").mkdir()
        expected = _images(n, size, work / "data")
        print(f"{n} crops {size}x{size} ({n * size * size * 3 / 1e6:.0f} MB decoded)", flush=True)
        with (
            moto_bucket(BUCKET, key=KEY, secret=SECRET) as options,
            FaultProxy(options["endpoint_url"]) as proxy,
        ):
            client = boto3.client(
                "s3", endpoint_url=options["endpoint_url"], region_name=REGION,
                aws_access_key_id=KEY, aws_secret_access_key=SECRET,
            )  # fmt: skip
            versions = _write_all(work, options, client)
            sizes = {name: _bucket_bytes(client, PREFIX[name] + "/") for name in LOADERS}
            print("in the bucket: " + ", ".join(
                f"{k} {o} objects, {b / 1e6:.0f} MB" for k, (o, b) in sizes.items()), flush=True)  # fmt: skip
            results = _rounds(args, proxy, options, work, expected)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - began
    table = render(results, expected)
    print(table)
    print(f"benchmark took {elapsed:.0f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "sizes": sizes}, indent=1))
    if args.png:
        title = (
            f"{n:,} crops {size}x{size}, batch {BATCH}, cold first epoch through the fault proxy"
        )
        _draw(results, Path(args.png), title)
        print(f"wrote {args.png}")
    if args.out:
        report = _report(command, table, n, size, expected, sizes, versions, args, elapsed)
        Path(args.out).write_text(report)
        print(f"wrote {args.out}")


def _report(
    command: str,
    table: str,
    n: int,
    size: int,
    expected: dict,
    sizes: dict[str, tuple[int, int]],
    versions: dict[str, str],
    args: argparse.Namespace,
    elapsed: float,
) -> str:
    where = (
        "lakeio in the process that serves the bucket and the proxy, each peer in a child process"
        if args.lakeio_in_process
        else "each loader in a child process of its own"
    )
    layout = {
        "lakeio": "lz4, its default chunks (about 4 MiB decoded; images and labels each chunked)",
        "MosaicML Streaming": "MDS, a fixed-shape `ndarray:uint8` column (raw pixels), 4 MiB shards",
        "LitData": "`optimize()` of numpy arrays (raw pixels), 4 MiB chunks",
    }
    stored = "\n".join(
        f"- {k}: {layout[k]}; {o} objects, {b / 1e6:.1f} MB" for k, (o, b) in sizes.items()
    )
    libs = ", ".join(f"{k} {v}" for k, v in versions.items())
    return f"""# lakeio and its peers through one fault proxy: epoch time against added latency

Command (repo root): `{command}` ({elapsed / 60:.1f} min in all)

Machine: the 2-core VM (shared with other work, so absolute times are noisy; the shares of
each loader's own +0 ms epoch in the same round are what to read). Python {sys.version.split()[0]};
{libs}.

Data: {n:,} natural photo crops (lakeio.testing.images.photo_crops, seed 0), {size}x{size} RGB,
{expected["samples"] * size * size * 3 / 1e6:.0f} MB decoded, the same arrays for every loader,
in moto's S3 server on 127.0.0.1 behind `lakeio.testing.s3proxy.FaultProxy`, which adds the
latency to every request:

{stored}

Each cell: one shuffled first epoch, batch {BATCH}, from an empty cache, {where}
(lakeio: `open_dataset(..., cache=lakeio.Cache(memory=0)).loader({BATCH}, seed=0,
prefetch_next_epoch=False)`; the peers: their StreamingDataset with a new local cache dir and a
DataLoader with {WORKERS} workers, whose start is inside the clock, as lakeio's threads are).
The clock covers the iteration only; the index/manifest read before it is counted in the
requests. {args.rounds} rounds, the order of latencies and loaders
reversed every other round. "share of own +0 ms" is the loader's +0 ms epoch time divided by
this epoch's time in the same round (1.00: the latency cost nothing). "all samples read": every
epoch delivered {n:,} samples whose pixel and label sums equal the written data's.

{table}

![epoch time against added latency](objectstore-peers.png)

How each loader reaches the bucket through the proxy (nothing but 127.0.0.1 is used):

- lakeio: s3fs storage options `{{"key", "secret", "endpoint_url": <proxy>, "client_kwargs":
  {{"region_name": "us-east-1"}}}}`.
- MosaicML Streaming: its S3 client takes the endpoint only from the environment
  (`S3_ENDPOINT_URL`), the keys from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` and the region
  from `AWS_DEFAULT_REGION`; `StreamingDataset(remote="s3://…", local=<new dir>)`. The dataset
  fetches `index.json` in the parent with a boto3 client that keeps its connection open, and
  forked DataLoader workers inherit that client: both then read answers off one socket, and an
  epoch either stalled for Streaming's 60 s read timeout or stored another request's answer as
  a shard (an empty file, then `ValueError: not enough values to unpack`). The child drops
  that client after opening the dataset (`stream._downloader.clean_up()`, what Streaming's own
  pickling does for spawned workers), so each worker makes its own.
- LitData: `StreamingDataset("s3://…", cache_dir=<new dir>, storage_options={{"endpoint_url",
  "aws_access_key_id", "aws_secret_access_key", "region_name"}})`, which become boto3 client
  arguments (for `index.json`); its chunk downloads go through obstore, set up from that
  client. LitData passes obstore fixed client options without `allow_http`, and obstore then
  refuses an `http://` endpoint (`BadScheme`), so the child adds `allow_http: True` to
  `litdata.streaming.downloader._OBSTORE_CLIENT_OPTIONS`; nothing else in its path is changed.
- `FaultProxy` answers every HEAD with `Content-Length: 0` (it sets the length from the
  relayed body, which a HEAD lacks). boto3's `download_file` (both peers) starts with a HEAD
  but, for objects under its 8 MB multipart threshold, then reads the whole object in one GET
  whatever size the HEAD gave, so the results here do not depend on it.
- The peers' datasets are written by their own writers (`MDSWriter`, `litdata.optimize`) into
  a local directory and uploaded with boto3 straight to the server (not through the proxy).
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="10,000 images x this")
    p.add_argument("--size", type=int, default=64, help="image height and width")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="docs/objectstore-peers-results.md", help="'' for none")
    p.add_argument("--png", default="docs/objectstore-peers.png", help="'' for none")
    p.add_argument("--json", help="also save the raw results here")
    p.add_argument(
        "--lakeio-in-process",
        action="store_true",
        help="run lakeio's epochs in this process (next to the server and proxy) instead of a child",
    )
    # internal modes: a loader's epoch or a peer's writer in a child process, the plot
    p.add_argument("--child", choices=sorted(EPOCHS), help=argparse.SUPPRESS)
    p.add_argument("--remote", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--options", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--write", help=argparse.SUPPRESS)
    p.add_argument("--draw", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
    elif args.draw:
        spec = json.loads(Path(args.draw[0]).read_text())
        plot(spec["results"], Path(args.draw[1]), spec["title"])
    else:
        driver(args)


if __name__ == "__main__":
    main()
