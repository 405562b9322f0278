"""`lakeio info`: what a lake holds, from its manifest alone (no chunk is read)."""

from __future__ import annotations

from typing import Any

from lakeio.dataset import Dataset
from lakeio.format.paths import display_path, source_path
from lakeio.sizes import human_bytes


def lake_info(ds: Dataset) -> dict[str, Any]:
    """A JSON-ready description: fields, chunking, codec, classes with counts, sizes, ratio."""
    m = ds.manifest
    known = m.lake_class_counts()  # () where the lake does not know them
    counts = list(known) if known else [None] * len(m.classes)
    decoded = sum(s.decoded_bytes for s in m.segments)
    stored = sum(s.stored_bytes for s in m.segments)
    return {
        "url": ds.loc.describe(),
        "version": m.version,
        "format_version": m.format_version,
        "created": m.created,
        "samples": m.samples,
        "segments": len(m.segments),
        "chunk_samples": m.chunk_samples,
        "fields": {
            name: {
                "dtype": f.dtype,
                "shape": [m.samples, *f.shape],
                "chunks": [m.chunk_samples, *f.shape],
                "codec": f.codec,
            }
            for name, f in m.fields.items()
        },
        "classes": dict(zip(m.classes, counts, strict=True)),
        "decoded_bytes": decoded,
        "stored_bytes": stored,
        "ratio": round(decoded / stored, 4) if stored else None,
        "history": [{k: e.get(k) for k in ("op", "mode", "source", "time")} for e in m.history],
        "stats": m.stats.get("images") if m.stats else None,
    }


def format_info(info: dict[str, Any]) -> str:
    lines = [
        f"lake      {info['url']}  (version {info['version']}, {info['created']}, "
        f"format {info['format_version']})",
        f"samples   {info['samples']} in {info['segments']} segment{'s' if info['segments'] != 1 else ''}, "
        f"{info['chunk_samples']} samples per chunk",
        "fields",
    ]
    for name, f in info["fields"].items():
        lines.append(
            f"  {name:<8} {f['dtype']:<6} shape {tuple(f['shape'])}  chunks {tuple(f['chunks'])}  "
            f"codec {f['codec']}"
        )
    lines.append(f"classes   {len(info['classes'])}")
    for name, count in info["classes"].items():
        shown = "unknown" if count is None else count
        lines.append(f"  {display_path(source_path(name)):<20} {shown}")  # no NUL on a terminal
    ratio = f"{info['ratio']:.2f}x" if info["ratio"] else "n/a"
    lines.append(
        f"bytes     {human_bytes(info['stored_bytes'])} stored, "
        f"{human_bytes(info['decoded_bytes'])} uncompressed; ratio {ratio}"
    )
    stats = info.get("stats")
    if stats:
        mean = ", ".join(f"{v:.2f}" for v in stats["mean"])
        std = ", ".join(f"{v:.2f}" for v in stats["std"])
        lines.append(f"stats     mean {mean}  std {std}  (0..255, from `lakeio stats`)")
    else:
        lines.append('stats     none (run `lakeio stats` for normalize="lake")')
    return "\n".join(lines)
