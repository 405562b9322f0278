"""Manifest fragments (format version 2): immutable lists of the segments one commit added.

A version-2 manifest names its fragments instead of listing every segment, so a commit writes
its own fragment and a small manifest, and version N+1 shares every fragment of version N. A
fragment's id is a hash of its content: writing one again (a retried commit) rewrites the same
bytes, and two fragments with one id are one fragment. Each carries a CRC-32C line, as
manifests do, and the manifest records that checksum too, so a fragment swapped for another
one is refused, not read.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lakeio.errors import FormatError
from lakeio.format.location import Location
from lakeio.format.manifest_checks import (
    _check_checksum,
    _member,
    _segment,
    _typed,
    refuse_constant,
    refuse_unknown,
)
from lakeio.format.manifest_model import (
    FORMAT_NAME,
    MAX_MANIFEST_BYTES,
    FragmentRef,
    SegmentEntry,
    compact_document,
    with_checksum,
)

FRAGMENT_FORMAT = f"{FORMAT_NAME}-fragment"
_FIGURES = ("source_bytes", "decoded_bytes", "stored_bytes")


def fragment_bytes(segments: tuple[SegmentEntry, ...]) -> tuple[str, bytes]:
    """(id, file bytes) of the fragment listing ``segments``: one line per segment."""
    listed = [
        {"id": s.id, "samples": s.samples, **{k: getattr(s, k) for k in _FIGURES}} for s in segments
    ]
    body = ",\n  ".join(json.dumps(entry, separators=(",", ":")) for entry in listed)
    digest = hashlib.blake2b(body.encode(), digest_size=12).hexdigest()
    fragment_id = f"f-{digest}"
    head = compact_document({"format": FRAGMENT_FORMAT, "format_version": 2, "id": fragment_id})
    document = head[:-2] + (b',\n "segments": [\n  ' + body.encode() + b"\n ]\n}")
    return fragment_id, with_checksum(document)


def write_fragment(loc: Location, segments: tuple[SegmentEntry, ...]) -> FragmentRef:
    """Write the fragment for ``segments`` (durably, before any manifest names it)."""
    from lakeio.format.chunks import crc32c_hex

    fragment_id, data = fragment_bytes(segments)
    ref = FragmentRef(
        id=fragment_id,
        segments=len(segments),
        samples=sum(s.samples for s in segments),
        crc32c=crc32c_hex(data),
    )
    loc.write_atomic(ref.key, data)
    return ref


def read_fragments(
    loc: Location, refs: tuple[FragmentRef, ...], chunk_samples: int, manifest: str
) -> tuple[SegmentEntry, ...]:
    """The segments of ``refs``, in order; each fragment checked against its reference
    (``manifest`` names the manifest that listed them, for messages)."""
    if not refs:
        return ()
    threads = 1 if loc.is_local else min(32, len(refs))  # a bucket: the latency overlaps
    with ThreadPoolExecutor(max_workers=threads) as pool:
        loaded = list(pool.map(lambda r: _read_one(loc, r, chunk_samples, manifest), refs))
    return tuple(segment for segments in loaded for segment in segments)


def _read_one(
    loc: Location, ref: FragmentRef, chunk_samples: int, manifest: str
) -> tuple[SegmentEntry, ...]:
    from lakeio.format.chunks import crc32c_hex

    source = loc.describe(ref.key)
    try:
        data = loc.read_bytes(ref.key)
    except FileNotFoundError:
        raise FormatError(
            f"{source}: fragment {ref.id} is missing, but {manifest} lists it"
        ) from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise FormatError(f"{source}: fragment is {len(data):,} bytes, over the limit")
    if crc32c_hex(data) != ref.crc32c:
        raise FormatError(
            f"{source}: fragment crc32c {crc32c_hex(data)} is not the {ref.crc32c} that "
            f"{manifest} recorded: the file changed after it was written"
        )
    segments = parse_fragment(data, source, chunk_samples, ref.id)
    samples = sum(s.samples for s in segments)
    if len(segments) != ref.segments or samples != ref.samples:
        raise FormatError(
            f"{source}: holds {len(segments)} segments of {samples} samples, but {manifest} "
            f"says {ref.segments} of {ref.samples}"
        )
    return segments


def parse_fragment(
    data: bytes, source: str, chunk_samples: int, fragment_id: str | None = None
) -> tuple[SegmentEntry, ...]:
    """The checked segments of a fragment's bytes (the file ``source``, which the manifest
    calls ``fragment_id``); `FormatError` else."""
    _check_checksum(data, source)
    try:
        doc: Any = json.loads(data, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{source}: fragment is not valid JSON ({str(exc)[:80]})") from None
    _typed(doc, dict, source, "fragment")
    if doc.get("format") != FRAGMENT_FORMAT or doc.get("format_version") != 2:
        raise FormatError(
            f"{source}: not a lakeio fragment (format={str(doc.get('format'))[:40]!r}, "
            f"format_version={str(doc.get('format_version'))[:20]})"
        )
    refuse_unknown(doc, _TOP_KEYS, source, "fragment")
    if fragment_id is not None and doc.get("id") != fragment_id:
        raise FormatError(
            f"{source}: fragment says it is {str(doc.get('id'))[:40]!r}, the manifest names "
            f"{fragment_id!r}"
        )
    listed = _member(doc, "segments", list, source, "segments")
    for i, entry in enumerate(listed):
        if isinstance(entry, dict):  # (anything else: _segment names what it is)
            refuse_unknown(entry, _SEGMENT_KEYS, source, f"segments[{i}]")
    return tuple(_segment(s, i, source, 0, chunk_samples) for i, s in enumerate(listed))


_TOP_KEYS = frozenset({"crc32c", "format", "format_version", "id", "segments"})
_SEGMENT_KEYS = frozenset({"id", "samples", *_FIGURES})
