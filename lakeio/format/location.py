"""Where a lake lives: an fsspec URL plus options, with the few atomic operations lakeio needs.

A `Location` is picklable (it carries the URL and storage options, never an open filesystem),
so the same object travels to Dask workers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, NoReturn

import fsspec
from fsspec.implementations.local import LocalFileSystem

from lakeio.errors import ReadError, WriteError


@dataclass(frozen=True)
class Location:
    """A lake's root: ``url`` (local path or fsspec URL) and the ``storage_options`` to reach it."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, url: str | os.PathLike, storage_options: dict | None = None) -> Location:
        text = os.fspath(url)
        if "://" not in text:
            text = os.path.abspath(text)
        return cls(text.rstrip("/") or "/", dict(storage_options or {}))

    def __reduce__(self):  # drop cached filesystem objects when pickling
        return (Location, (self.url, self.storage_options))

    @property
    def _fs_and_root(self) -> tuple[fsspec.AbstractFileSystem, str]:
        """The filesystem, built once per process: a forked child (a DataLoader worker) must not
        use its parent's, whose event loop and connections stayed behind in the parent."""
        cached = self.__dict__.get("_fs_cache")
        if cached is None or cached[0] != os.getpid():
            fs, root = fsspec.core.url_to_fs(
                self.url, **_bounded_retries(self.url, self.storage_options)
            )
            if "retries" in type(fs).__dict__ and "retries" not in self.storage_options:
                fs.retries = 1  # s3fs's own retry layer (5 by default): lakeio's deadline rules
            cached = (os.getpid(), fs, root.rstrip("/"))
            self.__dict__["_fs_cache"] = cached  # a frozen dataclass: set without __setattr__
        return cached[1], cached[2]

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._fs_and_root[0]

    @property
    def root(self) -> str:
        return self._fs_and_root[1]

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    @property
    def protocol(self) -> str:
        proto = self.fs.protocol
        return proto[0] if isinstance(proto, (tuple, list)) else proto

    def path(self, key: str = "") -> str:
        """The filesystem path of ``key`` (a '/'-separated name relative to the root)."""
        return posixpath.join(self.root, key) if key else self.root

    def describe(self, key: str = "") -> str:
        """A human-readable name for ``key``, for error messages."""
        return posixpath.join(self.url, key) if key else self.url

    def exists(self, key: str) -> bool:
        if self.is_local:
            return self.fs.exists(self.path(key))
        return self._remote(key, lambda: self.fs.exists(self.path(key)))

    def read_bytes(self, key: str) -> bytes:
        """Read a whole object in one request (``start=0`` avoids a separate size lookup)."""
        if self.is_local:
            with open(self.path(key), "rb") as fh:
                return fh.read()
        return self._remote(key, lambda: self.fs.cat_file(self.path(key), start=0))

    def size(self, key: str) -> int:
        """An object's size in bytes (a stat or a HEAD, not a read)."""
        if self.is_local:
            return os.path.getsize(self.path(key))
        return int(self._remote(key, lambda: self.fs.size(self.path(key))))

    def read_prefix(self, key: str, size: int) -> bytes:
        """The first ``size`` bytes of an object (all of it if shorter), in one request."""
        if self.is_local:
            with open(self.path(key), "rb") as fh:
                return fh.read(size)
        return self._remote(key, lambda: self.fs.cat_file(self.path(key), start=0, end=size))

    def write(self, key: str, data: bytes | list) -> int:
        """Write an object whole and durably (temp file, fsync, rename on disk; one PUT elsewhere).

        ``data`` may be a list of buffers, written one after the other (no concatenation). A
        reader sees the old object or the new one, never a torn one; a write that fails (a full
        disk) removes its temp file and raises an `OSError` naming ``key``'s path. Returns the
        bytes written.
        """
        parts = data if isinstance(data, list) else [data]
        if not self.is_local:  # one PUT, all or nothing: repeating it after a fault is safe
            payload = b"".join(bytes(p) for p in parts)
            self._put(key, payload)
            return len(payload)
        path = self.path(key)
        tmp = partial_name(path)
        try:
            fh = open(tmp, "wb")  # noqa: SIM115
        except FileNotFoundError:  # create parents only when missing: mkdir calls add up
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fh = open(tmp, "wb")  # noqa: SIM115
        try:
            with fh:
                written = sum(fh.write(part) for part in parts)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            _discard(tmp)
            _raise_naming(exc, path)
        return written

    def sync_dir(self, key: str) -> None:
        """Make the names created under ``key`` durable (local disks; a no-op on object stores)."""
        if self.is_local and os.path.isdir(self.path(key)):
            fd = os.open(self.path(key), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def list(self, key: str) -> list[str]:
        """Names (not paths) directly under ``key``; empty when it does not exist."""
        self.fs.invalidate_cache(self.path(key))  # listings decide versions: never from a cache
        try:
            if self.is_local:
                entries = self.fs.ls(self.path(key), detail=False)
            else:
                entries = self._remote(key, lambda: self.fs.ls(self.path(key), detail=False))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def write_atomic(self, key: str, data: bytes) -> None:
        """Replace ``key`` with ``data`` so readers see the old or the new object, never a mix."""
        if self.is_local:
            _local_write(self.path(key), data, exclusive=False)
        else:  # an object PUT is atomic on object stores
            self._put(key, data)

    def _put(self, key: str, data: bytes) -> None:
        self._remote(key, lambda: self.fs.pipe_file(self.path(key), data), "write")

    def _remote(self, key: str, call, action: str = "read"):
        """``call()`` (a request about ``key`` to a remote store) under lakeio's one
        deadline-bounded retry (`with_retries`); a refusal (403) names the object."""
        what = self.describe(key)
        try:
            return with_retries(call, what, action)
        except PermissionError as exc:  # a store's 403 says only "Access Denied"
            if what in str(exc):
                raise
            raise PermissionError(
                errno.EACCES, f"access denied by the store ({exc})", what
            ) from exc

    def create_exclusive(self, key: str, data: bytes) -> None:
        """Create ``key`` only if absent (durably); raise `FileExistsError` if another writer won."""
        if self.is_local:
            _local_write(self.path(key), data, exclusive=True)
            return
        path = self.path(key)
        if self.protocol in ("s3", "s3a"):
            _require_exclusive_s3fs()

        def put_if_absent() -> None:
            try:  # conditional PUT (If-None-Match) where the filesystem supports it, e.g. s3fs
                self.fs.pipe_file(path, data, mode="create")
            except OSError as exc:  # some stores report a failed precondition as a generic error
                if not isinstance(exc, FileExistsError) and (
                    "PreconditionFailed" in str(exc) or "412" in str(exc)
                ):
                    raise FileExistsError(path) from exc
                raise

        try:
            self._remote(key, put_if_absent, "write")
            return
        except TypeError:
            pass
        except WriteError as exc:  # no answer till the deadline: what is there now decides
            try:
                there = self._stored(key)
            except Exception:
                raise exc from None
            if there == data:  # one of the attempts landed
                return
            if there is not None:  # a rival's
                raise FileExistsError(path) from exc
            raise
        except FileExistsError:
            # A retried PUT (lakeio's, or botocore's own, unseen here) may find the object an
            # earlier attempt created whose answer was lost: this writer's, not a rival's.
            if self._stored(key) == data:
                return
            raise
        if self.exists(key):  # best effort on stores without conditional writes
            raise FileExistsError(path)
        self._put(key, data)

    def _stored(self, key: str) -> bytes | None:
        """The object at ``key`` now, or None."""
        try:
            return self.read_bytes(key)
        except FileNotFoundError:
            return None

    def zarr_store(self, key: str = ""):
        """A zarr store rooted at ``key``: `LocalStore` on disk, `FsspecStore` elsewhere."""
        import zarr.storage

        if self.is_local:
            return zarr.storage.LocalStore(self.path(key))
        url = posixpath.join(self.url, key) if key else self.url
        return zarr.storage.FsspecStore.from_url(url, storage_options=self.storage_options or None)


S3FS_EXCLUSIVE = (2024, 12)  # the first s3fs whose pipe_file(mode="create") is a conditional PUT


def _require_exclusive_s3fs() -> None:
    """Refuse s3fs releases that drop ``mode="create"`` silently (2024.6-2024.11): with them two
    concurrent commits would both "win" and one would be lost."""
    import s3fs

    from lakeio.errors import LakeError

    try:
        release = tuple(int(p) for p in s3fs.__version__.split(".")[:2])
    except ValueError:  # a development build: trust it
        return
    if release < S3FS_EXCLUSIVE:
        raise LakeError(
            f"s3fs {s3fs.__version__} cannot create an object exclusively, so concurrent commits "
            "could overwrite each other; upgrade it: pip install 's3fs>=2024.12'"
        )


def _local_write(path: str, data: bytes, *, exclusive: bool) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = partial_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)  # fails with FileExistsError if another writer got there first
        else:
            os.replace(tmp, path)
    except OSError as exc:
        _raise_naming(exc, path)
    finally:
        _discard(tmp)  # a half-written temp file (disk full) or the link's source
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)  # make the rename itself durable
    finally:
        os.close(fd)


PARTIAL_SUFFIX = ".partial"


def partial_name(path: str) -> str:
    """The temporary name a local write goes through: it says which process wrote it
    (``<path>.<uuid>.<pid>@<host>.partial``), so a rerun can tell a dead writer's debris from a
    live one's file in flight."""
    return f"{path}.{uuid.uuid4().hex}.{os.getpid()}@{_host()}{PARTIAL_SUFFIX}"


def _host() -> str:
    return socket.gethostname().replace(".", "_")  # no dots: the name splits on them


def remove_dead_partials(folder: str) -> int:
    """Delete the temporary files under ``folder`` left by writers of this host that are no
    longer running (a ``kill -9`` mid-write); returns how many. Files of live writers, of
    other hosts, and of unknown form are left alone."""
    removed = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            if name.endswith(PARTIAL_SUFFIX) and _writer_gone(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(root, name))
                    removed += 1
    return removed


def _writer_gone(name: str) -> bool:
    writer = name[: -len(PARTIAL_SUFFIX)].rsplit(".", 1)[-1]
    pid, _, host = writer.partition("@")
    if not pid.isdigit() or host != _host():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return _zombie(int(pid))  # killed, not yet reaped: gone all the same


def _zombie(pid: int) -> bool:
    """Whether ``pid`` is a process that has exited but not been reaped (Linux's /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def is_storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the destination has no room left (no space, no inodes, over quota)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _discard(tmp: str) -> None:
    """Remove a temp file if it is there: one left by a failed write would hold the space a
    full disk needs, and be debris for every later reader of the folder."""
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _raise_naming(exc: BaseException, path: str) -> NoReturn:
    """Re-raise ``exc``, naming ``path`` if it names no file: a write that fails on a full disk
    says only "[Errno 28] No space left on device", which leaves the reader guessing where."""
    if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
        try:
            named = type(exc)(exc.errno, exc.strerror, path)
        except TypeError:  # a subclass with its own constructor: keep it as it is
            raise exc from None
        raise named from exc
    raise exc


def _bounded_retries(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """s3fs and botocore retry on top of each other (5 x 5 x 5): keep theirs small, lakeio's own
    deadline-bounded retry (`with_retries`) decides; and allow as many connections as lakeio
    keeps requests in flight. Options the user gave are left alone."""
    if not url.startswith(("s3://", "s3a://")):
        return options
    options = dict(options)
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("retries", {"mode": "standard", "total_max_attempts": 2})
    # botocore's pool holds 10 connections: fewer requests in flight than the loader keeps
    # (lakeio.read.max-in-flight chunks, each field its own request)
    config.setdefault("max_pool_connections", 128)
    options["config_kwargs"] = config
    return options


def with_retries(call, what: str, action: str = "read"):
    """Call ``call`` until it succeeds, retrying transient errors with backoff and jitter under
    one deadline (``lakeio.<action>.deadline`` seconds in dask.config, default 60); then one
    error naming ``what``: `ReadError`, or `WriteError` for ``action="write"``. Only calls that
    may be repeated belong here: reads, and whole-object PUTs (all or nothing on a store)."""
    import dask.config

    deadline = time.monotonic() + float(dask.config.get(f"lakeio.{action}.deadline", 60))
    delay, attempts = 0.05, 0
    while True:
        attempts += 1
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            wait = delay * random.uniform(0.5, 1.5)  # many readers must not retry in lockstep
            if time.monotonic() + wait > deadline:
                error = WriteError if action == "write" else ReadError
                raise error(f"{what}: {action} failed after {attempts} attempts: {exc!r}") from exc
            time.sleep(wait)
            delay = min(delay * 2, 2.0)


_PERMANENT = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError)
_PERMANENT += (NotADirectoryError,)
# What s3fs makes of a request the store refuses for good (InvalidRequest/InvalidArgument,
# NotImplemented, KeyTooLong, EntityTooLarge, PermanentRedirect: a wrong region): retrying
# would only hide the cause behind "failed after N attempts".
_PERMANENT_ERRNOS = {errno.EINVAL, errno.ENOSYS, errno.ENAMETOOLONG, errno.EMSGSIZE, errno.EPERM}
_PERMANENT_ERRNOS |= {errno.EREMCHG, errno.EFBIG, errno.EROFS}
# Packages whose own exception types (not subclasses of OSError) report network trouble.
_NETWORK_PACKAGES = ("aiohttp", "urllib3", "requests", "http")
# botocore also reports settings (no credentials, a bad parameter): only these are the network.
_BOTOCORE_NETWORK = {"ConnectionError", "HTTPClientError", "ResponseStreamingError"}
_BOTOCORE_NETWORK |= {"IncompleteReadError", "ReadTimeoutError", "ConnectTimeoutError"}
_BOTOCORE_NETWORK |= {"FlexibleChecksumError"}  # a body changed on the way: read it again
_RETRY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"}
_RETRY_CODES |= {"InternalError", "ServiceUnavailable", "500", "502", "503", "504"}


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` may help: network and I/O errors and throttling, not a missing
    object, a denied one, missing credentials or a programming error (a retry loop must never
    hide a bug, e.g. a filesystem used across a fork raising ``RuntimeError``)."""
    if isinstance(exc, _PERMANENT) or is_storage_full(exc):  # a full store stays full
        return False
    if isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNOS:
        return False
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    top = {(cls.__module__ or "").split(".")[0] for cls in type(exc).__mro__}
    if top & {"botocore", "aiobotocore"}:
        response = getattr(exc, "response", None) or {}  # None on connection errors
        code = str((response.get("Error") or {}).get("Code", ""))
        return bool(names & _BOTOCORE_NETWORK) or code in _RETRY_CODES
    return bool(top & set(_NETWORK_PACKAGES))
