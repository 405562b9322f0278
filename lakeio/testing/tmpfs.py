"""A real, small tmpfs for a trial: mounted in a private mount namespace, filled on purpose.

Used by `lakeio.testing.full_disk` (the disk tier) and `lakeio.testing.full_disk_ingest` (an
append): the trial itself runs as ``python -m lakeio.testing.full_disk`` in the namespace.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

FILLER = "filler"


def private_tmpfs(mountpoint: str, options: str, argv: list[str]) -> list[str]:
    """``argv`` as a command run in a private mount namespace with a tmpfs (mount ``options``
    such as ``size=4m``) at ``mountpoint``, seen by that command and its children only."""
    if os.geteuid() == 0:
        namespace = ["unshare", "--mount", "--propagation", "private"]
    else:  # a user namespace lets an ordinary user mount a tmpfs of their own
        namespace = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]
    script = 'mount -t tmpfs -o "$1" tmpfs "$2" && shift 2 && exec "$@"'
    return [*namespace, "sh", "-c", script, "sh", options, mountpoint, *argv]


def fill(mountpoint: str, leave: int = 0) -> int:
    """Grow the filler file until only ``leave`` bytes of the filesystem are free; its size."""
    info = os.statvfs(mountpoint)
    todo = max(0, info.f_bavail * info.f_frsize - leave)
    block = b"\xa5" * (1 << 20)  # real pages: a sparse file would take no space on tmpfs
    path = os.path.join(mountpoint, FILLER)
    with open(path, "ab") as fh:
        try:
            while todo > 0:
                todo -= fh.write(block[: min(todo, len(block))])
                fh.flush()
        except OSError as exc:  # full before the count says so (metadata takes space too)
            if exc.errno != errno.ENOSPC:
                raise
    return os.path.getsize(path)


def unfill(mountpoint: str) -> None:
    """Free the space the filler took ("the operator cleaned up")."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(mountpoint, FILLER))


def spawn_on_tmpfs(
    mountpoint: Path, options: str, args: list[str], timeout: float
) -> dict[str, Any]:
    """Run ``python -m lakeio.testing.full_disk ARGS --out FILE`` on a fresh tmpfs; its report."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    out = mountpoint.with_suffix(".json")
    out.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "lakeio.testing.full_disk", *args, "--out", str(out)]
    try:
        proc = subprocess.run(
            private_tmpfs(str(mountpoint), options, argv),
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"errors": [f"the trial took more than {timeout} s"]}
    if proc.returncode != 0 or not out.exists():
        return {"errors": [f"exit status {proc.returncode}: {proc.stderr[-3000:]}"]}
    return json.loads(out.read_text())
