"""Security (issue 9): a manifest cannot point outside its lake, nothing is unpickled from a
lake, a cache or a source, and a cluster over TLS runs an ingest and a cluster loader."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace

import dask.config
import diskcache
import numpy as np
import pytest
from distributed import Client

import lakeio
from lakeio.errors import CorruptChunkError, FormatError, IngestError, LakeError
from lakeio.format.chunks import crc32c_hex
from lakeio.format.location import Location
from lakeio.format.manifest import (
    FRAGMENT_DIR,
    FieldInfo,
    Manifest,
    SegmentEntry,
    commit_manifest,
    manifest_key,
)
from lakeio.format.segment import write_segment
from lakeio.info import format_info, lake_info
from lakeio.testing.batches import assert_same, collect
from lakeio.testing.cluster import process_cluster, self_signed_tls
from lakeio.testing.images import photo_crops, write_image_folder
from lakeio.verify import verify_lake

FIELDS = {
    "images": FieldInfo("uint8", (16, 16, 3), "none"),
    "labels": FieldInfo("int64", (), "none"),
}
SEGMENT = "s000000-6f1c0a"  # the form of the ids ingest makes


def _unsigned(doc: dict) -> dict:
    """A hand-edited manifest drops its checksum line, or the checksum would refuse it first;
    without one it is read (and validated field by field) as manifests before checksums were."""
    return {k: v for k, v in doc.items() if k != "crc32c"}


@pytest.fixture(params=[1, 2], ids=["format1", "format2"])
def lake(tmp_path, request):
    """A one-segment, 12-sample lake inside ``tmp_path/lake`` (codec none: chunk bytes are the
    pixels), and its images; in both format versions (a version-2 manifest lists its segments
    in a fragment file)."""
    images = np.stack([p for p, _ in photo_crops(12, (16, 16), seed=4)])
    loc = Location.of(tmp_path / "lake")
    columns = {"images": images, "labels": np.arange(12) % 2}
    write_segment(loc, SEGMENT, columns, FIELDS, 4, {"class_counts": [6, 6]})
    entry = SegmentEntry(SEGMENT, 12, (6, 6))
    manifest = Manifest(FIELDS, ("a", "b"), 4, (entry,), history=({"op": "t"},))
    commit_manifest(loc, replace(manifest, format_version=request.param))
    return tmp_path / "lake", images


# -- a manifest cannot point outside its lake ------------------------------------------------

_opened: list[str] | None = None
_hooked = False


def _record_open(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], (str, bytes)):
        _opened.append(os.path.abspath(os.fsdecode(args[0])))


@contextmanager
def opened_files(under):
    """The files under ``under`` that this process opens inside the block (an audit hook,
    installed once: hooks cannot be removed, so it records only while a block runs)."""
    global _opened, _hooked
    if not _hooked:
        sys.addaudithook(_record_open)
        _hooked = True
    _opened, found = [], []
    try:
        yield found
    finally:
        found.extend(p for p in _opened if p.startswith(os.fspath(under)))
        _opened = None


def _read_everything(path) -> None:
    ds = lakeio.open_dataset(path)
    ds.sample(0)
    list(ds.loader(4, seed=0))
    verify_lake(ds)


def _rewrite_manifest(path, edit: Callable[[dict], None]) -> str:
    manifest = path / manifest_key(1)
    doc = json.loads(manifest.read_text())
    edit(doc)
    manifest.write_text(json.dumps(_unsigned(doc)))
    return f"{path}/{manifest_key(1)}"


def _rewrite_segments(path, edit: Callable[[dict], None]) -> tuple[str, list[str]]:
    """Edit the document that lists the segments (``{"segments": [...]}``): the manifest in
    format version 1, its fragment in version 2 (the manifest then records the new checksum).
    Returns the file that lists them, and the files a reader opens to find that out."""
    manifest = path / manifest_key(1)
    doc = json.loads(manifest.read_text())
    if doc["format_version"] == 1:
        return _rewrite_manifest(path, edit), [f"{path}/{manifest_key(1)}"]
    fragment = path / FRAGMENT_DIR / f"{doc['fragments'][0]['id']}.json"
    listed = json.loads(fragment.read_text())
    edit(listed)
    fragment.write_text(json.dumps(_unsigned(listed)))
    doc["fragments"][0]["crc32c"] = crc32c_hex(fragment.read_bytes())
    manifest.write_text(json.dumps(_unsigned(doc)))
    return str(fragment), [str(manifest), str(fragment)]


BAD_IDS = [
    "..", "../../outside/seg", "../x", "a/../../..", "/etc", "/abs/seg", "a/b", "s3://bucket/seg",
    "file:///etc", "file:seg", "memory://x", "a\\..\\b", "a\x00b", "", "s0\n", ".hidden", 5, None,
    "x" * 129,
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_a_segment_id_that_is_not_a_plain_name_is_refused_naming_the_manifest(lake, bad):
    path, _ = lake
    where, metadata = _rewrite_segments(path, lambda d: d["segments"][0].update(id=bad))
    with opened_files(path.parent) as opened, pytest.raises(FormatError) as err:
        lakeio.open_dataset(path)
    assert str(err.value).startswith(f"{where}: segments[0].id ")
    assert opened == metadata  # the manifest (and its fragment) and nothing else


def test_a_segment_id_leading_out_of_the_lake_reads_nothing_there(lake, tmp_path):
    path, _ = lake
    outside = tmp_path / "outside" / "seg"  # a complete segment that the id would reach
    shutil.copytree(path / "segments" / SEGMENT, outside)
    edit = lambda d: d["segments"][0].update(id="../../outside/seg")  # noqa: E731
    _, metadata = _rewrite_segments(path, edit)
    with (
        opened_files(tmp_path) as opened,
        pytest.raises(FormatError, match="not a plain folder name"),
    ):
        _read_everything(path)
    assert opened == metadata  # the manifest (and its fragment), nothing outside the lake


def test_a_field_name_leading_out_of_the_lake_reads_nothing_there(lake, tmp_path):
    path, _ = lake
    (tmp_path / "outside").mkdir()  # a chunk the field name would reach: labels of its own
    shutil.copy(path / "segments" / SEGMENT / "labels" / "c.0", tmp_path / "outside" / "c.0")
    spy = {"dtype": "int64", "shape": [], "codec": "none"}
    where = _rewrite_manifest(path, lambda d: d["fields"].update({"../../../outside": spy}))
    with opened_files(tmp_path) as opened, pytest.raises(FormatError) as err:
        _read_everything(path)
    assert str(err.value).startswith(f"{where}: field name '../../../outside' (a string) is not")
    assert opened == [where]  # before this check: ds.sample(0) read outside/c.0


def test_the_ids_ingest_makes_are_plain_names(tmp_path):
    images = np.stack([p for p, _ in photo_crops(6, (8, 8), seed=1)])
    lakeio.ingest(images, tmp_path / "lake", labels=np.zeros(6, int), progress=False, echo=None)
    (segment,) = lakeio.open_dataset(tmp_path / "lake").manifest.segments
    assert segment.id.startswith("s000000-") and len(segment.id) == 28


# -- nothing is unpickled --------------------------------------------------------------------


class Trap:
    """Unpickling this creates ``marker``: the proof that something unpickled it."""

    def __init__(self, marker) -> None:
        self.marker = os.fspath(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _outcomes(path, cache: lakeio.Cache | None = None) -> dict[str, object]:
    """Every read path over the lake at ``path``: "ok" or the error it raised."""
    steps: dict[str, Callable] = {
        "open": lambda: lakeio.open_dataset(path, cache=cache),
        "sample": lambda: lakeio.open_dataset(path, cache=cache)[0],
        "epoch": lambda: list(lakeio.open_dataset(path, cache=cache).loader(4, seed=0)),
        "verify": lambda: verify_lake(lakeio.open_dataset(path)),
        "info": lambda: format_info(lake_info(lakeio.open_dataset(path))),
    }
    out: dict[str, object] = {}
    for name, step in steps.items():
        try:
            out[name] = step()
        except Exception as exc:
            out[name] = exc
    return out


def test_the_disk_tier_never_unpickles_what_diskcache_would(lake, tmp_path):
    path, images = lake
    marker = tmp_path / "unpickled"
    cache = lakeio.Cache(memory=0, disk=str(tmp_path / "cache"), disk_size="1GB")
    source = lakeio.open_dataset(path, cache=cache).source
    keys = [source.loc.describe(source.key(0, f, 0)) for f in ("images", "labels")]
    with diskcache.Cache(tmp_path / "cache") as planted:  # its default Disk pickles objects
        planted.set(keys[0], (Trap(marker), b"x" * 100_000))  # large: a pickle file
        planted.set(keys[1], Trap(marker))  # small: a pickle inside SQLite
    outcomes = _outcomes(path, cache)
    assert not marker.exists()
    for step in ("sample", "epoch"):  # never unpickled: dropped and read from the origin
        assert not isinstance(outcomes[step], Exception), outcomes[step]
    np.testing.assert_array_equal(outcomes["sample"][0], images[0])
    assert outcomes["verify"].ok
    tier = lakeio.open_dataset(path, cache=cache).source.disk
    assert all(isinstance(tier.get(k), bytes) for k in keys)  # now the origin's bytes
    assert not marker.exists()


def _plant(target, payload: bytes, with_checksum: bool = False) -> None:
    if with_checksum:  # a crc32c that matches, so the bytes get past the checksum to the decoder
        payload += int(crc32c_hex(payload), 16).to_bytes(4, "little")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(payload)


PLANTS = {
    "images chunk": (
        f"segments/{SEGMENT}/images/c.0.0.0.0",
        CorruptChunkError,
        ("sample", "epoch"),
    ),
    "labels chunk": (f"segments/{SEGMENT}/labels/c.0", CorruptChunkError, ("sample", "epoch")),
    "manifest": (manifest_key(1), FormatError, ("open", "sample", "epoch", "verify", "info")),
    "segment zarr.json": (f"segments/{SEGMENT}/zarr.json", None, ()),
    "array zarr.json": (f"segments/{SEGMENT}/images/zarr.json", None, ()),
    "report": ("_lakeio/reports/ingest-v00000001.jsonl", None, ()),
}


@pytest.mark.parametrize("checksum", [False, True], ids=["raw", "with-crc32c"])
@pytest.mark.parametrize("where", list(PLANTS))
def test_a_pickle_planted_in_a_lake_is_never_unpickled(lake, tmp_path, where, checksum):
    path, images = lake
    key, error, failing = PLANTS[where]
    marker = tmp_path / "unpickled"
    _plant(path / key, pickle.dumps(Trap(marker)), checksum)
    outcomes = _outcomes(path)
    assert not marker.exists()
    for step, result in outcomes.items():
        if step in failing:
            assert isinstance(result, error), (step, result)
            assert key in str(result) or isinstance(result, FormatError), result
        else:
            assert not isinstance(result, Exception), (step, result)
    if "sample" not in failing:
        np.testing.assert_array_equal(outcomes["sample"][0], images[0])
    if where.endswith("zarr.json") or where.endswith("chunk"):
        assert key in {k for k, _ in outcomes["verify"].problems}


def test_a_source_array_holding_pickles_is_refused_unread(tmp_path):
    marker = tmp_path / "unpickled"
    np.save(tmp_path / "evil.npy", np.array([Trap(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(IngestError, match="without pickle"):
        lakeio.ingest(tmp_path / "evil.npy", tmp_path / "lake", progress=False, echo=None)
    assert not marker.exists()


# -- a cluster over TLS ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """A `dask scheduler` and two `dask worker` processes that speak only TLS, with a
    self-signed certificate for 127.0.0.1 made here: (address, TLSFiles)."""
    tls = self_signed_tls(tmp_path_factory.mktemp("certs"))
    with process_cluster(n_workers=2, tls=tls) as address:
        yield address, tls


def test_a_tls_cluster_refuses_plain_tcp_and_foreign_certificates(tls_cluster, tmp_path):
    address, _ = tls_cluster
    assert address.startswith("tls://127.0.0.1:")
    stranger = self_signed_tls(tmp_path / "stranger")  # valid, but not the cluster's
    for attempt in (
        lambda: Client(address.replace("tls://", "tcp://"), timeout="3s"),
        lambda: Client(address, security=stranger.security(), timeout="3s"),
    ):
        with pytest.raises((OSError, TimeoutError)):
            attempt().close()
    images, labels = np.zeros((2, 8, 8, 3), np.uint8), np.zeros(2, int)
    with pytest.raises(LakeError, match="tls:// scheduler needs a certificate"):
        lakeio.ingest(images, tmp_path / "lake", labels=labels, cluster=address, echo=None)


def test_ingest_and_cluster_loader_run_end_to_end_over_tls(tls_cluster, tmp_path):
    address, tls = tls_cluster
    written = write_image_folder(tmp_path / "src", 48, size=(16, 16), fmt="png", seed=6)
    with Client(address, security=tls.security(), timeout="30s") as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2 and all(w.startswith("tls://") for w in workers)
        summary = lakeio.ingest(
            tmp_path / "src", tmp_path / "lake", cluster=client, chunk_samples=8,
            progress=False, echo=None,
        )  # fmt: skip
        ds = lakeio.open_dataset(tmp_path / "lake")
        expected = collect(ds.loader(10, seed=3))
        with ds.loader(10, seed=3, cluster=client) as loader:
            assert_same(collect(loader), expected)
            assert loader.stats()["cluster_tasks"] > 0
    assert summary.written == len(ds) == 48
    pixels = {rel: image for rel, image, _ in written}
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds[i][0], pixels[ds.sample(i, ("paths",))["paths"]])


def test_a_tls_address_takes_its_certificates_from_dask_config(tls_cluster, tmp_path):
    address, tls = tls_cluster
    write_image_folder(tmp_path / "src", 16, size=(16, 16), fmt="png", seed=7)
    with dask.config.set(tls.dask_config()):  # as docs/cluster.md, "TLS", shows
        lakeio.ingest(tmp_path / "src", tmp_path / "lake", cluster=address, echo=None)
        ds = lakeio.open_dataset(tmp_path / "lake")
        with ds.loader(8, seed=1, cluster=address) as loader:
            assert_same(collect(loader), collect(ds.loader(8, seed=1)))
