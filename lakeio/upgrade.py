"""`lakeio upgrade`: move a lake to the newest format version by rewriting its metadata only.

No segment is read or written: the next version lists the same segments in one fragment, with
the lake's class counts summed from the old manifest. Earlier versions stay readable as they
were written (a version-1 snapshot stays version 1).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from lakeio.errors import CommitConflictError, LakeError
from lakeio.format.location import Location
from lakeio.format.manifest import (
    FORMAT_VERSION,
    Manifest,
    commit_manifest,
    manifest_key,
    read_manifest,
)
from lakeio.format.root import publish_root_summary

UPGRADE_RETRIES = 10  # each conflict means another writer committed: upgrade its version


@dataclass(frozen=True)
class UpgradeResult:
    """What `upgrade` did: the version it read, the version it committed (None: nothing to do)."""

    url: str
    from_version: int
    from_format: int
    version: int | None
    segments: int
    manifest_bytes_before: int
    manifest_bytes_after: int

    def line(self) -> str:
        if self.version is None:
            return f"{self.url}: already format version {self.from_format} (version {self.from_version}); nothing to do"
        listed = f"{self.segments:,} segments in one fragment" if self.segments else "no segments"
        return (
            f"{self.url}: version {self.from_version} (format {self.from_format}) upgraded to "
            f"format {FORMAT_VERSION} as version {self.version}: {listed}, no segment touched; "
            f"manifest {self.manifest_bytes_before:,} -> {self.manifest_bytes_after:,} bytes"
        )


def upgrade(url: str | os.PathLike, *, storage_options: dict | None = None) -> UpgradeResult:
    """Commit the lake's latest version again in the newest format (metadata only)."""
    loc = Location.of(url, storage_options)
    for _ in range(UPGRADE_RETRIES):
        base = read_manifest(loc)
        before = loc.size(manifest_key(base.version))  # a stat: the manifest was just read
        if base.format_version >= FORMAT_VERSION:
            return UpgradeResult(loc.describe(), base.version, base.format_version, None,
                                 len(base.segments), before, before)  # fmt: skip
        try:
            committed = commit_manifest(loc, _upgraded(base))
        except CommitConflictError:
            time.sleep(random.uniform(0, 0.05))
            continue
        publish_root_summary(loc, committed)
        after = len(committed.to_json())  # the bytes the commit wrote (and read back)
        return UpgradeResult(loc.describe(), base.version, base.format_version,
                             committed.version, len(committed.segments), before, after)  # fmt: skip
    raise LakeError(f"{loc.describe()}: gave up upgrading after {UPGRADE_RETRIES} conflicts")


def _upgraded(base: Manifest) -> Manifest:
    counts = base.lake_class_counts()
    event = {
        "op": "upgrade",
        "from_format_version": base.format_version,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return replace(
        base,
        format_version=FORMAT_VERSION,
        fragments=(),  # one new fragment lists every segment
        class_counts=counts if sum(counts) == base.samples else (),
        history=(*base.history, event),
    )
