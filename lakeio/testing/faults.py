"""Counted faults for reliability tests: a `faulty://` filesystem over local files.

`FaultyFileSystem` is a real fsspec filesystem (listing, info and reads go to the local disk)
whose reads fail on demand: `FAULTS.arm("cls/003.jpg", times=2)` makes the next two reads of
any path containing that text raise a network-like error. Every injected fault is counted, so
a test can say how many it survived. The ledger is per process: use it with an in-process
(threaded) Dask cluster or in the test's own process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from fsspec.implementations.local import LocalFileSystem
from fsspec.registry import register_implementation
from fsspec.spec import AbstractFileSystem


def connection_reset(path: str) -> Exception:
    """What a dropped connection looks like to a reader (an `OSError`)."""
    return ConnectionResetError(104, f"connection reset while reading {path} (injected)")


@dataclass
class _Fault:
    pattern: str
    remaining: int
    error: Callable[[str], Exception]


@dataclass
class FaultLedger:
    """Armed faults and counts of what was injected, shared by every `FaultyFileSystem`."""

    injected: int = 0
    _faults: list[_Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(
        self, pattern: str, times: int, error: Callable[[str], Exception] = connection_reset
    ) -> None:
        """Fail the next ``times`` reads of paths containing ``pattern``."""
        with self._lock:
            self._faults.append(_Fault(pattern, times, error))

    def clear(self) -> None:
        """Disarm every fault ("the network is back"); the count of injected ones stays."""
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.injected = 0

    def check(self, path: str) -> None:
        """Raise the armed error for ``path``, if any is left."""
        with self._lock:
            for fault in self._faults:
                if fault.pattern in path and fault.remaining > 0:
                    fault.remaining -= 1
                    self.injected += 1
                    raise fault.error(path)


FAULTS = FaultLedger()


class FaultyFileSystem(AbstractFileSystem):
    """Local files under ``faulty://``; reads consult `FAULTS` first."""

    protocol = "faulty"
    root_marker = "/"
    cachable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._local = LocalFileSystem()

    def ls(self, path, detail=True, **kwargs):
        return self._local.ls(self._strip_protocol(path), detail=detail)

    def info(self, path, **kwargs):
        return self._local.info(self._strip_protocol(path))

    def cat_file(self, path, start=None, end=None, **kwargs):
        path = self._strip_protocol(path)
        FAULTS.check(path)
        return self._local.cat_file(path, start=start, end=end)

    def _open(self, path, mode="rb", **kwargs):
        path = self._strip_protocol(path)
        if "r" in mode:
            FAULTS.check(path)
        return self._local._open(path, mode, **kwargs)


register_implementation(FaultyFileSystem.protocol, FaultyFileSystem, clobber=True)
