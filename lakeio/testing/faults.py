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
    on: str = "read"


@dataclass
class FaultLedger:
    """Armed faults and counts of what was injected, shared by every `FaultyFileSystem`."""

    injected: int = 0
    _faults: list[_Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(
        self,
        pattern: str,
        times: int,
        error: Callable[[str], Exception] = connection_reset,
        on: str = "read",
    ) -> None:
        """Fail the next ``times`` reads (or writes, ``on="write"``) of paths containing
        ``pattern``."""
        with self._lock:
            self._faults.append(_Fault(pattern, times, error, on))

    def clear(self) -> None:
        """Disarm every fault ("the network is back"); the count of injected ones stays."""
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.injected = 0

    def check(self, path: str, on: str = "read") -> None:
        """Raise the armed error for a read (or write) of ``path``, if any is left."""
        with self._lock:
            for fault in self._faults:
                if fault.on == on and fault.pattern in path and fault.remaining > 0:
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
        FAULTS.check(path, "read" if "r" in mode else "write")
        if "r" not in mode:
            self._local.makedirs(self._local._parent(path), exist_ok=True)
        return self._local._open(path, mode, **kwargs)

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        path = self._strip_protocol(path)
        FAULTS.check(path, "write")
        if mode == "create" and self._local.exists(path):
            raise FileExistsError(path)
        self._local.makedirs(self._local._parent(path), exist_ok=True)
        self._local.pipe_file(path, value)

    def rm_file(self, path):
        self._local.rm_file(self._strip_protocol(path))

    def mkdir(self, path, create_parents=True, **kwargs):
        self._local.mkdir(self._strip_protocol(path), create_parents=create_parents)

    def makedirs(self, path, exist_ok=False):
        self._local.makedirs(self._strip_protocol(path), exist_ok=exist_ok)


register_implementation(FaultyFileSystem.protocol, FaultyFileSystem, clobber=True)


def run_source_fault_trials(folder, workdir, trials: int, seed: int = 0):
    """Ingest ``folder`` through ``faulty://`` with seeded read faults, ``trials`` times.

    Each trial arms a few random files: some fail fewer times than the read deadline absorbs
    (the ingest must retry them), one stays down (the ingest must stop naming it and commit
    nothing); then "the network comes back" and a rerun must commit every image. Returns a
    `Tally` (injected: faults raised; detected: outages named by the failed run; recovered:
    trials whose final lake holds every image; lost: images missing or rejected)."""
    import random
    from pathlib import Path

    import dask.config
    from distributed import Client
    from PIL import Image

    import lakeio
    from lakeio.errors import IngestError
    from lakeio.testing.tally import Tally

    folder, workdir = Path(folder), Path(workdir)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.*") if p.is_file())
    with Image.open(folder / files[0]) as first:  # size and channels given: no header probe,
        options = {"size": first.size[::-1], "channels": 3}  # so faults hit the segment tasks
    rng, tally = random.Random(seed), Tally("transient source faults during ingest")
    with Client(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=50
    ) as c:  # the failed tasks are the point: no log per retry
        for trial in range(trials):
            FAULTS.reset()
            picked = rng.sample(files, 4)
            for path in picked[:3]:
                FAULTS.arm(path, times=rng.randint(1, 3))  # absorbed by the retries
            FAULTS.arm(picked[3], times=10**9)  # down until cleared
            dest, named = workdir / f"faults-{trial}", False
            with dask.config.set({"lakeio.read.deadline": 0.5}):
                try:
                    lakeio.ingest(f"faulty://{folder}", dest, cluster=c, on_error="skip",
                                  progress=False, echo=None, **options)  # fmt: skip
                except IngestError as exc:
                    named = str(exc).startswith(picked[3])
                FAULTS.clear()
                summary = lakeio.ingest(f"faulty://{folder}", dest, cluster=c, on_error="skip",
                                        progress=False, echo=None, **options)  # fmt: skip
            paths = set(lakeio.open_dataset(dest).to_dask()["paths"].compute().tolist())
            missing = len(set(files) - paths) + summary.rejected
            tally = tally.add(Tally(tally.case, trials=1, injected=FAULTS.injected,
                                    detected=int(named), recovered=int(not missing),
                                    lost=missing))  # fmt: skip
    FAULTS.reset()
    return tally
