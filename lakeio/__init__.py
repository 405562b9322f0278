"""lakeio: a Dask-powered data lake for image training data (Zarr v3 storage, PyTorch streaming)."""

from lakeio.cache.config import Cache
from lakeio.dataset import Dataset, open_dataset
from lakeio.errors import (
    ChunkError,
    ChunkUnavailableError,
    CodecError,
    CorruptChunkError,
    FormatError,
    IngestError,
    LakeError,
    LakeNotFoundError,
    LakeWarning,
    ReadError,
    SourceError,
    WriteError,
)
from lakeio.ingest import IngestOptions, IngestSummary, ingest
from lakeio.upgrade import upgrade

__version__ = "0.1.0"

__all__ = [
    "Cache",
    "ChunkError",
    "ChunkUnavailableError",
    "CodecError",
    "CorruptChunkError",
    "Dataset",
    "FormatError",
    "IngestError",
    "IngestOptions",
    "IngestSummary",
    "LakeError",
    "LakeNotFoundError",
    "LakeWarning",
    "ReadError",
    "SourceError",
    "WriteError",
    "__version__",
    "ingest",
    "open_dataset",
    "upgrade",
]
