"""lakeio's errors: one root, each also the builtin a caller would naturally catch."""

from __future__ import annotations


def clipped(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters for a message: a bad value may be megabytes long,
    and the message must name it without copying it."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LakeError(Exception):
    """Root of every error lakeio raises on purpose; the CLI prints these as one line."""


class LakeWarning(UserWarning):
    """Something went wrong that lost nothing (e.g. a convenience copy not written)."""


class CodecError(LakeError, ValueError):
    """A codec spec string that does not name a known codec, or has bad parameters."""


class FormatError(LakeError, ValueError):
    """A lake whose metadata is missing, malformed, or from an unsupported format version."""


class LakeNotFoundError(FormatError, FileNotFoundError):
    """No lake (no committed manifest) at the given location."""


class ChunkError(LakeError, OSError):
    """A chunk that cannot be served; names the chunk key and, where known, the lake and the
    Dask worker that tried (on the cluster path, where one worker's view of the store, e.g. its
    credentials, may differ from the others')."""

    kind = "chunk"

    def __init__(self, key: str, reason: str, lake: str = "", worker: str = "") -> None:
        where = f" of lake {lake}" if lake else ""
        by = f" (read by worker {worker})" if worker else ""
        super().__init__(f"{self.kind} {key}{where}{by}: {reason}")
        self.key = key
        self.reason = reason
        self.lake = lake
        self.worker = worker

    def of_lake(self, lake: str) -> ChunkError:
        """The same error naming the lake too (raised where the chunk's lake is known)."""
        return self if self.lake else type(self)(self.key, self.reason, lake, self.worker)

    def on_worker(self, worker: str) -> ChunkError:
        """The same error naming the worker that met it."""
        return type(self)(self.key, self.reason, self.lake, worker)

    def __reduce__(self):  # keep its fields across process boundaries (Dask workers)
        return (type(self), (self.key, self.reason, self.lake, self.worker))


class CorruptChunkError(ChunkError):
    """A stored chunk that fails its checksum or does not decode to its shape."""

    kind = "corrupt chunk"


class ChunkUnavailableError(ChunkError):
    """A chunk the store will not give: missing from it (404) or access denied (403). Permanent,
    so never retried: the training loop gets it at once."""

    kind = "unavailable chunk"


class ReadError(LakeError, OSError):
    """A read from the store that kept failing until lakeio's deadline; names the object."""


class WriteError(LakeError, OSError):
    """A write to the store that kept failing until lakeio's deadline; names the object."""


class IngestError(LakeError, RuntimeError):
    """An ingest that cannot start or must stop; the message names the file and the cause."""


class SourceFileError(IngestError):
    """A problem with one source file; ``path`` and ``reason`` survive Dask's pickling."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # keep (path, reason) across process boundaries (Dask workers)
        return (type(self), (self.path, self.reason))


class SourceError(SourceFileError):
    """One source image that cannot be ingested (a reject when --on-error skip)."""


class SourceReadError(SourceFileError):
    """A source file that could not be read (network, permissions, a vanished file): the task
    fails, so the file is never mistaken for a bad image and a rerun reads it again."""


class CommitConflictError(LakeError, RuntimeError):
    """Another writer committed a manifest version first; re-read and retry."""
