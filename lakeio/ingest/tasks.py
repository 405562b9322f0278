"""The work of one ingest task, run on a Dask worker: decode a segment's sources and write it.

A task is idempotent: if its segment is already complete in the destination (an interrupted
run got that far), it returns the stored summary instead of decoding again.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from lakeio.errors import SourceError, SourceReadError
from lakeio.format.location import Location
from lakeio.format.manifest import FieldInfo
from lakeio.format.paths import display_path, stored_path
from lakeio.format.segment import (
    read_segment_summary,
    start_segment,
    write_chunks,
    write_segment,
)
from lakeio.ingest.decode import DecodeOptions, conform_array, decode_image
from lakeio.ingest.sources import SourceFile


@dataclass(frozen=True)
class SegmentTask:
    """Everything a worker needs to produce one segment (picklable, no open handles)."""

    segment_id: str
    dest: Location
    fields: dict[str, FieldInfo]
    chunk_samples: int
    decode: DecodeOptions
    skip_errors: bool
    num_classes: int
    src: Location | None = None
    files: tuple[SourceFile, ...] = ()
    images: Any = None
    labels: np.ndarray | None = None
    names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.files) if self.src is not None else len(self.names)


def _read_source(task: SegmentTask, i: int, out: np.ndarray) -> tuple[np.ndarray, int, str, int]:
    """Decode sample ``i`` of the task (into ``out`` where possible): (image, label, path, bytes)."""
    if task.src is not None:
        item = task.files[i]
        try:
            data = task.src.read_bytes(item.path)
        except OSError as exc:  # the reader's trouble, not the image's: never a reject
            if _broken_link(task.src, item.path):  # the folder's content: no rerun mends it
                raise SourceError(item.path, "broken symbolic link (no target)") from None
            raise SourceReadError(item.path, f"cannot read file ({exc.strerror or exc})") from None
        return decode_image(data, item.path, task.decode, out), item.label, item.path, len(data)
    name = task.names[i]
    image = conform_array(task.images[i], name, task.decode)
    return image, int(task.labels[i]), name, image.nbytes


def _broken_link(src: Location, path: str) -> bool:
    if not src.is_local:
        return False
    full = src.path(path)
    return os.path.islink(full) and not os.path.exists(full)


# What the commit reads from a finished segment's summary (write_segment always stores them).
REUSED_KEYS = {"samples", "stored_bytes", "rejects", "class_counts", "source_bytes"}
REUSED_KEYS |= {"decoded_bytes"}

_local = threading.local()


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """A reusable per-thread uint8 buffer: Dask's workers return freed memory to the OS eagerly,
    so a fresh 16-32 MB array per task costs thousands of page faults."""
    size = int(np.prod(shape))
    buffer = getattr(_local, "buffer", None)
    if buffer is None or buffer.size < size:
        buffer = _local.buffer = np.empty(size, dtype=np.uint8)
    return buffer[:size].reshape(shape)


def _check_shape(image: np.ndarray, shape: tuple[int, ...], path: str) -> None:
    if image.shape != shape:
        raise SourceError(
            path,
            f"size {image.shape[1]}x{image.shape[0]}x{image.shape[2]} (WxHxC) differs "
            f"from the lake's {shape[1]}x{shape[0]}x{shape[2]}; pass --size HxW to resize",
        )


def _write_images(task: SegmentTask, block: np.ndarray, index: int) -> int:
    """Write ``block`` as chunk ``index`` of the segment's images; returns the bytes stored."""
    info = task.fields["images"]
    return write_chunks(
        task.dest, task.segment_id, "images", block, info, task.chunk_samples, index
    )


def run_segment_task(task: SegmentTask) -> dict[str, Any]:
    """Decode, validate and write one segment; returns its summary (with ``reused`` if it existed)."""
    existing = read_segment_summary(task.dest, task.segment_id)
    if existing is not None and set(existing) >= REUSED_KEYS:
        return {**existing, "segment_id": task.segment_id, "reused": True}
    # absent, incomplete, or a summary without what the commit needs: (re)write the segment
    started = time.perf_counter()
    shape = task.fields["images"].shape
    rows = max(
        1, min(task.chunk_samples, len(task))
    )  # a chunk at most: a segment may hold hundreds
    block = _scratch((rows, *shape))
    labels, paths, rejects, source_bytes = [], [], [], 0
    written = image_bytes = 0  # chunks of images out, and what they stored
    start_segment(task.dest, task.segment_id)
    for i in range(len(task)):
        slot = block[len(labels) - written * task.chunk_samples]
        try:
            image, label, path, nbytes = _read_source(task, i, slot)
            _check_shape(image, shape, path)
        except SourceError as exc:
            shown = display_path(exc.path)  # a name that is not UTF-8 prints as \xff escapes
            if not task.skip_errors:
                if shown == exc.path:
                    raise
                raise SourceError(shown, exc.reason) from exc
            rejects.append([shown, exc.reason])
            continue
        if not np.shares_memory(image, slot):  # the fast JPEG path may have decoded in place
            slot[...] = image
        labels.append(label)
        paths.append(stored_path(path))  # lossless and valid UTF-8 (lakeio.format.paths)
        source_bytes += nbytes
        if len(labels) == (written + 1) * task.chunk_samples:  # a whole chunk: out it goes
            image_bytes += _write_images(task, block, written)
            written += 1
    kept = len(labels)
    if kept > written * task.chunk_samples:  # the last, partial chunk
        image_bytes += _write_images(task, block[: kept - written * task.chunk_samples], written)
    columns = {
        "labels": np.asarray(labels, dtype=np.int64),
        "paths": np.asarray(paths, dtype=object) if paths else np.asarray([], dtype=str),
    }
    counts = np.bincount(columns["labels"], minlength=task.num_classes).tolist()
    summary = {
        "segment_id": task.segment_id,
        "rejects": rejects,
        "class_counts": counts,
        "source_bytes": source_bytes,
        "decoded_bytes": int(kept * block[0].nbytes + columns["labels"].nbytes)
        + sum(len(p.encode()) for p in paths),
        "seconds": round(time.perf_counter() - started, 4),
    }
    stored = write_segment(
        task.dest,
        task.segment_id,
        columns,
        task.fields,
        task.chunk_samples,
        summary,
        streamed={"images": (kept, image_bytes)},
    )
    return {**summary, "samples": kept, "stored_bytes": stored, "reused": False}
