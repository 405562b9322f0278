"""The end of an ingest: check what the workers wrote, commit it as the next version, and what
follows a commit. Appends that race retry on conflict; a full destination is one clear line.
"""

from __future__ import annotations

import random
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from lakeio.errors import CommitConflictError, IngestError, LakeWarning
from lakeio.format.location import Location, is_storage_full, remove_dead_partials
from lakeio.format.manifest import (
    FRAGMENT_DIR,
    MANIFEST_DIR,
    Manifest,
    SegmentEntry,
    commit_manifest,
    read_manifest,
)
from lakeio.format.root import ensure_root_group, publish_root_summary
from lakeio.format.segment import read_segment_summary, segment_key
from lakeio.ingest.report import write_report

COMMIT_RETRIES = 10  # appends racing on one lake: each conflict means another one landed


def check_segments_visible(dest: Location, results: list[dict]) -> None:
    """Every segment the workers wrote must be readable from here before it is committed: a
    worker on another machine writing to a local path writes to its own disk."""
    ids = [r["segment_id"] for r in results]
    with ThreadPoolExecutor(max_workers=16) as pool:  # one small read each; overlap on stores
        found = list(pool.map(lambda sid: read_segment_summary(dest, sid) is not None, ids))
    missing = [sid for sid, ok in zip(ids, found, strict=True) if not ok]
    if missing:
        raise IngestError(
            f"{dest.describe()}: {len(missing)} of {len(ids)} segments the workers wrote are not "
            f"visible from this machine (first: {segment_key(missing[0])}); nothing was "
            "committed. Workers write where they run: an ingest on several machines needs a "
            "destination they all share (an object store URL such as s3://bucket/lake.lake, or "
            "a shared filesystem mounted at the same path everywhere)"
        )


def destination_full(dest: Location, exc: OSError) -> IngestError:
    where = f" writing {exc.filename}" if exc.filename else ""
    return IngestError(
        f"{dest.describe()}: the destination is full ({exc.strerror}{where}). Nothing was "
        "committed and the lake is unchanged; free space there and rerun the same command: "
        "segments already written are kept, so it resumes"
    )


def publish(dest: Location, base, layout, tasks, results, mode, event) -> Manifest:
    """Commit the new version; a full destination says so in one line, nothing committed."""
    try:
        ensure_root_group(dest)
        if dest.is_local:  # temp files of commits killed mid-write
            remove_dead_partials(dest.path(MANIFEST_DIR))
            remove_dead_partials(dest.path(FRAGMENT_DIR))
        return _commit(dest, base, layout, tasks, results, mode, event)
    except OSError as exc:
        if is_storage_full(exc):
            raise destination_full(dest, exc) from None
        raise


def after_commit(dest: Location, manifest: Manifest, rows: list[str]) -> str | None:
    """The root summary (a convenience copy) and the in-lake report. The version is committed
    already, so a failure here is a warning, never an error that would make a user redo it."""
    _or_warn(dest, manifest, "root summary", lambda: publish_root_summary(dest, manifest))
    return _or_warn(dest, manifest, "report", lambda: write_report(dest, manifest.version, rows))


def _or_warn(dest: Location, manifest: Manifest, what: str, step):
    try:
        return step()
    except Exception as exc:  # whatever it is (a damaged root zarr.json, a full disk)
        warnings.warn(
            f"{dest.describe()}: version {manifest.version} is committed, but its {what} could "
            f"not be written ({type(exc).__name__}: {exc}); the lake reads without it",
            LakeWarning,
            stacklevel=4,
        )
        return None


def _commit(dest, base, layout, tasks, results, mode, event) -> Manifest:
    """Publish the new segments (after the lake's, when appending); retry appends on conflict."""
    new = tuple(
        SegmentEntry(
            id=r["segment_id"],
            samples=int(r["samples"]),
            class_counts=tuple(r["class_counts"]),
            source_bytes=int(r["source_bytes"]),
            decoded_bytes=int(r["decoded_bytes"]),
            stored_bytes=int(r["stored_bytes"]),
        )
        for r in results
    )
    event = {**event, "segments": [t.segment_id for t in tasks]}
    classes = layout.classes
    for _ in range(COMMIT_RETRIES):
        candidate = _candidate(base, layout, classes, new, mode, event)
        try:
            return commit_manifest(dest, candidate)
        except CommitConflictError:
            if mode != "append":
                raise
            time.sleep(random.uniform(0, 0.05))  # racing writers: do not collide in lockstep
            base = read_manifest(dest)
            _refuse_other_layout(dest, base, layout)
            if _committed_by_another(dest, base, new):
                return base  # the same append ran twice at once: the other one committed it
            classes = _merged_classes(dest, base.classes, classes)
    raise IngestError(f"{dest.describe()}: gave up committing after {COMMIT_RETRIES} conflicts")


def _candidate(base, layout, classes, new, mode: str, event: dict) -> Manifest:
    """The next version: ``new`` after ``base``'s segments (an append) or alone.

    An append writes the base's format version, or the layout's if newer (a lake upgraded while
    the append ran stays upgraded), never an older one over a newer one. The lake's class counts
    are taken in the base's own format before anything else changes."""
    start = base or Manifest(fields=layout.fields, classes=(), chunk_samples=layout.chunk_samples)
    format_version = layout.format_version
    if base is not None and mode == "append":
        format_version = max(format_version, base.format_version)
    start = replace(
        start,
        fields=layout.fields,
        classes=classes,
        chunk_samples=layout.chunk_samples,
        stats={},  # statistics describe the samples they were computed on: `lakeio stats` again
        class_counts=start.lake_class_counts(),
        format_version=format_version,
    )
    keep = start.segments if mode == "append" else ()
    if format_version == 1:  # version 1 lists a row of counts per segment, one per class
        keep = tuple(_pad_counts(s, len(classes)) for s in keep)
        start = replace(start, segments=keep)
    else:  # the event names its fragment, which lists the segments
        event = {k: v for k, v in event.items() if k != "segments"}
    return start.with_segments((*keep, *(_pad_counts(s, len(classes)) for s in new)), event)


def _committed_by_another(dest: Location, base: Manifest, new: tuple) -> bool:
    """Whether a rival commit already holds this append's segments (the same command run twice
    at once): all of them, so there is nothing left to commit; some of them is an error."""
    held = {s.id for s in base.segments}
    mine = {s.id for s in new}
    if not mine & held:
        return False
    if mine <= held:
        return True
    raise IngestError(
        f"{dest.describe()}: version {base.version}, committed while this append ran, already "
        f"holds {len(mine & held)} of its {len(mine)} segments; nothing of this append was "
        "committed: rerun it to append what is missing"
    )


def _refuse_other_layout(dest: Location, base: Manifest, layout) -> None:
    """An --overwrite with another size, codec or chunking committed first: this append's
    segments were written for the old layout and cannot go under the new one."""
    if base.fields != layout.fields or base.chunk_samples != layout.chunk_samples:
        raise IngestError(
            f"{dest.describe()}: while this append ran, version {base.version} replaced the "
            "lake with another layout (image size, codec or chunking); nothing of this append "
            "was committed: rerun it to append onto the new version"
        )


def _merged_classes(dest: Location, theirs: tuple, ours: tuple) -> tuple:
    """The class list after a concurrent append committed first: each append may add classes
    after the lake's, so one list must extend the other; else labels would mean two things."""
    longer, shorter = (theirs, ours) if len(theirs) >= len(ours) else (ours, theirs)
    if longer[: len(shorter)] != shorter:
        raise IngestError(
            f"{dest.describe()}: another append committed first with classes {list(theirs)}, "
            f"which give label numbers other names than this append's {list(ours)}; nothing of "
            "this append was committed: rerun it to append onto the new version"
        )
    return longer


def _pad_counts(entry: SegmentEntry, width: int) -> SegmentEntry:
    """One count per class; counts that are not known (none recorded) stay not known."""
    if not entry.class_counts:
        return entry
    counts = tuple(entry.class_counts) + (0,) * (width - len(entry.class_counts))
    return replace(entry, class_counts=counts)
