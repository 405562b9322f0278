"""The ingest summary users read at the end, and the JSON-lines report of what was left out."""

from __future__ import annotations

import json
from dataclasses import dataclass

from lakeio.errors import IngestError
from lakeio.format.location import Location
from lakeio.format.manifest import META_DIR
from lakeio.format.paths import display_path, source_path
from lakeio.sizes import human_bytes


@dataclass(frozen=True)
class IngestSummary:
    """The figures that matter after an ingest."""

    dest: str
    version: int
    written: int
    rejected: int
    ignored: int
    segments: int
    reused_segments: int
    source_bytes: int
    decoded_bytes: int
    stored_bytes: int
    seconds: float
    lake_samples: int
    report: str | None
    up_to_date: bool = False

    @property
    def ratio(self) -> float:
        """Compression ratio: uncompressed (decoded) bytes / stored bytes."""
        return self.decoded_bytes / self.stored_bytes if self.stored_bytes else 0.0

    @property
    def images_per_second(self) -> float:
        """Source images handled (written or rejected) per second of the whole run."""
        return (self.written + self.rejected) / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """The summary as printed lines; names that are not UTF-8 show as ``\\xff`` escapes."""
        dest = display_path(self.dest)
        if self.up_to_date:
            return [
                f"{dest}: already up to date (version {self.version}, "
                f"{self.lake_samples} samples); nothing was changed."
            ]
        resumed = (
            f" ({self.reused_segments} of {self.segments} segments resumed from an earlier run)"
            if self.reused_segments
            else ""
        )
        return [
            f"committed {dest} version {self.version}: {self.lake_samples} samples in the lake",
            f"  images written   {self.written}{resumed}",
            f"  images rejected  {self.rejected}"
            + (f"  (report: {display_path(self.report)})" if self.report else ""),
            f"  files ignored    {self.ignored}",
            f"  bytes in         {human_bytes(self.source_bytes)}",
            f"  bytes decoded    {human_bytes(self.decoded_bytes)}",
            f"  bytes stored     {human_bytes(self.stored_bytes)}",
            f"  compression      {self.ratio:.2f}x (decoded / stored)",
            f"  throughput       {self.images_per_second:,.0f} images/s in {self.seconds:.1f} s",
        ]


def report_lines(rejects: list[dict], ignored, empty_classes) -> list[str]:
    """JSON lines of what was left out; ``path`` is for people (``\\xff`` escapes for bytes that
    are not UTF-8), so every line is valid UTF-8 and valid JSON."""
    rows = [_row({"kind": "rejected", **r}) for r in rejects]
    rows += [_row({"kind": "ignored", "path": p, "reason": why}) for p, why in ignored]
    rows += [
        _row(
            {"kind": "empty-class", "path": source_path(c), "reason": "class folder has no images"}
        )
        for c in empty_classes
    ]
    return rows


def _row(row: dict) -> str:
    return json.dumps({**row, "path": display_path(row["path"])}, ensure_ascii=False)


def write_report(dest: Location, version: int, rows: list[str]) -> str | None:
    """Store the report next to the manifest of ``version``; returns where (None if empty)."""
    if not rows:
        return None
    key = f"{META_DIR}/reports/ingest-v{version:08d}.jsonl"
    dest.write_atomic(key, _payload(rows))
    return dest.describe(key)


def write_extra_report(where: Location, rows: list[str]) -> None:
    """Write the report where ``--report`` asked (with the ingest's storage options), even
    when empty, so a script reading it finds the file."""
    try:
        where.write_atomic("", _payload(rows))
    except Exception as exc:  # credentials, network, permissions: the cause is in the message
        raise IngestError(
            f"--report {where.describe()}: cannot write the report ({type(exc).__name__}: "
            f"{exc}); nothing was committed, the lake is unchanged"
        ) from exc


def _payload(rows: list[str]) -> bytes:
    return "".join(row + "\n" for row in rows).encode()
