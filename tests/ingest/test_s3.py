"""Ingest into an S3-compatible object store (moto's server on 127.0.0.1), read it back."""

import numpy as np
import pytest

import lakeio
from lakeio.errors import CommitConflictError
from lakeio.format.location import Location
from lakeio.format.manifest import commit_manifest, read_manifest
from lakeio.verify import verify_lake


def test_ingest_to_s3_reads_back_and_verifies(png_folder, client, s3_options):
    root, written = png_folder
    url = "s3://lakeio-test/photos.lake"

    def ingest():
        return lakeio.ingest(
            root,
            url,
            cluster=client,
            storage_options=s3_options,
            chunk_samples=32,
            codec="zstd",
            progress=False,
            echo=None,
        )

    summary = ingest()
    assert summary.written == 120 and summary.stored_bytes > 0
    ds = lakeio.open_dataset(url, storage_options=s3_options)
    local = {rel: pixels for rel, pixels, _ in written}
    for i in (0, 57, 119):
        np.testing.assert_array_equal(ds[i][0], local[ds.sample(i)["paths"]])
    assert verify_lake(ds).ok
    again = ingest()
    assert again.up_to_date


def test_s3_commit_is_exclusive(s3_options, monkeypatch):
    loc = Location.of("s3://lakeio-test/photos.lake", s3_options)
    base = read_manifest(loc)
    commit_manifest(loc, base.with_segments(base.segments, {"op": "mine"}))
    with pytest.raises(CommitConflictError):
        commit_manifest(loc, base.with_segments(base.segments, {"op": "theirs"}))
    # Only the store's conditional PUT may refuse now: hide the object from existence checks.
    monkeypatch.setattr(loc.fs, "exists", lambda *a, **k: False)
    with pytest.raises(FileExistsError):
        loc.create_exclusive("_lakeio/manifests/v00000002.json", b"{}")
    assert read_manifest(loc).history[-1]["op"] == "mine"
