"""The lake's root Zarr group: marks the folder as a lake for plain-zarr users.

The manifest is the source of truth; the root group's attributes carry a best-effort copy of
the committed segment list so that someone with only zarr-python can find the live data.
"""

from __future__ import annotations

from lakeio.format.location import Location
from lakeio.format.manifest import FORMAT_VERSION, MANIFEST_DIR, Manifest

ROOT_ATTR = "lakeio"


def ensure_root_group(loc: Location) -> None:
    """Create the root group (with the format marker) if it is not there yet."""
    import zarr

    if loc.exists("zarr.json"):
        return
    zarr.open_group(
        loc.zarr_store(),
        mode="a",
        zarr_format=3,
        attributes={ROOT_ATTR: {"format_version": FORMAT_VERSION, "manifests": MANIFEST_DIR}},
    )


def publish_root_summary(loc: Location, manifest: Manifest) -> None:
    """Copy the committed version's segment list into the root attributes (not authoritative)."""
    import zarr

    group = zarr.open_group(loc.zarr_store(), mode="a", zarr_format=3)
    group.attrs[ROOT_ATTR] = {
        "format_version": FORMAT_VERSION,
        "manifests": MANIFEST_DIR,
        "version": manifest.version,
        "samples": manifest.samples,
        "classes": list(manifest.classes),
        "segments": [s.key for s in manifest.segments],
        "note": "the manifest in _lakeio/manifests is authoritative; this is a copy",
    }
