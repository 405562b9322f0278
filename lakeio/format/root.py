"""The lake's root Zarr group: marks the folder as a lake for plain-zarr users.

The manifest is the source of truth; the root group's attributes carry a best-effort pointer to
the latest version (format version 2: its manifest and fragment files, which list the segments;
version 1: a copy of the segment list) so that someone with only zarr-python finds the data.
Every folder between the root and a segment (``segments/``) is a Zarr group too, so
``zarr.open_group(lake)["segments"].members(max_depth=None)`` walks every segment's arrays.
"""

from __future__ import annotations

import contextlib
import json

from lakeio.format.location import Location
from lakeio.format.manifest import (
    FORMAT_VERSION,
    MANIFEST_DIR,
    SEGMENT_DIR,
    Manifest,
    manifest_key,
)

ROOT_ATTR = "lakeio"
# The document zarr writes for a group without attributes; it never changes, so any number of
# writers may create it at once.
EMPTY_GROUP = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode()


def ensure_root_group(loc: Location) -> None:
    """Make ``loc`` a Zarr hierarchy down to the segments: the root group (with the format
    marker) and the ``segments/`` group, each created only if it is not there yet."""
    import zarr

    if not loc.exists("zarr.json"):
        zarr.open_group(
            loc.zarr_store(),
            mode="a",
            zarr_format=3,
            attributes={ROOT_ATTR: {"format_version": FORMAT_VERSION, "manifests": MANIFEST_DIR}},
        )
    ensure_group(loc, SEGMENT_DIR)


def ensure_group(loc: Location, key: str) -> None:
    """Create an empty Zarr group at ``key`` unless a ``zarr.json`` is already there.

    One existence check when it is there (every later commit); an exclusive create when it is
    not, so a racing writer's copy (the same bytes) is kept, and an existing one, perhaps with
    attributes someone added, is never rewritten.
    """
    marker = f"{key}/zarr.json"
    if loc.exists(marker):
        return
    with contextlib.suppress(FileExistsError):  # another writer made it since the check
        loc.create_exclusive(marker, EMPTY_GROUP)


def publish_root_summary(loc: Location, manifest: Manifest) -> None:
    """Point the root attributes at the committed version (a convenience, not authoritative).

    Version 2 names the manifest and its fragments, not every segment and class: a commit's
    writes stay small however large the lake. Every commit ends here, so a lake written before
    ``segments/`` was a group becomes one the next time anything (an ingest, ``lakeio stats``)
    commits to it.
    """
    import zarr

    ensure_group(loc, SEGMENT_DIR)
    group = zarr.open_group(loc.zarr_store(), mode="a", zarr_format=3)
    summary = {
        "format_version": manifest.format_version,
        "manifests": MANIFEST_DIR,
        "version": manifest.version,
        "samples": manifest.samples,
    }
    if manifest.format_version >= 2:
        summary |= {
            "manifest": manifest_key(manifest.version),
            "fragments": [f.key for f in manifest.fragments],
        }
    else:
        summary |= {
            "classes": list(manifest.classes),
            "segments": [s.key for s in manifest.segments],
        }
    group.attrs[ROOT_ATTR] = {
        **summary,
        "note": "the manifest in _lakeio/manifests is authoritative; this is a copy",
    }
