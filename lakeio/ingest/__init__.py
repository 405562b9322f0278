"""Ingest: image folders, array files and in-memory arrays into a lake, on a Dask cluster."""

from lakeio.ingest.options import IngestOptions
from lakeio.ingest.report import IngestSummary
from lakeio.ingest.run import ingest

__all__ = ["IngestOptions", "IngestSummary", "ingest"]
