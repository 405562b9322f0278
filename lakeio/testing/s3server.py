"""An S3-compatible server (moto's) on 127.0.0.1 with one bucket, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def moto_bucket(bucket: str, key: str = "testing", secret: str = "testing") -> Iterator[dict]:
    """Start moto's server with ``bucket``; yield the s3fs storage options that reach it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=key, aws_secret_access_key=secret,
        ).create_bucket(Bucket=bucket)  # fmt: skip
        yield {
            "key": key,
            "secret": secret,
            "endpoint_url": endpoint,
            "client_kwargs": {"region_name": "us-east-1"},
        }
    finally:
        server.stop()
