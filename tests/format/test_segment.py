import dask.array as da
import numpy as np
import pytest
import zarr

from lakeio.format.location import Location
from lakeio.format.manifest import FieldInfo
from lakeio.format.segment import read_segment_summary, write_segment

SPECS = ["none", "lz4:5", "zstd:3", "gzip:6", "blosc-lz4:5:bitshuffle", "blosc-zstd:5:shuffle"]


@pytest.mark.parametrize("codec", SPECS)
def test_segments_written_by_lakeio_read_back_exactly_in_zarr_and_dask(tmp_path, codec):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (11, 5, 6, 3), dtype=np.uint8)
    images[4:8] = 0  # a whole chunk of zeros is stored, not left to the fill value
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2], dtype=np.int64)
    paths = np.array([f"dir/ñ-{i}.png" for i in range(11)], dtype=object)
    fields = {
        "images": FieldInfo("uint8", (5, 6, 3), codec),
        "labels": FieldInfo("int64", (), codec),
        "paths": FieldInfo("str", (), codec),
    }
    loc = Location.of(tmp_path)
    columns = {"images": images, "labels": labels, "paths": paths}
    stored = write_segment(loc, "s1", columns, fields, 4, {"note": "x"})
    store = zarr.storage.LocalStore(tmp_path)
    np.testing.assert_array_equal(
        zarr.open_array(store, path="segments/s1/images", mode="r")[...], images
    )
    np.testing.assert_array_equal(
        zarr.open_array(store, path="segments/s1/labels", mode="r")[...], labels
    )
    assert list(zarr.open_array(store, path="segments/s1/paths", mode="r")[...]) == list(paths)
    lazy = da.from_zarr(str(tmp_path), component="segments/s1/images")
    assert lazy.chunks[0] == (4, 4, 3)
    np.testing.assert_array_equal(lazy.compute(), images)
    summary = read_segment_summary(loc, "s1")
    assert (
        summary["samples"] == 11
        and summary["note"] == "x"
        and summary["stored_bytes"] == stored > 0
    )
    assert len(list((tmp_path / "segments/s1/labels").glob("c.*"))) == 3


def test_segment_without_completion_marker_does_not_count(tmp_path):
    loc = Location.of(tmp_path)
    (tmp_path / "segments/s2/images").mkdir(parents=True)
    (tmp_path / "segments/s2/images/c.0.0.0.0").write_bytes(b"partial")
    assert read_segment_summary(loc, "s2") is None
