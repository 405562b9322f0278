"""Dask cluster plumbing: connecting to (or starting) a cluster."""

from lakeio.cluster.connect import dask_client

__all__ = ["dask_client"]
