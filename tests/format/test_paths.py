"""Stored source paths: any POSIX name round-trips without loss; UTF-8 names are stored unchanged."""

import functools
import json
import os
import re
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from lakeio.format.chunks import decode_text_chunk, encode_text_chunk
from lakeio.format.codecs import parse_codec
from lakeio.format.paths import (
    display_path,
    name_bytes,
    source_path,
    stored_path,
    stored_path_bytes,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "format.md"

# One path component: any bytes but NUL and "/" (what a POSIX file name may hold).
components = st.binary(min_size=1, max_size=24).filter(lambda b: b"\0" not in b and b"/" not in b)
raw_paths = st.lists(components, min_size=1, max_size=4).map(b"/".join)
utf8_names = st.text(min_size=1).filter(lambda t: "\0" not in t)


def _listed(raw: bytes) -> str:
    """The name as Python lists it on Linux (``os.fsdecode``: surrogate escapes)."""
    return os.fsdecode(raw)


@given(raw_paths)
def test_any_byte_name_round_trips_through_its_stored_text(raw):
    name = _listed(raw)
    stored = stored_path(name)
    stored.encode("utf-8")  # storable as a Zarr string and in JSON
    assert stored_path_bytes(stored) == raw == name_bytes(name)
    assert source_path(stored) == name
    assert os.fsencode(source_path(stored)) == raw


@given(utf8_names)
def test_utf8_names_are_stored_exactly_as_they_are(name):
    assert stored_path(name) == name
    assert stored_path_bytes(name) == name.encode("utf-8")


@given(raw_paths.filter(lambda b: not _is_utf8(b)))
def test_other_names_are_marked_with_nul_and_stored_as_ascii(raw):
    stored = stored_path(_listed(raw))
    assert stored.startswith("\x00") and stored[1:].isascii() and "\x00" not in stored[1:]


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_names_that_look_like_the_escape_are_not_mistaken_for_it():
    for name in ("a%FF.jpg", "%00", "cls/%2F.png"):
        assert stored_path(name) == name
        assert stored_path_bytes(stored_path(name)) == name.encode()
    assert stored_path("a\x00b") == "\x00a%00b"  # only a name holding NUL itself gets escaped


def test_the_documented_example():
    name = _listed(b"cls/bad\xff\xfename.jpg")
    assert stored_path(name) == "\x00cls/bad%FF%FEname.jpg"
    assert display_path(name) == "cls/bad\\xff\\xfename.jpg"


def test_stored_paths_survive_a_zarr_string_chunk_and_json():
    names = [_listed(b"cls/bad\xff\xfename.jpg"), "cls/\u00f1and\u00fa \u732b.png", "cls/ok.jpg"]
    stored = np.asarray([stored_path(n) for n in names], dtype=object)
    codec = parse_codec("zstd:1")
    chunk = b"".join(bytes(p) for p in encode_text_chunk(stored, 4, codec))
    back = decode_text_chunk(chunk, codec, 4, "paths/c.0")
    assert [source_path(s) for s in back[:3]] == names
    assert json.loads(json.dumps(list(stored))) == list(stored)


@given(raw_paths)
def test_display_form_is_valid_utf8_and_plain_names_show_unchanged(raw):
    name = _listed(raw)
    shown = display_path(name)
    shown.encode("utf-8")
    if _is_utf8(raw):
        assert shown == name
    else:
        assert "\\x" in shown


@functools.cache
def _doc_reader():
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Source paths", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    scope: dict = {}
    exec(compile(block, str(DOC), "exec"), scope)
    return scope["source_name"]


@given(raw_paths | utf8_names.map(lambda t: t.encode("utf-8")))
def test_the_reader_in_the_docs_agrees_with_lakeio(raw):
    stored = stored_path(_listed(raw))
    assert _doc_reader()(stored) == stored_path_bytes(stored) == raw
