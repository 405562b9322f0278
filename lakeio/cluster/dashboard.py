"""lakeio on the Dask dashboard: a ``/lakeio`` page, ``/lakeio.json``, and Prometheus metrics.

A scheduler plugin adds the page to the dashboard's own web server and keeps the latest figures
each trainer sends (``client.log_event`` on the ``lakeio-trainer`` topic). Workers' figures come
with their heartbeats (see `lakeio.cluster.worker`). The same figures are exported on the
scheduler's ``/metrics`` endpoint, next to Dask's own.
"""

from __future__ import annotations

import html
import time
import weakref
from typing import Any

from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin
from tornado import web

from lakeio.cluster.worker import METRICS_KEY

TRAINER_TOPIC = "lakeio-trainer"
PLUGIN_NAME = "lakeio-dashboard"
TRAINER_TIMEOUT_S = 300.0
_plugins: weakref.WeakSet = weakref.WeakSet()
_collector_registered = False


def _ratio(hits: float, requests: float) -> float | None:
    return hits / requests if requests else None


class LakeioDashboard(SchedulerPlugin):
    """Collects trainer figures and serves the lakeio page on the scheduler (idempotent)."""

    idempotent = True
    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.trainers: dict[str, dict[str, Any]] = {}
        self.scheduler = None

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler
        application = getattr(scheduler, "http_application", None)
        if application is not None:
            routes = [
                (r"/lakeio", _PageHandler, {"plugin": self}),
                (r"/lakeio\.json", _JsonHandler, {"plugin": self}),
            ]
            application.add_application(web.Application(routes))
        _plugins.add(self)
        _register_prometheus_collector()

    async def close(self) -> None:
        _plugins.discard(self)  # a closed scheduler's figures leave /metrics with it

    def log_event(self, topic: str, msg: Any) -> None:
        if topic != TRAINER_TOPIC or not isinstance(msg, dict) or "trainer" not in msg:
            return
        if msg.get("closed"):  # the trainer's loader was closed: its row goes
            self.trainers.pop(str(msg["trainer"]), None)
        else:
            self.trainers[str(msg["trainer"])] = {**msg, "seen": time.time()}

    def figures(self) -> dict[str, Any]:
        """Per-worker cache and serving figures, per-trainer throughput and stall."""
        workers = {}
        for address, ws in sorted((self.scheduler.workers if self.scheduler else {}).items()):
            m = (ws.metrics or {}).get(METRICS_KEY)
            if not isinstance(m, dict):
                continue
            workers[address] = {
                **m,
                "memory_hit_rate": _ratio(m.get("memory_hits", 0), m.get("memory_requests", 0)),
                "disk_hit_rate": _ratio(m.get("disk_hits", 0), m.get("disk_requests", 0)),
                "shared_hit_rate": _ratio(m.get("shared_hits", 0), m.get("shared_requests", 0)),
            }
        now = time.time()
        for name in [t for t, f in self.trainers.items() if now - f["seen"] > TRAINER_TIMEOUT_S]:
            del self.trainers[name]  # silent that long: crashed or gone without closing
        trainers = {
            t: {**f, "age_s": round(now - f["seen"], 1)} for t, f in sorted(self.trainers.items())
        }
        return {"workers": workers, "trainers": trainers}


def register_dashboard(client: Client) -> None:
    """Install the lakeio page on ``client``'s scheduler (a no-op if it is already there)."""
    client.register_plugin(LakeioDashboard(), name=PLUGIN_NAME)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _shared_use(w: dict[str, Any]) -> str:
    """The node-shared tier's bytes and budget (the node's, as this worker sees them)."""
    if not w.get("shared_capacity"):
        return "—"
    return f"{w['shared_bytes'] / 1e6:,.1f} / {w['shared_capacity'] / 1e6:,.1f}"


class _JsonHandler(web.RequestHandler):
    def initialize(self, plugin: LakeioDashboard) -> None:
        self.plugin = plugin

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        import json

        self.write(json.dumps(self.plugin.figures()))


class _PageHandler(_JsonHandler):
    def get(self) -> None:
        figures = self.plugin.figures()
        rows = []
        for address, w in figures["workers"].items():
            rows.append(
                f"<tr><td>{html.escape(address)}</td><td>{_percent(w['memory_hit_rate'])}</td>"
                f"<td>{_percent(w['disk_hit_rate'])}</td><td>{w['origin_reads']:,}</td>"
                f"<td>{1000 * w.get('origin_latency_s', 0):,.0f}</td>"
                f"<td>{w.get('origin_in_flight_peak', 0):,}</td>"
                f"<td>{w['chunks']:,}</td><td>{w.get('chunks_per_s', 0):,.1f}</td>"
                f"<td>{w['bytes'] / 1e6:,.1f}</td><td>{w['memory_bytes'] / 1e6:,.1f} / "
                f"{w['memory_capacity'] / 1e6:,.1f}</td>"
                f"<td>{_percent(w.get('shared_hit_rate'))}</td><td>{_shared_use(w)}</td></tr>"
            )
        trainer_rows = []
        for name, t in figures["trainers"].items():
            trainer_rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{t.get('epoch', 0)}</td>"
                f"<td>{t.get('batches', 0):,}</td><td>{t.get('images_per_s', 0):,.0f}</td>"
                f"<td>{_percent(t.get('stall_fraction'))}</td><td>{t['age_s']}</td></tr>"
            )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(
            _PAGE.format(
                workers="".join(rows) or _EMPTY.format(12),
                trainers="".join(trainer_rows) or _EMPTY.format(6),
            )
        )


_EMPTY = '<tr><td colspan="{}">none yet</td></tr>'
_PAGE = """<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>lakeio — data path</title><style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}} h1{{font-size:1.3em}}
table{{border-collapse:collapse;margin-bottom:1.5em}} td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
th{{background:#f0f3f7}} td:first-child,th:first-child{{text-align:left}}
</style></head><body>
<h1>lakeio — is the data path keeping up?</h1>
<p><a href="status">Dask status</a> · <a href="lakeio.json">lakeio.json</a> · <a href="metrics">metrics</a> · refreshes every 2 s</p>
<h2>Trainers</h2>
<table><tr><th>trainer</th><th>epoch (from 0)</th><th>batches</th><th>images/s</th><th>stall</th><th>seen (s ago)</th></tr>
{trainers}</table>
<h2>Workers (each caches the chunks it owns)</h2>
<table><tr><th>worker</th><th>memory hit rate</th><th>disk hit rate</th><th>origin reads</th>
<th>read latency ms (recent)</th><th>reads in flight (peak)</th><th>chunks served</th><th>chunks/s</th><th>MB served</th><th>memory tier MB (used / budget)</th>
<th>shared hit rate</th><th>shared tier MB (the node's: used / budget)</th></tr>
{workers}</table>
</body></html>"""


def _register_prometheus_collector() -> None:
    global _collector_registered
    if _collector_registered:
        return
    _collector_registered = True
    try:
        from prometheus_client import REGISTRY
    except ImportError:  # pragma: no cover - a declared dependency
        return
    REGISTRY.register(_SchedulerCollector())


class _SchedulerCollector:
    """Every live lakeio dashboard's figures in this process, for the scheduler's /metrics."""

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        hit = GaugeMetricFamily(
            "lakeio_worker_cache_hit_ratio",
            "Cache hit rate per worker and tier",
            labels=["worker", "tier"],
        )
        rate = GaugeMetricFamily(
            "lakeio_worker_served_chunks_per_second", "Chunks served per second", labels=["worker"]
        )
        images = GaugeMetricFamily(
            "lakeio_trainer_images_per_second",
            "Images per second into each trainer",
            labels=["trainer"],
        )
        stall = GaugeMetricFamily(
            "lakeio_trainer_stall_ratio",
            "Share of time each trainer waited for data",
            labels=["trainer"],
        )
        for plugin in list(_plugins):
            figures = plugin.figures()
            for address, w in figures["workers"].items():
                for tier in ("memory", "disk", "shared"):
                    if w.get(f"{tier}_hit_rate") is not None:
                        hit.add_metric([address, tier], w[f"{tier}_hit_rate"])
                rate.add_metric([address], float(w.get("chunks_per_s", 0.0)))
            for name, t in figures["trainers"].items():
                images.add_metric([name], float(t.get("images_per_s", 0.0)))
                stall.add_metric([name], float(t.get("stall_fraction", 0.0)))
        yield from (hit, rate, images, stall)
