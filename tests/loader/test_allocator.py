"""The opt-in malloc setting: applied once per process on glibc, and only when asked for."""

import os
import platform
import subprocess
import sys

import dask.config

from lakeio.loader.allocator import fix_mmap_threshold

CHILD = """
import dask.config, sys
from lakeio.loader.allocator import fix_mmap_threshold, _applied
print(fix_mmap_threshold())
with dask.config.set({"lakeio.loader.malloc-mmap-threshold": "1MiB"}):
    print(fix_mmap_threshold(), fix_mmap_threshold(), len(_applied))
"""


def test_the_threshold_is_left_alone_unless_asked_for_and_set_once():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    if platform.libc_ver()[0] == "glibc":
        assert out == ["None", "1048576", "1048576", "1"]
    else:  # nothing to tune elsewhere
        assert out == ["None", "None", "None", "0"]


def test_the_environment_wins_over_the_setting():
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "2097152"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert out == ["None", "None", "None", "0"]


def test_off_by_default_in_this_process():
    with dask.config.set({"lakeio.loader.malloc-mmap-threshold": None}):
        assert fix_mmap_threshold() is None
