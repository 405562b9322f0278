"""Reads from remote stores retry transient failures under one deadline, then name the object."""

import dask.config
import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from lakeio.errors import ReadError
from lakeio.format.location import Location, with_retries


class FlakyFileSystem(MemoryFileSystem):
    """An in-memory store whose reads fail the first ``failures`` times (a flaky network)."""

    protocol = "flaky"
    failures = 0

    def cat_file(self, path, start=None, end=None, **kwargs):
        if FlakyFileSystem.failures > 0:
            FlakyFileSystem.failures -= 1
            raise ConnectionResetError("connection reset by peer")
        return super().cat_file(path, start=start, end=end, **kwargs)


fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)


def test_transient_failures_are_retried():
    loc = Location.of("flaky://lake-a")
    loc.fs.pipe_file(loc.path("k"), b"payload")
    FlakyFileSystem.failures = 3
    assert loc.read_bytes("k") == b"payload"
    assert FlakyFileSystem.failures == 0


def test_persistent_failure_stops_at_the_deadline_naming_the_object():
    loc = Location.of("flaky://lake-b")
    loc.fs.pipe_file(loc.path("chunk"), b"x")
    FlakyFileSystem.failures = 10_000
    with (
        dask.config.set({"lakeio.read.deadline": 0.3}),
        pytest.raises(ReadError, match=r"flaky://lake-b/chunk: read failed after \d+ attempts"),
    ):
        loc.read_bytes("chunk")
    FlakyFileSystem.failures = 0


def test_missing_objects_are_not_retried():
    loc = Location.of("flaky://lake-c")
    with pytest.raises(FileNotFoundError):
        loc.read_bytes("nothing-here")


def test_programming_errors_are_raised_at_once_not_retried():
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("This class is not fork-safe")

    with dask.config.set({"lakeio.read.deadline": 30}), pytest.raises(RuntimeError, match="fork"):
        with_retries(broken, "s3://bucket/lake/c.0")
    assert len(calls) == 1


def test_a_rerun_clears_temp_files_of_dead_writers_only(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time

    from lakeio.format.location import partial_name, remove_dead_partials

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    ours = partial_name(str(tmp_path / "c.0"))  # this process: alive
    theirs = ours.replace(f".{os.getpid()}@", f".{dead}@")
    exited = subprocess.Popen([sys.executable, "-c", "pass"])  # killed, not yet reaped
    time.sleep(1.0)
    zombie = partial_name(str(tmp_path / "c.2")).replace(f".{os.getpid()}@", f".{exited.pid}@")
    elsewhere = ours.replace(socket.gethostname().replace(".", "_"), "otherhost")
    unknown = str(tmp_path / "c.1.abc.partial")
    for name in (ours, theirs, zombie, elsewhere, unknown):
        open(name, "wb").close()
    assert remove_dead_partials(str(tmp_path)) == 2
    exited.wait()
    assert sorted(os.listdir(tmp_path)) == sorted(
        os.path.basename(n) for n in (ours, elsewhere, unknown)
    )


@pytest.mark.parametrize(
    ("make", "transient"),
    [
        (lambda b: b.EndpointConnectionError(endpoint_url="http://x"), True),
        (lambda b: b.ReadTimeoutError(endpoint_url="http://x"), True),
        (lambda b: b.ClientError({"Error": {"Code": "SlowDown"}}, "GetObject"), True),
        (lambda b: b.NoCredentialsError(), False),
        (lambda b: b.ParamValidationError(report="bad"), False),
        (lambda b: b.ClientError({"Error": {"Code": "AccessDenied"}}, "GetObject"), False),
        (lambda b: ConnectionResetError(104, "reset"), True),
        (lambda b: FileNotFoundError("gone"), False),
        (lambda b: RuntimeError("This class is not fork-safe"), False),
    ],
)
def test_only_network_trouble_and_throttling_are_retried(make, transient):
    import botocore.exceptions

    from lakeio.format.location import is_transient

    assert is_transient(make(botocore.exceptions)) is transient


def test_size_is_the_objects_byte_count_on_a_disk_and_in_a_bucket(tmp_path, s3_options):
    for loc in (Location.of(tmp_path), Location.of("s3://lakeio-test/size", s3_options)):
        loc.write_atomic("a/b.json", b"12345")
        assert loc.size("a/b.json") == 5
        with pytest.raises(FileNotFoundError):
            loc.size("a/missing.json")
