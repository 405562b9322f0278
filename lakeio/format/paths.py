"""How a source file's name is stored in a lake's ``paths`` field, and how to get it back.

A POSIX file name may hold any byte but NUL and "/", so it need not be valid UTF-8. Python
lists such a name as a str with "surrogate escapes" (U+DC80..U+DCFF stand for the bytes), and
neither UTF-8 (so Zarr's vlen-utf8 strings) nor JSON can carry those. The rule:

- a name that is valid UTF-8 (and holds no NUL) is stored exactly as it is;
- any other name is stored as NUL followed by the percent-encoding (RFC 3986 style, "/" kept)
  of its raw bytes: ``cls/bad\\xffname.jpg`` is stored as ``"\\x00cls/bad%FFname.jpg"``.

No real file name holds NUL, so a leading NUL cannot be mistaken for part of a name, and the
escaped form is plain ASCII. `stored_path_bytes` inverts the rule; docs/format.md shows the same
three lines for readers without lakeio.
"""

from __future__ import annotations

from urllib.parse import quote, unquote_to_bytes

ESCAPE_MARK = "\x00"
_KEPT = "/"  # quote() also keeps letters, digits and "_.-~" as they are


def _is_plain(name: str) -> bool:
    if ESCAPE_MARK in name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def name_bytes(name: str) -> bytes:
    """The raw bytes of ``name`` as a POSIX listing gave it (what ``os.fsencode`` returns).

    Surrogate escapes turn back into the bytes they stand for. A lone surrogate that is not an
    escape (it never comes from a listing, only from code) is kept as its UTF-8-style bytes so
    that nothing raises.
    """
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


def stored_path(name: str) -> str:
    """The text the ``paths`` field stores for source name ``name``; always valid UTF-8.

    Valid UTF-8 names are returned unchanged, so lakes of such names look as they always did.
    """
    if _is_plain(name):
        return name
    return ESCAPE_MARK + quote(name_bytes(name), safe=_KEPT)


def stored_path_bytes(stored: str) -> bytes:
    """The raw bytes of the source name that the stored text ``stored`` stands for."""
    if stored.startswith(ESCAPE_MARK):
        return unquote_to_bytes(stored[len(ESCAPE_MARK) :])
    return stored.encode("utf-8")


def source_path(stored: str) -> str:
    """The source name as ``os`` functions take it on POSIX (``os.fsdecode`` of the raw bytes)."""
    return stored_path_bytes(stored).decode("utf-8", "surrogateescape")


def display_path(name: str) -> str:
    """``name`` for people (messages, reports): valid UTF-8 names unchanged, other bytes as
    backslash escapes (``bad\\xff.jpg``), so the text prints and encodes anywhere."""
    if _is_plain(name):
        return name
    shown = name_bytes(name).decode("utf-8", "backslashreplace")
    return shown.replace(ESCAPE_MARK, "\\x00")
