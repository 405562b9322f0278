"""`lakeio.ingest`: plan segments on the client, write them as Dask tasks, commit one manifest.

The client only lists, plans and commits; decoding and writing happen on the workers. Nothing
becomes visible until the manifest commit, so a run killed at any point leaves the previous
lake as it was, and rerunning the same command reuses every segment already written.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import CancelledError
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import dask.config
import numpy as np
from distributed import Client
from distributed.comm.core import CommClosedError
from tqdm.auto import tqdm

from lakeio.cluster.connect import completed, dask_client, require_workers
from lakeio.errors import (
    IngestError,
    LakeNotFoundError,
    SourceError,
    SourceReadError,
)
from lakeio.format.location import Location, is_storage_full
from lakeio.format.manifest import FORMAT_VERSION, Manifest, read_manifest
from lakeio.format.paths import display_path, stored_path
from lakeio.ingest import plan
from lakeio.ingest.commit import after_commit, check_segments_visible, destination_full, publish
from lakeio.ingest.layout import Layout, decide_layout
from lakeio.ingest.options import MODES, IngestOptions
from lakeio.ingest.report import IngestSummary, report_lines, write_extra_report
from lakeio.ingest.sources import (
    ArraySource,
    FolderScan,
    array_source,
    is_array_file,
    iterable_source,
    load_array_file,
    scan_image_folder,
)
from lakeio.ingest.tasks import SegmentTask, run_segment_task

# Sources of fewer items than this ingest on threads in this process, without a dashboard: a
# cluster of processes takes longer to start than their work (CLI on 10 JPEGs: 2.3 s vs 0.8 s).
dask.config.update_defaults({"lakeio": {"ingest": {"in-process-below": 2000}}})


def ingest(
    source: Any,
    dest: str | os.PathLike,
    *,
    labels: Any = None,
    classes: Any = None,
    mode: str = "create",
    cluster: Client | str | None = None,
    workers: int | None = None,
    storage_options: dict | None = None,
    source_options: dict | None = None,
    report: str | None = None,
    progress: bool = True,
    echo=print,
    **options: Any,
) -> IngestSummary:
    """Turn ``source`` into (or onto) the lake at ``dest`` on a Dask cluster; returns the summary.

    ``source`` is an ImageFolder path/URL, a ``.npy``/``.npz`` file, an (N, H, W[, C]) uint8
    array (with ``labels=``), or an iterable of ``(image, label)``. ``mode`` is ``create``
    (refuses a lake holding other data), ``append`` or ``overwrite``. ``options`` are the fields
    of `IngestOptions` (``size=(H, W)``, ``codec="zstd:3"``, ``on_error="fail"``, …).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    opts = IngestOptions(**options)
    dest_loc = Location.of(dest, storage_options)
    base = _latest_or_none(dest_loc)
    lake = base if mode == "append" else None  # only an append inherits the lake's layout
    src_loc, resolved = _resolve_source(source, labels, classes, lake, source_options)
    small = len(_items(resolved)) < int(dask.config.get("lakeio.ingest.in-process-below"))
    # In-memory sources (arrays, iterables, a loaded .npy) need no worker processes: threads
    # resize and compress without shipping the arrays, and a script needs no __main__ guard.
    # Neither does a small folder: starting processes and the dashboard would take longer
    # than its work (simplejpeg, zstd and lz4 release the GIL, so threads decode in parallel).
    in_process = small or src_loc is None or "memory" in (dest_loc.protocol, src_loc.protocol)
    with dask_client(
        cluster, workers=workers, processes=not in_process, dashboard=not small, echo=echo
    ) as client:
        started = time.perf_counter()  # the work, not the cluster's start-up
        layout = decide_layout(client, resolved, src_loc, opts, lake)
        layout = replace(layout, format_version=_format_version(dest_loc, base, mode, opts))
        tasks = _plan_tasks(resolved, src_loc, dest_loc, layout, opts)
        planned = [t.segment_id for t in tasks]
        if _already_committed(base, planned, mode) or _committed_in_the_other_cut(
            base, mode, resolved, src_loc, dest_loc, layout, opts
        ):
            return _up_to_date_summary(dest_loc, base, started)
        _check_mode(dest_loc, base, mode)
        results = _run_tasks(client, tasks, opts, progress)
    _refuse_empty_result(results)
    check_segments_visible(dest_loc, results)
    rows = _report_rows(resolved, results)
    if report:  # before the commit: a report that cannot be written must not follow a commit
        write_extra_report(Location.of(report, storage_options), rows)
    event = _event(source, opts, mode)
    manifest = publish(dest_loc, base, layout, tasks, results, mode, event)
    where = after_commit(dest_loc, manifest, rows)
    return _summarize(dest_loc, manifest, resolved, results, report or where, started)


def _items(resolved: FolderScan | ArraySource):
    return resolved.files if isinstance(resolved, FolderScan) else resolved


def _refuse_empty_result(results: list[dict]) -> None:
    """Committing a version with nothing in it would only hide that every image was bad."""
    rejects = [r for res in results for r in res["rejects"]]
    if rejects and not any(int(r["samples"]) for r in results):
        shown = "; ".join(f"{p}: {why}" for p, why in rejects[:3])
        raise IngestError(
            f"all {len(rejects)} images were rejected, nothing was committed (first: {shown})"
        )


def _latest_or_none(loc: Location) -> Manifest | None:
    try:
        return read_manifest(loc)
    except LakeNotFoundError:
        return None


def _resolve_source(source, labels, classes, base, source_options):
    """A `FolderScan` (with its Location) or an `ArraySource`, with classes merged for appends."""
    if isinstance(source, (str, os.PathLike)):
        src_loc = Location.of(source, source_options)
        if is_array_file(src_loc.url):
            return None, _with_lake_classes(load_array_file(src_loc, labels), base)
        if labels is not None:
            raise IngestError(
                f"{src_loc.describe()}: --labels applies to a .npy source only; a folder's labels are its class folders"
            )
        return src_loc, scan_image_folder(src_loc, base.classes if base else ())
    if isinstance(source, np.ndarray) or labels is not None:
        return None, _with_lake_classes(array_source(source, labels, classes), base)
    return None, _with_lake_classes(iterable_source(source, classes), base)


def _with_lake_classes(source: ArraySource, base: Manifest | None) -> ArraySource:
    if base is None or not base.classes:
        return source
    lake, given = base.classes, source.classes
    if given[: len(lake)] == lake:
        return source
    if len(given) <= len(lake) and lake[: len(given)] == given:
        return ArraySource(source.images, source.labels, lake, source.name)
    raise IngestError(
        f"{source.name}: classes {list(given)} do not extend the lake's classes {list(lake)}"
    )


def _plan_tasks(
    resolved, src_loc, dest_loc, layout: Layout, opts: IngestOptions
) -> list[SegmentTask]:
    total = len(resolved.files) if isinstance(resolved, FolderScan) else len(resolved)
    digest = plan.fingerprint(
        {
            "fields": repr(layout.fields),
            "decode": repr(layout.decode),
            "chunks": layout.chunk_samples,
        }
    )
    common = {
        "dest": dest_loc,
        "fields": layout.fields,
        "chunk_samples": layout.chunk_samples,
        "decode": layout.decode,
        "skip_errors": opts.on_error == "skip",
        "num_classes": len(layout.classes),
    }
    tasks = []
    per_segment = plan.segment_samples(total, layout.chunk_samples, layout.format_version)
    ranges = plan.segment_ranges(total, per_segment)
    for index, rows in enumerate(ranges):
        if isinstance(resolved, FolderScan):
            files = resolved.files[rows.start : rows.stop]
            # surrogateescape: names that are not UTF-8 hash as their raw bytes, others as before
            head = [f"{src_loc.describe()}\n".encode("utf-8", "surrogateescape")]
            content = [
                *head,
                *(
                    f"{f.path}\0{f.label}\0{f.size}\0{f.stamp}\n".encode("utf-8", "surrogateescape")
                    for f in files
                ),
            ]
            sid = plan.segment_id(digest, index, content)
            tasks.append(SegmentTask(sid, src=src_loc, files=files, **common))
        else:
            images = resolved.images[rows.start : rows.stop]
            labels = resolved.labels[rows.start : rows.stop]
            content = [np.ascontiguousarray(im).tobytes() for im in images] + [labels.tobytes()]
            sid = plan.segment_id(digest, index, content)
            names = tuple(f"{resolved.name}[{i}]" for i in rows)
            tasks.append(SegmentTask(sid, images=images, labels=labels, names=names, **common))
    return tasks


def _format_version(dest: Location, base: Manifest | None, mode: str, opts: IngestOptions) -> int:
    """A new lake's is the one asked for (default the newest); a lake keeps its own: an append
    never changes it (`lakeio upgrade` does), an overwrite only when asked."""
    if base is None or mode != "append":
        own = base.format_version if base is not None else FORMAT_VERSION
        return opts.format_version or own
    if opts.format_version not in (None, base.format_version):
        raise IngestError(
            f"{dest.describe()} is a lake of format version {base.format_version}; an append "
            f"keeps it (asked for {opts.format_version}). `lakeio upgrade` moves a lake to "
            f"version {FORMAT_VERSION}"
        )
    return base.format_version


def _committed_in_the_other_cut(base, mode, resolved, src_loc, dest_loc, layout, opts) -> bool:
    """A version-2 lake may hold segments cut as version 1 cut them (a lake upgraded after its
    ingest): rerunning that ingest must find them, not append the data a second time."""
    if base is None or base.format_version < 2:
        return False
    total = len(resolved.files) if isinstance(resolved, FolderScan) else len(resolved)
    cut = plan.segment_samples(total, layout.chunk_samples, 1)
    if cut == plan.segment_samples(total, layout.chunk_samples, layout.format_version):
        return False
    older = _plan_tasks(resolved, src_loc, dest_loc, replace(layout, format_version=1), opts)
    return _already_committed(base, [t.segment_id for t in older], mode)


def _already_committed(base: Manifest | None, planned: list[str], mode: str) -> bool:
    if base is None or not planned:
        return False
    committed = [s.id for s in base.segments]
    if mode == "overwrite":
        return committed == planned
    return set(planned) <= set(committed)


def _check_mode(dest: Location, base: Manifest | None, mode: str) -> None:
    if base is not None and base.samples > 0 and mode == "create":
        raise IngestError(
            f"{dest.describe()} already holds a lake of {base.samples} samples (version "
            f"{base.version}) from other data; pass --append to add to it or --overwrite to replace it"
        )


LOST_DATA_RETRIES = 3  # scatters of one array task's data after workers holding it died


def _submit(client: Client, task: SegmentTask, run: str):
    # Each run's tasks are its own: with the segment id alone as the key, Dask hands an ingest
    # into another lake the first one's result (and that lake misses the segment), and a rerun
    # right after a failed run the cancellation of the failed run's task.
    key = f"lakeio-ingest-{task.segment_id}-{run}"
    if task.src is not None:
        return client.submit(run_segment_task, task, key=key, retries=2)
    # arrays travel as scattered data, not inside the task graph
    data = _scatter(client, (task.images, task.labels))
    lean = replace(task, images=None, labels=None)
    return client.submit(_run_array_task, lean, data, key=key, retries=2)


def _scatter(client: Client, data):
    """Scatter ``data``; a worker dying during it is tried around: ``Stream is closed`` while
    sending, or a ``KeyError`` naming it when the scheduler records where the data went."""
    for attempt in range(LOST_DATA_RETRIES + 1):
        try:
            return client.scatter(data, hash=False)
        except (CommClosedError, KeyError):
            if attempt == LOST_DATA_RETRIES:
                raise
            require_workers(client)
    raise AssertionError("unreachable")  # pragma: no cover


def _run_array_task(task: SegmentTask, data) -> dict:
    images, labels = data
    return run_segment_task(replace(task, images=images, labels=labels))


def _run_tasks(
    client: Client, tasks: list[SegmentTask], opts: IngestOptions, progress: bool
) -> list:
    """Run the segment tasks with a progress bar; in ``fail`` mode stop at the first bad file."""
    run = uuid.uuid4().hex[:8]
    futures = {_submit(client, task, run): i for i, task in enumerate(tasks)}
    pending, lost = set(futures), [0] * len(tasks)
    results: list[dict | None] = [None] * len(tasks)
    total = sum(len(t) for t in tasks)
    with tqdm(total=total, unit="img", desc="lakeio ingest", disable=not progress) as bar:
        for future in completed(client, pending):
            i = futures[future]
            try:
                results[i] = future.result()
            except (CancelledError, CommClosedError):
                # The worker holding an array task's scattered data died with it: this client
                # still has the arrays, so scatter them again (folder tasks reread their files).
                if tasks[i].src is not None or lost[i] >= LOST_DATA_RETRIES:
                    raise
                lost[i] += 1
                again = _submit(client, tasks[i], f"{run}-{lost[i]}")
                futures[again] = i
                pending.add(again)
                continue
            except SourceError as exc:
                client.cancel(list(futures))
                raise IngestError(
                    f"{exc.path}: {exc.reason} (--on-error fail: nothing was committed, "
                    "the lake is unchanged)"
                ) from None
            except SourceReadError as exc:
                client.cancel(list(futures))
                raise IngestError(
                    f"{display_path(exc.path)}: {exc.reason}. Nothing was committed and the lake "
                    "is unchanged; "
                    "segments already written are kept, so rerunning the same command resumes"
                ) from None
            except OSError as exc:
                if not is_storage_full(exc):
                    raise
                client.cancel(list(futures))
                raise destination_full(tasks[i].dest, exc) from None
            bar.update(len(tasks[i]))
    return results


def _event(source, opts: IngestOptions, mode: str) -> dict:
    where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
    where = stored_path(where)  # a folder name that is not UTF-8 must still fit the manifest
    return {
        "op": "ingest",
        "mode": mode,
        "source": where,
        "options": opts.as_dict(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _up_to_date_summary(dest: Location, base: Manifest, started: float) -> IngestSummary:
    return IngestSummary(
        dest=dest.describe(), version=base.version, written=0, rejected=0, ignored=0,
        segments=0, reused_segments=0, source_bytes=0, decoded_bytes=0, stored_bytes=0,
        seconds=time.perf_counter() - started, lake_samples=base.samples, report=None,
        up_to_date=True,
    )  # fmt: skip


def _report_rows(resolved, results: list[dict]) -> list[str]:
    rejects = [{"path": p, "reason": why} for r in results for p, why in r["rejects"]]
    scan = resolved if isinstance(resolved, FolderScan) else None
    return report_lines(rejects, scan.ignored if scan else (), scan.empty_classes if scan else ())


def _summarize(dest, manifest, resolved, results, where, started) -> IngestSummary:
    scan = resolved if isinstance(resolved, FolderScan) else None
    ignored = scan.ignored if scan else ()
    rejects = [p for r in results for p, _ in r["rejects"]]
    return IngestSummary(
        dest=dest.describe(),
        version=manifest.version,
        written=sum(int(r["samples"]) for r in results),
        rejected=len(rejects),
        ignored=len(ignored),
        segments=len(results),
        reused_segments=sum(1 for r in results if r.get("reused")),
        source_bytes=sum(int(r["source_bytes"]) for r in results),
        decoded_bytes=sum(int(r["decoded_bytes"]) for r in results),
        stored_bytes=sum(int(r["stored_bytes"]) for r in results),
        seconds=time.perf_counter() - started,
        lake_samples=manifest.samples,
        report=where,
    )
