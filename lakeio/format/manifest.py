"""The manifest: the small JSON document that says which segments make up a lake.

Each commit writes the next numbered manifest (``_lakeio/manifests/v00000007.json``) with an
exclusive create, so a write becomes visible all at once, two writers cannot both win the same
version, and every earlier version stays readable as a snapshot.

Format version 2 keeps that document small whatever the lake's size: the segments are listed
in immutable **fragments** (``_lakeio/fragments/<id>.json``, one per ingest or append), which the
manifest names, so version N+1 shares N's fragments and a commit writes only what changed.
Per-class counts are kept once for the whole lake; each segment's own are in its ``zarr.json``.
Format version 1 (every segment, with a dense row of class counts, in every manifest) is still
read, and still written to a lake that has it until ``lakeio upgrade``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any

from lakeio.errors import CommitConflictError, FormatError, LakeNotFoundError
from lakeio.format.location import Location

FORMAT_NAME = "lakeio"
FORMAT_VERSION = 2  # what new lakes are written as
FORMAT_VERSIONS = (1, 2)  # what this lakeio reads
META_DIR = "_lakeio"
MANIFEST_DIR = f"{META_DIR}/manifests"
SEGMENT_DIR = "segments"
_MANIFEST_NAME = re.compile(r"^v(\d{8})\.json$")
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
        from lakeio.format.manifest_checks import with_checksum

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
        from lakeio.format.manifest_checks import with_checksum

        return with_checksum(compact_document(doc))

    @classmethod
    def from_json(cls, data: bytes, source: str) -> Manifest:
        """Parse and check a manifest; anything malformed or absurd is a `FormatError` naming
        ``source``, the field, what was expected and what was found."""
        from lakeio.format.manifest_checks import manifest_from_json

        return manifest_from_json(data, source)


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


def manifest_versions(loc: Location) -> list[int]:
    """Committed manifest versions at ``loc``, oldest first."""
    versions = []
    for name in loc.list(MANIFEST_DIR):
        match = _MANIFEST_NAME.match(name)
        if match:
            versions.append(int(match.group(1)))
    return sorted(versions)


_SEGMENT_KEYS = tuple(f.name for f in fields(SegmentEntry))


def _segment_document(entry: SegmentEntry) -> dict[str, Any]:
    """A segment's manifest entry, keys in field order (`asdict` deep-copies every count: 90%
    of writing a manifest with a thousand classes)."""
    doc = {key: getattr(entry, key) for key in _SEGMENT_KEYS}
    doc["class_counts"] = list(entry.class_counts)
    return doc


def read_manifest(loc: Location, version: int | None = None) -> Manifest:
    """The manifest at ``version`` (default: the latest); `LakeNotFoundError` if there is none."""
    if version is None:
        versions = manifest_versions(loc)
        if not versions:
            raise LakeNotFoundError(
                f"{loc.describe()}: no lake here (no {MANIFEST_DIR}/v*.json); "
                "create one with `lakeio ingest SRC DEST`"
            )
        version = versions[-1]
    key = manifest_key(version)
    try:
        data = loc.read_bytes(key)
    except FileNotFoundError:
        raise LakeNotFoundError(
            f"{loc.describe(key)}: manifest version {version} not found"
        ) from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise FormatError(f"{loc.describe(key)}: manifest is {len(data)} bytes, over the limit")
    manifest = Manifest.from_json(data, loc.describe(key))
    if manifest.version != version:
        raise FormatError(
            f"{loc.describe(key)}: file says version {manifest.version}, name says {version}"
        )
    if manifest.fragments:
        from lakeio.format.fragments import read_fragments

        listed = read_fragments(loc, manifest.fragments, manifest.chunk_samples, key)
        manifest = replace(manifest, segments=listed)
    return manifest


def commit_manifest(loc: Location, manifest: Manifest) -> Manifest:
    """Publish ``manifest`` as the next version; `CommitConflictError` if another writer won it."""
    versions = manifest_versions(loc)
    version = (versions[-1] + 1) if versions else 1
    expected_parent = manifest.version
    if versions and versions[-1] != expected_parent:
        raise CommitConflictError(
            f"{loc.describe()}: lake moved from version {expected_parent} to {versions[-1]} "
            "while this write ran"
        )
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    final = replace(manifest, version=version, created=created)
    if final.history:  # this commit's own mark: two writers' equal manifests differ by it, so
        # reading a version back (after a lost answer) tells this writer's from a rival's
        mark = {**final.history[-1], "commit": uuid.uuid4().hex}
        final = replace(final, history=(*final.history[:-1], mark))
    if final.format_version >= 2:
        final = _with_fragment_for_the_rest(loc, final)
    payload = final.to_json()
    try:
        loc.create_exclusive(manifest_key(version), payload)
    except FileExistsError:
        raise CommitConflictError(
            f"{loc.describe()}: another writer committed version {version} first"
        ) from None
    # A store that ignores the exclusive create (or a proxy in front of one) would let a later
    # writer replace this version unseen: read it back, and call a replaced one a conflict.
    if loc.read_bytes(manifest_key(version)) != payload:
        raise CommitConflictError(
            f"{loc.describe(manifest_key(version))}: another writer replaced this version "
            "right after it was written (the store does not honour exclusive creates)"
        )
    return final


def _with_fragment_for_the_rest(loc: Location, manifest: Manifest) -> Manifest:
    """``manifest`` with the segments that no fragment lists yet written as a new fragment."""
    listed = sum(f.segments for f in manifest.fragments)
    if listed > len(manifest.segments):
        raise ValueError(
            f"the manifest's fragments list {listed} segments, but it has {len(manifest.segments)}"
        )
    rest = manifest.segments[listed:]
    if not rest:
        return manifest
    from lakeio.format.fragments import write_fragment

    fragment = write_fragment(loc, rest)
    history = manifest.history
    if history:  # the event that added the segments names the fragment that lists them
        history = (*history[:-1], {**history[-1], "fragment": fragment.id})
    return replace(manifest, fragments=(*manifest.fragments, fragment), history=history)
