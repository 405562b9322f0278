"""`lakeio verify` on damaged or merely reformatted segment metadata: named, never a crash."""

import json
import shutil

import numpy as np
import pytest

import lakeio
from lakeio.verify import verify_lake


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("verify") / "lake"
    images = np.random.default_rng(1).integers(0, 255, (24, 8, 8, 3), dtype=np.uint8)
    lakeio.ingest(images, path, labels=np.arange(24) % 4, chunk_samples=8, progress=False,
                  echo=None)  # fmt: skip
    return path


def _copy(pristine, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(pristine, lake)
    segment = next((lake / "segments").glob("s*"))
    return lake, segment, str(segment.relative_to(lake))


@pytest.mark.parametrize("text", ["[1]", '{"shape": 5}', '{"shape": []}', "[" * 100_000, "{x"])
def test_malformed_array_metadata_is_a_problem_not_a_crash(pristine, tmp_path, text):
    lake, segment, key = _copy(pristine, tmp_path)
    (segment / "labels" / "zarr.json").write_text(text)
    problems = dict(verify_lake(lakeio.open_dataset(lake)).problems)
    assert list(problems) == [f"{key}/labels/zarr.json"]


def test_a_rewritten_array_document_is_named_even_if_it_parses_the_same(pristine, tmp_path):
    lake, segment, key = _copy(pristine, tmp_path)
    meta = segment / "images" / "zarr.json"
    meta.write_text(json.dumps(json.loads(meta.read_text()), indent=4))
    problems = dict(verify_lake(lakeio.open_dataset(lake)).problems)
    assert "changed since it was written" in problems[f"{key}/images/zarr.json"]


def test_older_segments_without_checksums_are_checked_by_content_only(pristine, tmp_path):
    lake, segment, key = _copy(pristine, tmp_path)
    group = json.loads((segment / "zarr.json").read_text())
    summary = group["attributes"]["lakeio_segment"]
    for recent in ("crc32c", "metadata_crc32c"):
        del summary[recent]
    (segment / "zarr.json").write_text(json.dumps(group))  # as an older lakeio (or zarr) wrote
    meta = segment / "images" / "zarr.json"
    doc = json.loads(meta.read_text())
    meta.write_text(json.dumps(doc, indent=4))  # reformatted: fine
    assert verify_lake(lakeio.open_dataset(lake)).ok
    doc["shape"][0] += 1  # misaligned: named
    meta.write_text(json.dumps(doc))
    problems = dict(verify_lake(lakeio.open_dataset(lake)).problems)
    assert "misaligned" in problems[f"{key}/images/zarr.json"]
