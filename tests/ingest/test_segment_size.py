"""Segments sized for the ingest: large ones written chunk by chunk, the cut the same on a rerun."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import lakeio
from lakeio.format.location import Location
from lakeio.format.manifest import FieldInfo
from lakeio.ingest import plan
from lakeio.ingest.decode import DecodeOptions
from lakeio.ingest.tasks import SegmentTask, run_segment_task


@given(total=st.integers(1, 10**8), chunk_samples=st.integers(1, 5000))
def test_segments_are_whole_chunks_bounded_and_spread(total, chunk_samples):
    per = plan.segment_samples(total, chunk_samples)
    chunks = -(-total // chunk_samples)
    assert per % chunk_samples == 0
    assert 1 <= per // chunk_samples <= plan.MAX_SEGMENT_CHUNKS
    segments = -(-total // per)
    if chunks >= plan.TARGET_SEGMENTS * plan.MAX_SEGMENT_CHUNKS:  # large: as big as allowed
        assert per // chunk_samples == plan.MAX_SEGMENT_CHUNKS
    elif chunks >= plan.MIN_SEGMENTS * 8:  # medium: enough tasks for a cluster
        assert segments >= min(plan.TARGET_SEGMENTS, chunks // 8) / 2
    v1 = plan.segment_samples(total, chunk_samples, format_version=1)
    assert v1 // chunk_samples <= 8 and v1 <= per


def test_an_imagenet_sized_ingest_makes_a_few_hundred_segments_not_thousands():
    per = plan.segment_samples(1_281_167, 27)  # 224x224: 27 samples per 4 MiB chunk
    assert per == 256 * 27 and -(-1_281_167 // per) == 186
    assert -(-1_281_167 // plan.segment_samples(1_281_167, 27, format_version=1)) == 5_932


def test_a_segment_of_many_chunks_is_written_chunk_by_chunk_across_rejects(tmp_path):
    """Rejected images shift the rows; every chunk boundary still falls where it should."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (4, 3, 3), dtype=np.uint8) for _ in range(60)]
    bad = {0, 7, 8, 9, 31, 59}  # the first, across a chunk boundary, the last
    for i in bad:
        images[i] = images[i].astype(np.float32)  # rejected: not uint8
    labels = np.arange(60) % 5
    fields = {
        "images": FieldInfo("uint8", (4, 3, 3), "zstd:3"),
        "labels": FieldInfo("int64", (), "lz4:5"),
        "paths": FieldInfo("str", (), "lz4:5"),
    }
    dest = Location.of(tmp_path / "lake")
    task = SegmentTask(
        "s000000-test", dest, fields, chunk_samples=7, decode=DecodeOptions(), skip_errors=True,
        num_classes=5, images=images, labels=labels, names=tuple(f"a[{i}]" for i in range(60)),
    )  # fmt: skip
    summary = run_segment_task(task)
    kept = [i for i in range(60) if i not in bad]
    assert summary["samples"] == len(kept) == 54 and len(summary["rejects"]) == len(bad)
    assert summary["class_counts"] == np.bincount(labels[kept], minlength=5).tolist()
    import zarr

    group = zarr.open_group(tmp_path / "lake" / "segments" / "s000000-test", mode="r")
    np.testing.assert_array_equal(group["images"][:], np.stack([images[i] for i in kept]))
    np.testing.assert_array_equal(group["labels"][:], labels[kept])
    assert group["images"].nchunks == 8  # 54 rows in chunks of 7
    again = run_segment_task(task)
    assert again["reused"] and again["stored_bytes"] == summary["stored_bytes"]


def test_a_rerun_of_a_large_ingest_cuts_the_same_segments(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (2_100, 2, 2, 3), dtype=np.uint8)
    labels = np.arange(2_100) % 3
    ids = []
    for name in ("a", "b"):
        lakeio.ingest(images, tmp_path / name, labels=labels, chunk_samples=2, progress=False,
                      echo=None, workers=1)  # fmt: skip
        ids.append([s.id for s in lakeio.open_dataset(tmp_path / name).manifest.segments])
    assert ids[0] == ids[1] and len(ids[0]) == 62  # 1,050 chunks: 17 per segment
    ds = lakeio.open_dataset(tmp_path / "a")
    np.testing.assert_array_equal(ds.to_dask()["images"].compute(), images)
