"""Deciding a lake's layout before anything is written: size, channels, codec, chunking, fields.

Without ``--size`` the images must share one size; the probe reads only headers (on the
cluster) and stops the run before a single chunk is written if they do not.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from distributed import Client

from lakeio.errors import IngestError, SourceError
from lakeio.format.codecs import DEFAULT_CODEC, parse_codec
from lakeio.format.location import Location
from lakeio.format.manifest import FORMAT_VERSION, FieldInfo, Manifest
from lakeio.format.segment import default_chunk_samples
from lakeio.ingest.decode import DecodeOptions, probe_header
from lakeio.ingest.options import IngestOptions
from lakeio.ingest.sources import ArraySource, FolderScan

PROBE_BATCH = 512
HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Layout:
    """What every segment of this ingest will look like."""

    fields: dict[str, FieldInfo]
    classes: tuple[str, ...]
    chunk_samples: int
    decode: DecodeOptions
    format_version: int = FORMAT_VERSION

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.fields["images"].shape  # type: ignore[return-value]


def _probe_one(src: Location, path: str, opts: DecodeOptions) -> tuple[int, int, bool] | None:
    """(height, width, grayscale) from the file's first bytes (all of it only if Pillow needs more)."""
    try:
        head = probe_header(src.read_prefix(path, HEADER_BYTES), path, opts)
    except SourceError:
        try:
            head = probe_header(src.read_bytes(path), path, opts)
        except (SourceError, OSError):
            return None  # the decode pass rejects it again, with its reason
    except OSError:
        return None
    return head.height, head.width, head.grayscale


def _probe_batch(src: Location, paths: list[str], opts: DecodeOptions) -> np.ndarray:
    """(height, width, grayscale) rows, -1 where unreadable: one array ships far faster than tuples."""
    out = np.full((len(paths), 3), -1, dtype=np.int64)
    for i, path in enumerate(paths):
        fact = _probe_one(src, path, opts)
        if fact is not None:
            out[i] = fact
    return out


def probe_folder(client: Client, src: Location, scan: FolderScan, opts: DecodeOptions) -> list:
    """Header facts for every file, probed in parallel on the cluster (None where unreadable)."""
    paths = [f.path for f in scan.files]
    listing = "\n".join(f"{f.path}\0{f.size}\0{f.stamp}" for f in scan.files)
    # surrogateescape: file names need not be UTF-8
    text = f"{src.describe()}\n{listing}".encode("utf-8", "surrogateescape")
    tag = hashlib.blake2b(text, digest_size=8).hexdigest()
    workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
    batch = max(PROBE_BATCH, math.ceil(len(paths) / (2 * workers)))  # ~10 µs a file: few tasks
    futures = [
        client.submit(
            _probe_batch, src, paths[i : i + batch], opts, key=f"lakeio-ingest-probe-{tag}-{i}"
        )
        for i in range(0, len(paths), batch)
    ]
    facts = np.concatenate(client.gather(futures)) if futures else np.empty((0, 3), np.int64)
    return [None if h < 0 else (int(h), int(w), bool(g)) for h, w, g in facts.tolist()]


def _shared_size(sizes: Counter, where: str) -> tuple[int, int]:
    if len(sizes) == 1:
        return next(iter(sizes))
    listed = ", ".join(
        f"{w}x{h} ({n} image{'s' if n != 1 else ''})" for (h, w), n in sizes.most_common(8)
    )
    more = f", and {len(sizes) - 8} more sizes" if len(sizes) > 8 else ""
    raise IngestError(
        f"{where}: images differ in size (WxH): {listed}{more}; nothing was written. "
        "Pass --size HxW (with --resize center-crop|pad|stretch) to give them one size."
    )


def _array_facts(source: ArraySource) -> tuple[Counter, bool]:
    if isinstance(source.images, np.ndarray):
        shape = source.images.shape
        gray = source.images.ndim == 3 or (source.images.ndim == 4 and shape[-1] == 1)
        return Counter({(shape[1], shape[2]): len(source)}), gray
    sizes = Counter((np.shape(im)[0], np.shape(im)[1]) for im in source.images)
    gray = all(np.ndim(im) == 2 or np.shape(im)[-1] == 1 for im in source.images)
    return sizes, gray


def decide_layout(
    client: Client,
    source: FolderScan | ArraySource,
    src: Location | None,
    opts: IngestOptions,
    base: Manifest | None,
) -> Layout:
    """Fix size, channels, codec and chunking from options, the lake appended to, or the sources."""
    size, channels = opts.size, opts.channels
    if base is not None and "images" in base.fields:
        lake_h, lake_w, lake_c = base.fields["images"].shape
        size, channels = size or (lake_h, lake_w), channels or lake_c
    if size is None or channels is None:
        if isinstance(source, FolderScan):
            probe_opts = opts.decode_options(None, 3)
            facts = [f for f in probe_folder(client, src, source, probe_opts) if f is not None]
            sizes = Counter((h, w) for h, w, _ in facts)
            gray = bool(facts) and all(g for _, _, g in facts)
        else:
            sizes, gray = _array_facts(source)
        if size is None:
            if not sizes:
                raise IngestError(f"{_where(source, src)}: no readable image to take a size from")
            size = _shared_size(sizes, _where(source, src))
        channels = channels or (1 if gray else 3)
    codec = _decide_codec(opts, base)
    shape = (size[0], size[1], channels)
    if base is not None and opts.chunk_samples not in (None, base.chunk_samples):
        raise IngestError(
            f"cannot append with --chunk-samples {opts.chunk_samples}: the lake's chunks hold "
            f"{base.chunk_samples} samples (omit the option to use the lake's)"
        )
    chunk_samples = opts.chunk_samples or (base.chunk_samples if base else None)
    chunk_samples = chunk_samples or default_chunk_samples(int(np.prod(shape)))
    fields = {
        "images": FieldInfo("uint8", shape, codec),
        "labels": FieldInfo("int64", (), codec),
        "paths": FieldInfo("str", (), codec),
    }
    if base is not None and base.fields and base.fields != fields:
        raise IngestError(
            f"cannot append: the lake's fields are {_describe(base.fields)}, "
            f"this ingest would write {_describe(fields)}"
        )
    return Layout(fields, source.classes, chunk_samples, opts.decode_options(size, channels))


def _decide_codec(opts: IngestOptions, base: Manifest | None) -> str:
    lake_codec = base.fields["images"].codec if base is not None and base.fields else None
    codec = str(parse_codec(opts.codec or lake_codec or DEFAULT_CODEC))
    if lake_codec is not None and codec != lake_codec:
        raise IngestError(f"cannot append with codec {codec}: the lake uses {lake_codec}")
    return codec


def _describe(fields: dict[str, FieldInfo]) -> str:
    return ", ".join(f"{k} {v.dtype}{list(v.shape)} {v.codec}" for k, v in fields.items())


def _where(source: FolderScan | ArraySource, src: Location | None) -> str:
    return src.describe() if src is not None else getattr(source, "name", "source")
