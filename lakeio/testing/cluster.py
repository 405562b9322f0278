"""A real multi-process Dask cluster on 127.0.0.1: `dask scheduler` plus `dask worker` processes,
over plain TCP or over TLS with a certificate made on the spot (`self_signed_tls`)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a TLS cluster: the CA to trust, and the certificate and key to present.

    One self-signed certificate may be all three (`self_signed_tls`): every scheduler, worker
    and client then trusts exactly the holders of that key.
    """

    ca_file: str
    cert: str
    key: str

    def security(self) -> Any:
        """A `distributed.Security` for a client of the cluster, encryption required."""
        from distributed import Security

        return Security(
            tls_ca_file=self.ca_file,
            tls_client_cert=self.cert,
            tls_client_key=self.key,
            require_encryption=True,
        )

    def dask_config(self) -> dict[str, Any]:
        """The same as dask config (``dask.config.set(...)``): then a plain ``Client("tls://…")``,
        and so ``cluster="tls://…"`` in lakeio, connects with it."""
        return {
            "distributed.comm.tls.ca-file": self.ca_file,
            "distributed.comm.tls.client.cert": self.cert,
            "distributed.comm.tls.client.key": self.key,
            "distributed.comm.require-encryption": True,
        }

    def cli_args(self) -> list[str]:
        """The `dask scheduler` / `dask worker` options that make them use these files."""
        return ["--tls-ca-file", self.ca_file, "--tls-cert", self.cert, "--tls-key", self.key]


def self_signed_tls(directory: str | os.PathLike, days: int = 2) -> TLSFiles:
    """Write a self-signed certificate for 127.0.0.1 and its key under ``directory``.

    The certificate is its own CA (distributed checks the chain, not the host name), made with
    ``cryptography`` (a test dependency) so no ``openssl`` binary is needed.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lakeio-test-cluster")])
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cluster.pem", folder / "cluster.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return TLSFiles(str(cert_path), str(cert_path), str(key_path))


def _dask_cli() -> list[str]:
    """The `dask` console script of the running interpreter's environment."""
    return [str(Path(sys.executable).with_name("dask"))]


def _isolated(command: list[str], private_dirs: tuple[str, ...]) -> list[str]:
    """``command`` in a mount namespace of its own with a fresh tmpfs over each of
    ``private_dirs``: what it writes there, no other process sees (a machine of its own, as far
    as those paths go). Needs root, as tests here run."""
    if not private_dirs:
        return command
    mounts = " && ".join(f"mount -t tmpfs tmpfs {shlex.quote(d)}" for d in private_dirs)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'{mounts} && exec "$@"', "sh", *command]  # fmt: skip


def worker_command(
    address: str,
    name: str,
    local_directory: str,
    memory_limit: str = "auto",
    extra: Sequence[str] = (),
) -> list[str]:
    """The `dask worker` command line for one single-threaded worker (with its nanny) of the
    scheduler at ``address``."""
    return [*_dask_cli(), "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
            "--no-dashboard", "--name", name, "--local-directory", local_directory,
            "--memory-limit", memory_limit, *extra]  # fmt: skip


@contextmanager
def extra_worker(
    address: str,
    name: str = "lakeio-test-extra",
    memory_limit: str = "auto",
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen]:
    """One more worker process for the cluster at ``address``, stopped on exit (a worker that
    joins later, e.g. after all the others died for good). ``env``: variables it sees other
    than this process's (e.g. other credentials)."""
    with tempfile.TemporaryDirectory(prefix="lakeio-worker-") as tmp:
        proc = subprocess.Popen(
            worker_command(address, name, tmp, memory_limit),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        try:
            yield proc
        finally:
            stop_process(proc)


@contextmanager
def process_cluster(
    n_workers: int = 2,
    timeout: float = 60.0,
    private_dirs: tuple[str, ...] = (),
    tls: TLSFiles | None = None,
    memory_limit: str = "auto",
) -> Iterator[str]:
    """Start a scheduler and ``n_workers`` single-threaded worker processes; yield the address.

    ``private_dirs``: folders each worker sees as its own empty tmpfs, to stand in for workers
    on other machines writing to their local disks. ``tls``: every connection is TLS with these
    files (the address is ``tls://127.0.0.1:…``; clients need ``security=tls.security()``).
    ``memory_limit``: each worker's (``dask worker --memory-limit``, e.g. "1GB")."""
    dask = _dask_cli()
    secure = ["--protocol", "tls", *tls.cli_args()] if tls is not None else []
    with tempfile.TemporaryDirectory(prefix="lakeio-cluster-") as tmp:
        scheduler_file = os.path.join(tmp, "scheduler.json")
        common = {
            "stdout": subprocess.DEVNULL,
            "stderr": subprocess.DEVNULL,
            "start_new_session": True,
        }
        procs = [
            subprocess.Popen(
                [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
                 "--scheduler-file", scheduler_file, *secure],
                **common,
            )
        ]  # fmt: skip
        try:
            address = _wait_for_address(scheduler_file, procs[0], timeout)
            for i in range(n_workers):
                worker = worker_command(address, f"lakeio-test-{i}", tmp, memory_limit, secure)
                procs.append(subprocess.Popen(_isolated(worker, private_dirs), **common))
            if n_workers:  # a scheduler alone is a cluster too (tests of an empty one)
                _wait_for_workers(address, n_workers, timeout, tls)
            yield address
        finally:
            for proc in reversed(procs):
                stop_process(proc)


def _wait_for_address(scheduler_file: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with status {proc.returncode}")
        try:
            with open(scheduler_file) as fh:
                return json.load(fh)["address"]
        except (FileNotFoundError, ValueError, KeyError):
            time.sleep(0.1)
    raise TimeoutError("dask scheduler did not start")


def _wait_for_workers(address: str, n: int, timeout: float, tls: TLSFiles | None) -> None:
    from distributed import Client

    security = tls.security() if tls is not None else None
    with Client(address, timeout=timeout, security=security) as client:
        client.wait_for_workers(n, timeout=timeout)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
