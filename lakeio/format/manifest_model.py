"""What a manifest holds: the lake's fields, segments and fragments, and their JSON layout.

The data alone, so that the modules that check a manifest (`lakeio.format.manifest_checks`),
list its segments (`lakeio.format.fragments`) and read and commit it
(`lakeio.format.manifest`) all build on it without importing one another in a circle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

FORMAT_NAME = "lakeio"
FORMAT_VERSION = 2  # what new lakes are written as
FORMAT_VERSIONS = (1, 2)  # what this lakeio reads
META_DIR = "_lakeio"
MANIFEST_DIR = f"{META_DIR}/manifests"
SEGMENT_DIR = "segments"
FRAGMENT_DIR = f"{META_DIR}/fragments"
MAX_MANIFEST_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class FieldInfo:
    """One aligned field: per-sample shape, dtype and the codec its chunks use."""

    dtype: str
    shape: tuple[int, ...]
    codec: str

    @property
    def sample_bytes(self) -> int:
        import numpy as np

        itemsize = np.dtype(self.dtype).itemsize if self.dtype != "str" else 0
        n = itemsize
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class SegmentEntry:
    """A committed segment: its id (folder name), sample count and byte/class figures."""

    id: str
    samples: int
    class_counts: tuple[int, ...] = ()
    source_bytes: int = 0
    decoded_bytes: int = 0
    stored_bytes: int = 0

    @property
    def key(self) -> str:
        return f"{SEGMENT_DIR}/{self.id}"


@dataclass(frozen=True)
class FragmentRef:
    """A fragment a version-2 manifest names: its id, what it holds, and its file's checksum."""

    id: str
    segments: int
    samples: int
    crc32c: str

    @property
    def key(self) -> str:
        return f"{FRAGMENT_DIR}/{self.id}.json"


@dataclass(frozen=True)
class Manifest:
    """A snapshot of the lake: fields, classes, chunking and the ordered list of segments."""

    fields: dict[str, FieldInfo]
    classes: tuple[str, ...]
    chunk_samples: int
    segments: tuple[SegmentEntry, ...] = ()
    version: int = 0
    created: str = ""
    history: tuple[dict[str, Any], ...] = ()
    stats: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # Version 2: the fragments that list the segments, and the samples per class in the lake.
    fragments: tuple[FragmentRef, ...] = ()
    class_counts: tuple[int, ...] = ()

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.segments)

    def with_segments(self, segments, event: dict[str, Any]) -> Manifest:
        """The next snapshot: these segments, with ``event`` appended to the history.

        An append (the old segments first) keeps the fragments that list them, and adds the new
        segments' class counts to the lake's; any other list starts afresh. Segments that no
        fragment lists go into a new fragment when the version is committed.
        """
        segments = tuple(segments)
        appended = segments[: len(self.segments)] == self.segments
        added = segments[len(self.segments) :] if appended else segments
        kept = self.fragments if appended else ()
        totals = self.lake_class_counts() if appended else ()
        counts = _summed_counts(totals, added, len(self.classes))
        if sum(counts) != sum(s.samples for s in segments):
            counts = ()  # some segment's counts are unknown: so are the lake's
        return replace(
            self,
            segments=segments,
            fragments=kept,
            class_counts=counts,
            history=(*self.history, event),
        )

    def lake_class_counts(self) -> tuple[int, ...]:
        """Samples per class in the whole lake (one per class; empty where it is not known)."""
        if self.format_version >= 2:
            counts = self.class_counts
            return counts + (0,) * (len(self.classes) - len(counts)) if counts else ()
        return _summed_counts((), self.segments, len(self.classes))

    def to_json(self) -> bytes:
        """The manifest's bytes: JSON after a CRC-32C line (the layout of its format version)."""
        if self.format_version >= 2:
            return self._to_json_v2()
        doc = {
            "format": FORMAT_NAME,
            "format_version": 1,
            "version": self.version,
            "created": self.created,
            "samples": self.samples,
            "chunk_samples": self.chunk_samples,
            "classes": list(self.classes),
            "fields": {k: {**asdict(v), "shape": list(v.shape)} for k, v in self.fields.items()},
            "segments": [_segment_document(s) for s in self.segments],
            "history": list(self.history),
            "stats": self.stats,
        }
        return with_checksum(json.dumps(doc, indent=1, ensure_ascii=False).encode())

    def _to_json_v2(self) -> bytes:
        """One line per key, each value compact: small enough to rewrite on every commit, and
        still a document a person can read and diff."""
        doc = {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "version": self.version,
            "created": self.created,
            "samples": sum(f.samples for f in self.fragments),  # the fragments list them all
            "segments": sum(f.segments for f in self.fragments),
            "chunk_samples": self.chunk_samples,
            "fields": {k: {**asdict(v), "shape": list(v.shape)} for k, v in self.fields.items()},
            "classes": list(self.classes),
            "class_counts": list(self.lake_class_counts()),  # [] where not known
            "fragments": [asdict(f) for f in self.fragments],
            "history": list(self.history),
            "stats": self.stats,
        }
        return with_checksum(compact_document(doc))


def _summed_counts(totals: tuple[int, ...], segments, classes: int) -> tuple[int, ...]:
    """``totals`` plus the class counts of ``segments``, one entry per class."""
    import numpy as np

    out = np.zeros(classes, dtype=np.int64)
    out[: len(totals)] += np.asarray(totals, dtype=np.int64)
    for segment in segments:
        n = min(classes, len(segment.class_counts))
        out[:n] += np.asarray(segment.class_counts[:n], dtype=np.int64)
    return tuple(out.tolist())


def compact_document(doc: dict[str, Any]) -> bytes:
    """``doc`` as JSON with one top-level key per line (as the checksum line expects), each
    value without indentation."""
    lines = (
        f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False, separators=(',', ':'))}"
        for k, v in doc.items()
    )
    return ("{\n" + ",\n".join(lines) + "\n}").encode()


def manifest_key(version: int) -> str:
    return f"{MANIFEST_DIR}/v{version:08d}.json"


_SEGMENT_KEYS = tuple(f.name for f in fields(SegmentEntry))


def _segment_document(entry: SegmentEntry) -> dict[str, Any]:
    """A segment's manifest entry, keys in field order (`asdict` deep-copies every count: 90%
    of writing a manifest with a thousand classes)."""
    doc = {key: getattr(entry, key) for key in _SEGMENT_KEYS}
    doc["class_counts"] = list(entry.class_counts)
    return doc


def with_checksum(body: bytes) -> bytes:
    """``body`` (a JSON document starting ``{\n``) with its CRC-32C as the first key's line."""
    from lakeio.format.chunks import crc32c_hex

    return b'{\n "crc32c": "%s",\n' % crc32c_hex(body).encode() + body[len(b"{\n") :]
