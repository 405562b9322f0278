"""An HTTP proxy on 127.0.0.1 in front of an S3 server (moto's, in tests) that behaves like a
real object store on a bad day, and counts what it did.

Per request, as `ProxyFaults` says: a fixed latency plus jitter before the answer, a bandwidth
cap on each response body, ``503 SlowDown`` at a rate or in bursts, a dropped connection (no
answer at all), a body cut short (the announced length is not delivered), and ``403
AccessDenied`` / ``404 NoSuchKey`` for chosen keys or credentials, an answer lost after the store
acted on the request, and a body with one byte changed. Tests and benchmarks point s3fs at
`FaultProxy.endpoint` instead of the server's, and read `FaultProxy.counts` to say how many
faults a run survived. Faults are chosen from a seeded generator in request order, so a run is
repeatable as far as the client's request order is.

``tc netem`` and Toxiproxy are not available on these machines (see PITFALLS); aiohttp, which
s3fs already depends on, is all this needs.
"""

from __future__ import annotations

import asyncio
import fnmatch
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

from aiohttp import ClientSession, ClientTimeout, web

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate", "content-length"}  # fmt: skip


@dataclass(frozen=True)
class ProxyFaults:
    """What the proxy does to requests. Rates are probabilities per request (0..1).

    ``latency``/``jitter`` (seconds) delay every answer by latency + uniform(0, jitter).
    ``slowdown_every``, ``reset_every``, ``truncate_every``: the same faults, deterministically,
    on every Nth object request (counted over the GETs, and writes with ``on_writes``).
    ``bandwidth`` (bytes/s) caps each response body. ``slowdown_rate`` answers 503 SlowDown;
    ``slowdown_burst=(every, length)`` answers ``length`` requests in a row with 503 after every
    ``every`` requests. ``reset_rate`` drops the connection without answering;
    ``truncate_rate`` sends half of a GET's body, then drops the connection. ``deny`` and
    ``missing`` are key patterns (fnmatch, on "bucket/key") answered 403 and 404;
    ``deny_access_keys`` answers 403 to requests signed with those access key ids (a machine
    with the wrong credentials). ``lose_reply_*`` forwards the request, then drops the
    connection before the answer: the store acted (a PUT landed) but the client cannot know.
    ``corrupt_*`` changes one byte of a GET's body, length intact (only a checksum can tell).
    Only requests for objects get these faults: GETs (unless ``on_reads=False``), and PUTs and
    POSTs with ``on_writes=True``.
    """

    latency: float = 0.0
    jitter: float = 0.0
    bandwidth: float | None = None
    slowdown_rate: float = 0.0
    slowdown_burst: tuple[int, int] | None = None
    reset_rate: float = 0.0
    truncate_rate: float = 0.0
    slowdown_every: int = 0
    reset_every: int = 0
    truncate_every: int = 0
    lose_reply_rate: float = 0.0
    lose_reply_every: int = 0
    corrupt_rate: float = 0.0
    corrupt_every: int = 0
    deny: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    deny_access_keys: tuple[str, ...] = ()
    on_writes: bool = False
    on_reads: bool = True
    seed: int = 0


@dataclass
class _State:
    faults: ProxyFaults
    rng: random.Random
    counts: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0  # how many times the counts were reset
    corruptions: int = 0  # bodies changed so far (never reset): each one's mask differs


class FaultProxy:
    """The proxy, serving on a thread of its own; a context manager (see the module doc)."""

    def __init__(self, upstream: str, faults: ProxyFaults | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        faults = faults or ProxyFaults()
        self._state = _State(faults, random.Random(faults.seed))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._session: ClientSession | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def counts(self) -> dict[str, int]:
        """Requests seen and faults injected so far: ``requests``, ``slowdown``, ``reset``,
        ``truncated``, ``reply_lost``, ``corrupted``, ``denied``, ``missing``, requests per
        method (``GET``, ``PUT``, ...), ``delay_ms`` (latency added, in total), and
        ``peak_in_flight`` (the most requests it was answering at once)."""
        with self._state.lock:
            return dict(self._state.counts)

    def set_faults(self, **changes) -> None:
        """Change what the proxy does from now on (e.g. ``set_faults(reset_rate=0)``)."""
        with self._state.lock:
            self._state.faults = replace(self._state.faults, **changes)
            if "seed" in changes:
                self._state.rng = random.Random(changes["seed"])

    def reset_counts(self) -> None:
        """Zero the counts. Requests still being answered are left out of the new ones (their
        handlers end after the client has its answer, and must not count as -1 in flight)."""
        with self._state.lock:
            self._state.counts.clear()
            self._state.generation += 1

    def start(self) -> FaultProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_app())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop_app())
            loop.close()

        self._thread = threading.Thread(target=serve, name="lakeio-s3proxy", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _start_app(self) -> None:
        self._session = ClientSession(
            timeout=ClientTimeout(total=300),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        app = web.Application(client_max_size=1 << 34)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _stop_app(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _decide(
        self, method: str, key: str, access_key: str
    ) -> tuple[str | None, float, ProxyFaults]:
        """The fault for this request (or None) and the delay before answering."""
        with self._state.lock:
            f, rng, counts = self._state.faults, self._state.rng, self._state.counts
            counts["requests"] += 1
            counts[method] += 1  # e.g. counts["PUT"]
            delay = f.latency + (rng.uniform(0, f.jitter) if f.jitter else 0.0)
            counts["delay_ms"] += round(delay * 1000)
            fault = None
            if access_key in f.deny_access_keys or any(fnmatch.fnmatchcase(key, p) for p in f.deny):
                fault = "denied"
            elif any(fnmatch.fnmatchcase(key, p) for p in f.missing):
                fault = "missing"
            elif (f.on_reads and method == "GET") or (f.on_writes and method in ("PUT", "POST")):
                counts["object_requests"] += 1
                fault = _chosen(f, counts["object_requests"], rng.random(), method == "GET")
            if fault is not None:
                counts[fault] += 1
            return fault, delay, f

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._state.lock:
            counts, generation = self._state.counts, self._state.generation
            counts["in_flight"] += 1
            counts["peak_in_flight"] = max(counts["peak_in_flight"], counts["in_flight"])
        try:
            return await self._answer(request)
        finally:
            with self._state.lock:
                if self._state.generation == generation:  # counted since the last reset
                    self._state.counts["in_flight"] -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        path = urlsplit(str(request.rel_url)).path
        key = unquote(path.lstrip("/"))
        fault, delay, faults = self._decide(request.method, key, _access_key(request))
        body = await request.read()
        if delay:
            await asyncio.sleep(delay)
        if fault == "reset":
            request.transport.close()  # no answer at all: the client sees the connection drop
            return web.Response(status=500)
        if fault in ("slowdown", "denied", "missing"):
            return _s3_error(fault, key)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        headers["Host"] = urlsplit(self.upstream).netloc
        async with self._session.request(
            request.method, self.upstream + str(request.rel_url), headers=headers, data=body,
            allow_redirects=False,
        ) as upstream:  # fmt: skip
            payload = await upstream.read()
            out = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    out.headers[name] = value
            # a HEAD's answer has no body: its length is the object's, as the store said
            head = request.method == "HEAD" and "Content-Length" in upstream.headers
            out.content_length = int(upstream.headers["Content-Length"]) if head else len(payload)
            if fault == "reply_lost":  # the store acted; the client never hears of it
                request.transport.close()
                return out
            if fault == "corrupted" and payload:
                # damage in transit differs from read to read: a random place, and a mask that
                # changes, since two equal bodies read as damage kept in the store (lakeio then
                # stops reading again); a fixed mask made that likely for a chunk of a few bytes
                with self._state.lock:
                    flip = self._state.rng.randrange(len(payload))
                    mask = 1 + self._state.corruptions % 255
                    self._state.corruptions += 1
                payload = payload[:flip] + bytes([payload[flip] ^ mask]) + payload[flip + 1 :]
            await out.prepare(request)
            if fault == "truncated" and len(payload) > 1:
                await out.write(payload[: len(payload) // 2])
                request.transport.close()  # the announced length never arrives
                return out
            await _write_capped(out, payload, faults.bandwidth)
            await out.write_eof()
            return out


def _every(every: int, n: int) -> bool:
    return every > 0 and n % every == 0


def _chosen(f: ProxyFaults, m: int, roll: float, readable: bool) -> str | None:
    """The fault for the ``m``-th object request, given a random ``roll``."""
    burst = f.slowdown_burst
    in_burst = burst is not None and burst[0] > 0 and (m - 1) % (burst[0] + burst[1]) >= burst[0]
    if in_burst or _every(f.slowdown_every, m) or roll < f.slowdown_rate:
        return "slowdown"
    cut = f.slowdown_rate + f.reset_rate
    if _every(f.reset_every, m) or f.slowdown_rate <= roll < cut:
        return "reset"
    lost = cut + f.lose_reply_rate
    if _every(f.lose_reply_every, m) or cut <= roll < lost:
        return "reply_lost"
    if not readable:
        return None
    truncate = lost + f.truncate_rate
    if _every(f.truncate_every, m) or lost <= roll < truncate:
        return "truncated"
    if _every(f.corrupt_every, m) or truncate <= roll < truncate + f.corrupt_rate:
        return "corrupted"
    return None


def _access_key(request: web.Request) -> str:
    """The access key id a request is signed with (SigV4: ``Credential=KEY/date/...``)."""
    auth = request.headers.get("Authorization", "")
    _, found, rest = auth.partition("Credential=")
    return rest.split("/", 1)[0] if found else ""


async def _write_capped(out: web.StreamResponse, payload: bytes, bandwidth: float | None) -> None:
    """Write ``payload`` at no more than ``bandwidth`` bytes/s (all at once without a cap)."""
    if not bandwidth:
        await out.write(payload)
        return
    step = max(16 << 10, int(bandwidth / 100))  # about 10 ms of transfer per write
    started = time.monotonic()
    for offset in range(0, len(payload), step):
        await out.write(payload[offset : offset + step])
        due = started + (offset + step) / bandwidth
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)


_S3_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "denied": (403, "AccessDenied", "Access Denied"),
    "missing": (404, "NoSuchKey", "The specified key does not exist."),
}


def _s3_error(fault: str, key: str) -> web.Response:
    status, code, message = _S3_ERRORS[fault]
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Key>{key}</Key>"
        "<RequestId>lakeio-proxy</RequestId></Error>"
    )
    return web.Response(status=status, body=xml.encode(), content_type="application/xml")
