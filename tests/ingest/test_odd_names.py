"""File names that are not valid UTF-8 (legal on Linux) are ingested without loss, or reported.

Never a crash: in folders (CLI and API), in archives, in reports and in error messages.
"""

import json
import os
import struct
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

import lakeio
from lakeio.errors import IngestError
from lakeio.format.paths import source_path, stored_path_bytes

BAD = b"cls/bad\xff\xfename.jpg"  # not UTF-8: \xff\xfe
GOOD = b"cls/good.jpg"


def _jpeg(path: bytes, seed: int) -> np.ndarray:
    """Write a real JPEG at ``path``; returns the pixels Pillow decodes from it."""
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(os.fsdecode(path), format="JPEG")
    with Image.open(os.fsdecode(path)) as im:
        return np.asarray(im.convert("RGB"))


def _odd_folder(root) -> dict[bytes, np.ndarray]:
    base = os.fsencode(root)
    return {rel: _jpeg(os.path.join(base, rel), i) for i, rel in enumerate((BAD, GOOD))}


def _ingest(src, dest, client, **kw):
    return lakeio.ingest(src, dest, cluster=client, progress=False, echo=None, **kw)


def _stored(dest) -> dict[bytes, np.ndarray]:
    ds = lakeio.open_dataset(dest)
    return {stored_path_bytes(ds.sample(i)["paths"]): ds[i][0] for i in range(len(ds))}


def _assert_lake_holds(dest, expected: dict[bytes, np.ndarray]) -> None:
    stored = _stored(dest)
    assert set(stored) == set(expected)
    for raw, pixels in expected.items():
        np.testing.assert_array_equal(stored[raw], pixels)


def test_cli_ingests_a_name_that_is_not_utf8_and_stores_it_without_loss(tmp_path, cluster_address):
    expected = _odd_folder(tmp_path / "src")
    dest = os.path.join(os.fsencode(tmp_path), b"lake\xff")  # the lake's own name too
    cli = [sys.executable, "-m", "lakeio.cli", "ingest", "--scheduler", cluster_address, "--quiet"]
    done = subprocess.run(
        [*cli, tmp_path / "src", dest],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},  # strict stdout, as in a UTF-8 terminal
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    out = done.stdout.decode("utf-8")
    assert "lake\\xff version 1" in out and "images written   2" in out
    _assert_lake_holds(os.fsdecode(dest), expected)
    raw_names = {os.path.join(b"cls", n) for n in os.listdir(os.fsencode(tmp_path / "src" / "cls"))}
    assert raw_names == set(expected)  # the stored bytes are exactly what the folder lists


def test_api_ingests_it_and_counts_the_stored_text(tmp_path, client):
    expected = _odd_folder(tmp_path / "src")
    summary = _ingest(tmp_path / "src", tmp_path / "lake", client)
    _assert_lake_holds(tmp_path / "lake", expected)
    ds = lakeio.open_dataset(tmp_path / "lake")
    paths = [ds.sample(i)["paths"] for i in range(len(ds))]
    assert paths == ["\x00cls/bad%FF%FEname.jpg", "cls/good.jpg"]
    text_bytes = sum(len(p.encode("utf-8")) for p in paths)
    assert summary.decoded_bytes == 2 * 16 * 16 * 3 + 2 * 8 + text_bytes
    with open(os.path.join(tmp_path / "src", source_path(paths[0])), "rb") as fh:
        assert fh.read(2) == b"\xff\xd8"  # the stored name opens the very file (a JPEG)


def test_reports_and_messages_show_such_names_readably(tmp_path, client):
    src = os.fsencode(tmp_path / "src")
    _odd_folder(tmp_path / "src")
    with open(os.path.join(src, b"cls/broken\xff.jpg"), "wb") as fh:
        fh.write(b"not a jpeg")
    with open(os.path.join(src, b"cls/notes\xff.txt"), "wb") as fh:
        fh.write(b"hello")
    summary = _ingest(tmp_path / "src", tmp_path / "lake", client)
    with open(summary.report, "rb") as fh:
        rows = [json.loads(line.decode("utf-8")) for line in fh]  # strict UTF-8, valid JSON
    by_kind = {r["kind"]: r["path"] for r in rows}
    assert by_kind == {"rejected": "cls/broken\\xff.jpg", "ignored": "cls/notes\\xff.txt"}
    "\n".join(summary.lines()).encode("utf-8")


def test_on_error_fail_names_the_file_readably(tmp_path, client):
    _odd_folder(tmp_path / "src")
    with open(os.path.join(os.fsencode(tmp_path / "src"), b"cls/broken\xff.jpg"), "wb") as fh:
        fh.write(b"not a jpeg")
    with pytest.raises(IngestError) as caught:
        _ingest(tmp_path / "src", tmp_path / "lake", client, on_error="fail")
    message = str(caught.value)
    assert message.startswith("cls/broken\\xff.jpg: not a recognised image")
    message.encode("utf-8")


def test_class_folders_and_source_folders_with_such_names_fit_the_manifest(tmp_path, client):
    src = os.path.join(os.fsencode(tmp_path), b"src\xe9")
    expected = {
        rel: _jpeg(os.path.join(src, rel), i) for i, rel in enumerate((b"c\xe9t/1.jpg", GOOD))
    }
    _ingest(os.fsdecode(src), tmp_path / "lake", client)
    _assert_lake_holds(tmp_path / "lake", expected)
    ds = lakeio.open_dataset(tmp_path / "lake")
    assert ds.classes == ("\x00c%E9t", "cls")
    assert stored_path_bytes(ds.manifest.history[-1]["source"]) == src


def test_a_tar_archive_member_with_such_a_name_is_ingested(tmp_path, client):
    expected = _odd_folder(tmp_path / "src")
    with tarfile.open(tmp_path / "src.tar", "w") as tar:
        for rel in expected:
            tar.add(os.path.join(os.fsencode(tmp_path / "src"), rel), arcname=os.fsdecode(rel))
    _ingest(f"tar://::file://{tmp_path / 'src.tar'}", tmp_path / "lake", client)
    _assert_lake_holds(tmp_path / "lake", expected)


def test_a_zip_whose_names_falsely_claim_utf8_is_refused_by_name(tmp_path, client):
    with zipfile.ZipFile(tmp_path / "src.zip", "w") as zf:
        zf.writestr("cls/bad.jpg", b"x")
    honest = (tmp_path / "src.zip").read_bytes()
    data = bytearray(honest.replace(b"cls/bad.jpg", b"cls/\xff\xfed.jpg"))  # same length
    central = data.find(b"PK\x01\x02")
    flags = struct.unpack_from("<H", data, central + 8)[0]
    struct.pack_into("<H", data, central + 8, flags | 0x800)  # "this name is UTF-8"
    (tmp_path / "src.zip").write_bytes(bytes(data))
    url = f"zip://::file://{tmp_path / 'src.zip'}"
    with pytest.raises(IngestError, match=r"src\.zip: the listing holds a name that claims"):
        _ingest(url, tmp_path / "lake", client)
