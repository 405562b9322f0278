"""A resumed ingest reuses only segments whose summary holds what the commit needs."""

import json
import shutil

import numpy as np

import lakeio


def test_a_segment_whose_summary_lacks_commit_figures_is_rewritten_not_a_crash(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (30, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(30) % 3
    common = {"labels": labels, "chunk_samples": 10, "progress": False, "echo": None}
    lakeio.ingest(images, tmp_path / "a", **common)
    segment = next((tmp_path / "a" / "segments").glob("s*"))
    partial = tmp_path / "b" / "segments" / segment.name
    shutil.copytree(segment, partial)  # as if an earlier run had written it
    doc = json.loads((partial / "zarr.json").read_text())
    summary = doc["attributes"]["lakeio_segment"]
    kept = {k: summary[k] for k in ("samples", "stored_bytes")}  # no rejects, no class counts
    doc["attributes"]["lakeio_segment"] = kept
    (partial / "zarr.json").write_text(json.dumps(doc))
    summary = lakeio.ingest(images, tmp_path / "b", **common)
    assert summary.reused_segments == 0 and summary.written == 30
    got = lakeio.open_dataset(tmp_path / "b").to_dask()
    np.testing.assert_array_equal(got["images"].compute(), images)
    np.testing.assert_array_equal(got["labels"].compute(), labels)
