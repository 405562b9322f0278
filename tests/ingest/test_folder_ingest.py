"""Ingest of real image folders on a real multi-process Dask cluster (scheduler + 2 workers)."""

import json
import os

import dask.array as da
import numpy as np
import pytest
import zarr
from PIL import Image

import lakeio
from lakeio.errors import IngestError
from lakeio.testing.images import write_image_folder


def _ingest(src, dest, client, **kw):
    return lakeio.ingest(src, dest, cluster=client, progress=False, echo=None, **kw)


def _report_rows(summary):
    with open(summary.report, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_folder_round_trips_pixels_labels_and_paths(png_folder, tmp_path, client):
    root, written = png_folder
    summary = _ingest(root, tmp_path / "lake", client, chunk_samples=16)
    ds = lakeio.open_dataset(tmp_path / "lake")
    assert (summary.written, summary.rejected, len(ds)) == (120, 0, 120)
    assert summary.segments > 1  # the work was split into several tasks
    expected = sorted(written, key=lambda w: (ds.classes.index(w[0].split("/")[0]), w[0]))
    for i, (rel, pixels, _) in enumerate(expected):
        image, label = ds[i]
        np.testing.assert_array_equal(image, pixels)
        assert ds.classes[label] == rel.split("/")[0]
        assert ds.sample(i, ("paths",))["paths"] == rel
    assert ds.classes == tuple(sorted(ds.classes))
    path_bytes = sum(len(rel.encode()) for rel, _, _ in written)
    assert (
        summary.decoded_bytes == 120 * 32 * 32 * 3 + 120 * 8 + path_bytes
    )  # images, labels, paths
    assert summary.stored_bytes > 0


def test_lake_opens_with_plain_zarr_and_dask(png_folder, tmp_path, client):
    root, _ = png_folder
    _ingest(root, tmp_path / "lake", client, chunk_samples=16)
    ds = lakeio.open_dataset(tmp_path / "lake")
    group = zarr.open_group(tmp_path / "lake", mode="r")
    fragments = group.attrs["lakeio"]["fragments"]  # plain JSON files listing the segments
    listed = [json.loads((tmp_path / "lake" / key).read_bytes()) for key in fragments]
    segments = [f"segments/{s['id']}" for fragment in listed for s in fragment["segments"]]
    first = zarr.open_array(tmp_path / "lake", path=f"{segments[0]}/images", mode="r")
    np.testing.assert_array_equal(first[0], ds[0][0])
    assert first.chunks == (16, 32, 32, 3)
    stacked = da.concatenate(
        [da.from_zarr(str(tmp_path / "lake"), component=f"{s}/images") for s in segments]
    )
    np.testing.assert_array_equal(stacked.compute(), ds.to_dask()["images"].compute())
    assert stacked.shape == (120, 32, 32, 3)


def test_two_ingests_of_one_folder_give_the_same_lake(png_folder, tmp_path, client):
    root, _ = png_folder
    for name in ("a", "b"):
        _ingest(root, tmp_path / name, client, chunk_samples=32, codec="zstd:3")
    a, b = (lakeio.open_dataset(tmp_path / n) for n in "ab")
    assert [s.id for s in a.manifest.segments] == [s.id for s in b.manifest.segments]
    np.testing.assert_array_equal(a.to_dask()["images"].compute(), b.to_dask()["images"].compute())


def _hostile_folder(root):
    """A folder holding every kind of bad input the issue lists, plus a few good images."""
    good = write_image_folder(
        root, 6, size=(24, 24), fmt="png", seed=3, photos=("astronaut", "coffee")
    )
    cls = root / "astronaut"
    (cls / "empty.jpg").write_bytes(b"")
    (cls / "notes.png").write_text("not an image")
    jpeg = cls / "full.jpg"
    Image.fromarray(np.zeros((200, 200, 3), np.uint8) + 90).save(jpeg, quality=90)
    (cls / "truncated.jpg").write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    jpeg.unlink()
    Image.new("L", (3000, 3000)).save(cls / "bomb.png")
    Image.new("RGB", (400, 4)).save(cls / "sliver.png")
    os.symlink(root / "missing-target.png", cls / "dangling.png")  # unreadable
    (cls / ".hidden.png").write_bytes(b"junk")
    (root / ".DS_Store").write_bytes(b"junk")
    (root / "empty_class").mkdir()
    (root / "coffee" / "readme.txt").write_text("hello")
    Image.new("CMYK", (24, 24), (0, 0, 0, 0)).save(root / "coffee" / "cmyk.jpg")
    rgba = np.zeros((24, 24, 4), np.uint8)
    Image.fromarray(rgba).save(root / "coffee" / "clear.png")
    Image.fromarray(np.full((24, 24), 4096, np.uint16)).save(root / "coffee" / "deep16.png")
    Image.fromarray(np.full((24, 24, 3), 7, np.uint8)).save(root / "coffee" / "ñandú 猫.png")
    return good


def test_bad_inputs_become_report_lines_and_never_reach_the_lake(tmp_path, client):
    src = tmp_path / "src"
    good = _hostile_folder(src)
    summary = _ingest(src, tmp_path / "lake", client, size=(24, 24), max_pixels=4_000_000)
    ds = lakeio.open_dataset(tmp_path / "lake")
    rows = _report_rows(summary)
    rejected = {r["path"]: r["reason"] for r in rows if r["kind"] == "rejected"}
    assert set(rejected) == {
        f"astronaut/{n}"
        for n in (
            "empty.jpg",
            "notes.png",
            "truncated.jpg",
            "bomb.png",
            "sliver.png",
            "dangling.png",
        )
    }
    assert "empty file" in rejected["astronaut/empty.jpg"]
    assert "not a recognised image" in rejected["astronaut/notes.png"]
    assert "truncated or corrupt" in rejected["astronaut/truncated.jpg"]
    assert "exceeds the limit" in rejected["astronaut/bomb.png"]
    assert "aspect ratio" in rejected["astronaut/sliver.png"]
    assert "broken symbolic link" in rejected["astronaut/dangling.png"]
    ignored = {r["path"] for r in rows if r["kind"] == "ignored"}
    assert {"astronaut/.hidden.png", ".DS_Store", "coffee/readme.txt"} <= ignored
    assert [r["path"] for r in rows if r["kind"] == "empty-class"] == ["empty_class"]
    assert summary.rejected == 6 and len(ds) == len(good) + 4
    assert ds.classes == ("astronaut", "coffee", "empty_class")
    by_path = {ds.sample(i)["paths"]: ds[i][0] for i in range(len(ds))}
    assert by_path["coffee/ñandú 猫.png"].max() == 7  # unicode names survive, pixels intact
    assert by_path["coffee/clear.png"].min() == 255  # transparent → white background
    assert by_path["coffee/deep16.png"].max() == 16  # 4096 >> 8, not clipped to 255
    assert by_path["coffee/cmyk.jpg"].min() > 240  # CMYK white stays white


def test_on_error_fail_names_the_file_and_commits_nothing(tmp_path, client):
    src = tmp_path / "src"
    write_image_folder(src, 4, size=(16, 16), photos=("coffee",))
    (src / "coffee" / "zz-broken.png").write_bytes(b"nope")
    with pytest.raises(
        IngestError, match=r"coffee/zz-broken\.png: not a recognised image.*nothing was committed"
    ):
        _ingest(src, tmp_path / "lake", client, on_error="fail")
    with pytest.raises(lakeio.LakeNotFoundError):
        lakeio.open_dataset(tmp_path / "lake")


def test_mixed_sizes_stop_before_anything_is_written(tmp_path, client):
    src = tmp_path / "src"
    write_image_folder(src, 3, size=(16, 16), photos=("coffee",))
    write_image_folder(src / "more", 2, size=(20, 30), photos=("rocket",))
    os.rename(src / "more" / "rocket", src / "rocket")
    with pytest.raises(
        IngestError,
        match=r"images differ in size \(WxH\): 16x16 \(3 images\), 30x20 \(2 images\).*--size",
    ):
        _ingest(src, tmp_path / "lake", client)
    assert not (tmp_path / "lake").exists()
    summary = _ingest(src, tmp_path / "lake", client, size=(8, 8), resize="pad")
    assert summary.written == 5 and lakeio.open_dataset(tmp_path / "lake")[4][0].shape == (8, 8, 3)


def test_rerun_changes_nothing_and_other_data_needs_append_or_overwrite(tmp_path, client):
    a, b = tmp_path / "a", tmp_path / "b"
    write_image_folder(a, 10, size=(16, 16), photos=("coffee", "rocket"))
    write_image_folder(b, 6, size=(16, 16), seed=9, photos=("rocket", "chelsea"))
    lake = tmp_path / "lake"
    _ingest(a, lake, client)
    again = _ingest(a, lake, client)
    assert again.up_to_date and "nothing was changed" in again.lines()[0]
    assert lakeio.open_dataset(lake).version == 1
    with pytest.raises(
        IngestError, match=r"already holds a lake of 10 samples.*--append.*--overwrite"
    ):
        _ingest(b, lake, client)
    appended = _ingest(b, lake, client, mode="append")
    ds = lakeio.open_dataset(lake)
    assert (appended.version, len(ds)) == (2, 16)
    assert ds.classes == ("coffee", "rocket", "chelsea")  # old labels keep their meaning
    assert [ds.classes[ds[i][1]] for i in range(10, 16)] == ["rocket"] * 3 + ["chelsea"] * 3
    _ingest(b, lake, client, mode="overwrite")
    assert len(lakeio.open_dataset(lake)) == 6
    assert len(lakeio.open_dataset(lake, version=2)) == 16  # earlier snapshots stay readable


def test_arrays_iterables_and_npz_ingest(tmp_path, client):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 50)
    _ingest(
        images, tmp_path / "arr", client, labels=labels, classes=["x", "y", "z"], chunk_samples=7
    )
    ds = lakeio.open_dataset(tmp_path / "arr")
    np.testing.assert_array_equal(ds.to_dask()["images"].compute(), images)
    np.testing.assert_array_equal(ds.to_dask()["labels"].compute(), labels)
    assert ds.classes == ("x", "y", "z") and ds.sample(3)["paths"] == "array[3]"

    pairs = ((images[i], int(labels[i])) for i in range(20))
    _ingest(pairs, tmp_path / "it", client)
    np.testing.assert_array_equal(
        lakeio.open_dataset(tmp_path / "it").to_dask()["images"].compute(), images[:20]
    )

    np.savez(tmp_path / "d.npz", images=images[:, :, :, 0], labels=labels)
    _ingest(str(tmp_path / "d.npz"), tmp_path / "npz", client)
    npz = lakeio.open_dataset(tmp_path / "npz")
    assert npz.manifest.fields["images"].shape == (8, 8, 1)
    np.testing.assert_array_equal(npz.to_dask()["images"].compute()[..., 0], images[:, :, :, 0])


def test_memory_url_ingest_runs_on_an_in_process_cluster(png_folder):
    root, written = png_folder
    summary = lakeio.ingest(
        root, "memory://lakeio-tests/lake", workers=1, chunk_samples=50, progress=False, echo=None
    )
    ds = lakeio.open_dataset("memory://lakeio-tests/lake")
    assert summary.written == len(ds) == 120
    pixels = {rel: px for rel, px, _ in written}
    np.testing.assert_array_equal(ds[7][0], pixels[ds.sample(7)["paths"]])


def test_append_keeps_the_lakes_chunking_and_refuses_another(tmp_path, client):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, 20)
    _ingest(images[:10], tmp_path / "lake", client, labels=labels[:10], chunk_samples=4)
    with pytest.raises(IngestError, match=r"--chunk-samples 3: the lake's chunks hold 4 samples"):
        _ingest(
            images[10:],
            tmp_path / "lake",
            client,
            labels=labels[10:],
            chunk_samples=3,
            mode="append",
        )
    _ingest(images[10:], tmp_path / "lake", client, labels=labels[10:], mode="append")
    np.testing.assert_array_equal(
        lakeio.open_dataset(tmp_path / "lake").to_dask()["images"].compute(), images
    )


def test_overwrite_takes_the_new_layout_not_the_old_lakes(tmp_path, client):
    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    _ingest(big, tmp_path / "lake", client, labels=[0, 1, 0, 1, 0, 1], classes=["a", "b"])
    _ingest(
        small,
        tmp_path / "lake",
        client,
        labels=[0, 0, 1, 2, 2],
        classes=["x", "y", "z"],
        codec="zstd:5",
        mode="overwrite",
    )
    ds = lakeio.open_dataset(tmp_path / "lake")
    assert ds.classes == ("x", "y", "z") and ds.manifest.fields["images"].codec == "zstd:5"
    np.testing.assert_array_equal(ds.to_dask()["images"].compute(), small)


def test_same_names_with_other_content_are_not_mistaken_for_ingested(tmp_path, client):
    day1, day2 = tmp_path / "day1" / "cls", tmp_path / "day2" / "cls"
    day1.mkdir(parents=True)
    day2.mkdir(parents=True)
    for i in range(3):  # BMP: the file size depends only on the dimensions
        Image.fromarray(np.full((8, 8, 3), 10 + i, np.uint8)).save(day1 / f"{i}.bmp")
        Image.fromarray(np.full((8, 8, 3), 200 + i, np.uint8)).save(day2 / f"{i}.bmp")
    _ingest(tmp_path / "day1", tmp_path / "lake", client)
    second = _ingest(tmp_path / "day2", tmp_path / "lake", client, mode="append")
    assert not second.up_to_date
    values = sorted(
        int(ds_img.max())
        for ds_img in lakeio.open_dataset(tmp_path / "lake").to_dask()["images"].compute()
    )
    assert values == [10, 11, 12, 200, 201, 202]


def test_all_images_rejected_commits_nothing_and_says_why(tmp_path, client):
    src = tmp_path / "src" / "cls"
    src.mkdir(parents=True)
    for i in range(3):
        (src / f"{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(
        IngestError,
        match=r"all 3 images were rejected, nothing was committed \(first: cls/0\.jpg: not a recognised image",
    ):
        _ingest(tmp_path / "src", tmp_path / "lake", client, size=(8, 8))
    assert not (tmp_path / "lake" / "_lakeio" / "manifests").exists()


def test_float_arrays_are_refused_before_any_work(tmp_path, client):
    with pytest.raises(IngestError, match="images are float32; expected uint8"):
        _ingest(np.zeros((4, 8, 8, 3), np.float32), tmp_path / "lake", client, labels=[0, 0, 0, 0])
    with pytest.raises(IngestError, match=r"shape \(4, 8\); expected \(N, H, W\)"):
        _ingest(np.zeros((4, 8), np.uint8), tmp_path / "lake", client, labels=[0, 0, 0, 0])
