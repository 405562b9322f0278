"""A trainer's connection to a Dask cluster for loading: given, by address, or a LocalCluster.

The loader keeps one for its lifetime. It registers the lake's worker caches and the lakeio
dashboard page once, prints the dashboard link, and sends this trainer's figures to the
scheduler (at most once a second) so the page can show them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from distributed import Client, LocalCluster

from lakeio.cluster.connect import connect_address, default_workers, warm_worker
from lakeio.cluster.dashboard import TRAINER_TOPIC, register_dashboard
from lakeio.cluster.loads import register_lake


class ClusterSession:
    """``cluster`` is a `distributed.Client`, a scheduler address, or ``"local"``."""

    def __init__(self, cluster: Client | str, echo=print) -> None:
        self._local: LocalCluster | None = None
        self._owns_client = not isinstance(cluster, Client)
        if isinstance(cluster, Client):
            self.client = cluster
        elif cluster == "local":
            self._local = LocalCluster(
                n_workers=default_workers(), threads_per_worker=1, processes=True,
                dashboard_address=":0", silence_logs=50,
            )  # fmt: skip
            self.client = Client(self._local)
            self.client.run(warm_worker)
        elif isinstance(cluster, str):
            self.client = connect_address(cluster)
        else:
            raise TypeError(
                f"cluster must be a distributed.Client, a scheduler address or 'local', not {cluster!r}"
            )
        register_dashboard(self.client)
        self.trainer_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._tokens: dict[int, str] = {}
        self._last_report = 0.0
        self._reporter = ThreadPoolExecutor(1, thread_name_prefix="lakeio-report")
        self._in_flight: Future | None = None
        if echo is not None:
            workers = len(self.client.scheduler_info(n_workers=-1)["workers"])
            echo(f"lakeio loading on the Dask cluster: {self.dashboard_link}  ({workers} workers)")

    @property
    def dashboard_link(self) -> str:
        link = self.client.dashboard_link
        return link.replace("/status", "/lakeio") if link else ""

    def token_for(self, dataset) -> str:
        """Register ``dataset``'s worker caches (once per dataset object); its token."""
        if id(dataset) not in self._tokens:
            self._tokens[id(dataset)] = register_lake(self.client, dataset)
        return self._tokens[id(dataset)]

    def report(self, figures: dict[str, Any], force: bool = False) -> None:
        """Send this trainer's figures to the scheduler for the dashboard (rate-limited, from a
        background thread: the training loop never waits on the round trip)."""
        now = time.monotonic()
        if not force and now - self._last_report < 1.0:
            return
        if self._in_flight is not None and not self._in_flight.done() and not force:
            return  # the last report is still on its way; skip this one
        self._last_report = now
        message = {"trainer": self.trainer_id, **figures}
        self._in_flight = self._reporter.submit(self._send, message)

    def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # figures for a dashboard must never stop training
            self.client.log_event(TRAINER_TOPIC, message)

    def close(self) -> None:
        self.report({"closed": True}, force=True)
        self._reporter.shutdown(wait=True)
        if self._owns_client:
            self.client.close()
        if self._local is not None:
            self._local.close()
