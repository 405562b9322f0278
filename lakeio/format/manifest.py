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

import re
import uuid
from dataclasses import replace
from datetime import datetime, timezone

from lakeio.errors import CommitConflictError, FormatError, LakeNotFoundError
from lakeio.format.fragments import read_fragments, write_fragment
from lakeio.format.location import Location
from lakeio.format.manifest_checks import manifest_from_json
from lakeio.format.manifest_model import (  # (the manifest's data, named here as before)
    FORMAT_NAME,
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    FRAGMENT_DIR,
    MANIFEST_DIR,
    MAX_MANIFEST_BYTES,
    META_DIR,
    SEGMENT_DIR,
    FieldInfo,
    FragmentRef,
    Manifest,
    SegmentEntry,
    compact_document,
    manifest_key,
)

_MANIFEST_NAME = re.compile(r"^v(\d{8})\.json$")

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "FRAGMENT_DIR",
    "MANIFEST_DIR",
    "MAX_MANIFEST_BYTES",
    "META_DIR",
    "SEGMENT_DIR",
    "FieldInfo",
    "FragmentRef",
    "Manifest",
    "SegmentEntry",
    "commit_manifest",
    "compact_document",
    "manifest_from_json",
    "manifest_key",
    "manifest_versions",
    "read_manifest",
]


def manifest_versions(loc: Location) -> list[int]:
    """Committed manifest versions at ``loc``, oldest first."""
    versions = []
    for name in loc.list(MANIFEST_DIR):
        match = _MANIFEST_NAME.match(name)
        if match:
            versions.append(int(match.group(1)))
    return sorted(versions)


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
    manifest = manifest_from_json(data, loc.describe(key))
    if manifest.version != version:
        raise FormatError(
            f"{loc.describe(key)}: file says version {manifest.version}, name says {version}"
        )
    if manifest.fragments:
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
    fragment = write_fragment(loc, rest)
    history = manifest.history
    if history:  # the event that added the segments names the fragment that lists them
        history = (*history[:-1], {**history[-1], "fragment": fragment.id})
    return replace(manifest, fragments=(*manifest.fragments, fragment), history=history)
