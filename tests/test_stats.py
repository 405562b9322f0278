"""`lakeio stats`: exact per-channel statistics computed on a real cluster, stored, and used."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lakeio
from lakeio.cli import main
from lakeio.stats import compute_stats
from lakeio.testing.images import photo_crops


@pytest.fixture
def stats_lake(tmp_path, client):
    pairs = list(photo_crops(150, (16, 16), seed=3))
    images = np.stack([p for p, _ in pairs])
    labels = np.array([label for _, label in pairs])
    path = tmp_path / "lake"
    lakeio.ingest(
        images, path, labels=labels, cluster=client, chunk_samples=16, progress=False, echo=None
    )
    return path, images, labels


def test_stats_are_exact_and_committed_as_a_new_version(stats_lake, client):
    path, images, labels = stats_lake
    before = lakeio.open_dataset(path).version
    stats = compute_stats(path, cluster=client, echo=None)
    pixels = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(stats["images"]["mean"], pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["images"]["std"], pixels.std(axis=0), rtol=1e-9)
    ds = lakeio.open_dataset(path)
    assert stats["class_histogram"] == np.bincount(labels, minlength=len(ds.classes)).tolist()
    assert ds.version == before + 1 == stats["stored_in_version"]
    assert ds.manifest.stats["images"]["mean"] == stats["images"]["mean"]
    assert ds.manifest.history[-1]["op"] == "stats"
    assert len(ds) == len(images)  # the samples did not change, only the metadata


def test_normalize_lake_uses_the_stored_statistics(stats_lake, client):
    path, images, _ = stats_lake
    compute_stats(path, cluster=client, echo=None)
    ds = lakeio.open_dataset(path)
    mean = images.reshape(-1, 3).mean(axis=0) / 255
    std = images.reshape(-1, 3).std(axis=0) / 255
    loader = ds.loader(50, shuffle=False, dtype=torch.float64, normalize="lake")
    got = torch.cat([b for b, _ in loader]).numpy()
    expected = (images.astype(np.float64) / 255 - mean) / std
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # normalised over the whole lake: mean 0 and std 1 per channel
    np.testing.assert_allclose(got.reshape(-1, 3).mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(got.reshape(-1, 3).std(axis=0), 1, atol=1e-6)


def test_normalize_lake_refuses_missing_or_stale_statistics(stats_lake, client):
    path, images, labels = stats_lake
    with pytest.raises(lakeio.LakeError, match="lakeio stats"):
        lakeio.open_dataset(path).loader(10, dtype=torch.float32, normalize="lake")
    compute_stats(path, cluster=client, echo=None)
    lakeio.ingest(
        images[:20], path, labels=labels[:20], mode="append", cluster=client, progress=False,
        echo=None,
    )  # fmt: skip
    ds = lakeio.open_dataset(path)
    assert ds.manifest.stats == {}  # an append drops statistics of other samples
    with pytest.raises(lakeio.LakeError, match="lakeio stats"):
        ds.loader(10, dtype=torch.float32, normalize="lake")
    with pytest.raises(ValueError, match="normalize"):
        ds.loader(10, dtype=torch.float32, normalize="imagenet")


def test_stats_command_prints_and_stores(stats_lake, cluster_address, capsys):
    path, images, labels = stats_lake
    assert main(["stats", str(path), "--scheduler", cluster_address]) == 0
    out = capsys.readouterr().out
    mean = images.reshape(-1, 3).mean(axis=0)
    assert "mean (0..255): " + ", ".join(f"{m:.3f}" for m in mean) in out
    ds = lakeio.open_dataset(path)
    for name, count in zip(ds.classes, np.bincount(labels, minlength=len(ds.classes)), strict=True):
        assert f"  {name}: {count:,} (" in out
    assert f"version {ds.version}" in out
    assert main(["stats", str(path), "--scheduler", cluster_address, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == len(images)


def test_info_shows_the_stored_statistics(stats_lake, client, capsys):
    path, _, _ = stats_lake
    assert main(["info", str(path)]) == 0
    assert "stats     none" in capsys.readouterr().out
    stats = compute_stats(path, cluster=client, echo=None)
    assert main(["info", str(path)]) == 0
    mean = ", ".join(f"{v:.2f}" for v in stats["images"]["mean"])
    assert f"stats     mean {mean}" in capsys.readouterr().out


def test_stats_of_a_grayscale_lake(tmp_path, client):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (70, 12, 10), dtype=np.uint8)  # (N, H, W): one channel
    images[:, 0, 0] = 255  # a skew, so the mean is not ~127.5 by chance
    path = tmp_path / "gray"
    lakeio.ingest(
        images, path, labels=rng.integers(0, 3, 70), cluster=client, chunk_samples=16,
        progress=False, echo=None,
    )  # fmt: skip
    stats = compute_stats(path, cluster=client, echo=None)
    pixels = images.reshape(-1).astype(np.float64)
    assert len(stats["images"]["mean"]) == 1
    assert stats["images"]["mean"][0] == pytest.approx(pixels.mean(), rel=1e-12)
    assert stats["images"]["std"][0] == pytest.approx(pixels.std(), rel=1e-9)
    assert stats["images"]["pixels_per_channel"] == pixels.size


def test_rerunning_stats_changes_nothing_unless_forced(stats_lake, client, capsys):
    path, _, _ = stats_lake
    first = compute_stats(path, cluster=client, echo=None)
    again = compute_stats(path, cluster=client, echo=None)
    assert again["up_to_date"] and again["stored_in_version"] == first["stored_in_version"]
    assert again["images"] == first["images"]
    assert lakeio.open_dataset(path).version == first["stored_in_version"]
    assert main(["stats", str(path), "--scheduler", client.scheduler.address]) == 0
    assert "already stored in version" in capsys.readouterr().out
    forced = compute_stats(path, cluster=client, force=True, echo=None)
    assert forced["stored_in_version"] == first["stored_in_version"] + 1
    assert forced["images"] == first["images"]


def test_stats_fill_in_class_counts_the_lake_did_not_know(stats_lake, client):
    """A version whose manifest does not know its class counts (written so by hand here): the
    labels are counted on the cluster, and the counts are stored with the statistics."""
    from dataclasses import replace

    from lakeio.format.location import Location
    from lakeio.format.manifest import commit_manifest, read_manifest

    path, _, labels = stats_lake
    loc = Location.of(path)
    unknown = commit_manifest(loc, replace(read_manifest(loc), class_counts=()))
    assert lakeio.open_dataset(path).manifest.lake_class_counts() == ()
    stats = compute_stats(path, cluster=client, echo=None)
    expected = np.bincount(labels, minlength=len(unknown.classes)).tolist()
    assert stats["class_histogram"] == expected
    assert list(lakeio.open_dataset(path).manifest.lake_class_counts()) == expected
