"""Simulated DSPs as real HTTP/1.1 servers on loopback ports (asyncio Protocol + httptools).

Each DSP listens on its own port: `POST` on any path is a bid request (204 for no bid, 200
with a BidResponse), `GET /win`, `/bill` and `/loss` count notices, `GET /stats` returns the
counters as JSON. Latencies and faults are played for real: the reply waits its drawn
latency, a timeout holds the request, a slow body trickles after its headers, a reset
closes the socket with RST. Responses on one connection leave in request order.

Use `DspServers` (async context manager) inside an event loop, or `DspServersThread` from
synchronous code (tests, `openbid up --demo`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from collections import Counter, deque
from collections.abc import Iterable

import httptools
import msgspec

from openbid.sim.dsp import Answer, DspBehaviour
from openbid.sim.market import Market

log = logging.getLogger(__name__)

NOTICE_PATHS = {"/win": "win", "/bill": "bill", "/loss": "loss"}
SLOW_BODY_PIECES = 8
_REASONS = {
    200: b"OK",
    204: b"No Content",
    400: b"Bad Request",
    404: b"Not Found",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
}
_encoder = msgspec.json.Encoder()


class DspStats:
    """Counters of one DSP server (what `GET /stats` returns)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = 0
        self.bids = 0
        self.no_bids = 0
        self.bad_requests = 0
        self.faults: Counter[str] = Counter()
        self.notices: Counter[str] = Counter()

    def as_dict(self) -> dict:
        return {
            "dsp": self.name,
            "requests": self.requests,
            "bids": self.bids,
            "no_bids": self.no_bids,
            "bad_requests": self.bad_requests,
            "faults": dict(self.faults),
            "notices": dict(self.notices),
        }


def _head(
    status: int, length: int, keep_alive: bool, content_type: bytes = b"application/json"
) -> bytes:
    lines = [
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown")),
        b"content-length: %d\r\n" % length,
    ]
    if status != 204:
        lines.append(b"content-type: %s\r\n" % content_type)
    if status == 200 and content_type == b"application/json":
        lines.append(b"x-openrtb-version: 2.6\r\n")
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


class _Reply:
    __slots__ = ("head", "body", "ready", "reset", "trickle_ms", "keep_alive")

    def __init__(self, keep_alive: bool) -> None:
        self.head = b""
        self.body = b""
        self.ready = False
        self.reset = False
        self.trickle_ms = 0.0
        self.keep_alive = keep_alive


class _DspProtocol(asyncio.Protocol):
    def __init__(self, server: DspServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._replies: deque[_Reply] = deque()
        self._writing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  (uvloop's is not a subclass)
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(_head(400, 0, False))
                self._transport.close()

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        reply = _Reply(self._parser.should_keep_alive())
        self._replies.append(reply)
        method = self._parser.get_method()
        parsed = httptools.parse_url(self._url)
        path = parsed.path.decode("latin-1")
        server = self._server
        if method == b"POST" and path not in NOTICE_PATHS:
            answer = server.behaviour.answer(b"".join(self._body))
            server.count(answer)
            self._schedule(reply, answer)
            return
        if method == b"GET" and path in NOTICE_PATHS:
            server.stats.notices[NOTICE_PATHS[path]] += 1
            self._complete(reply, 200, b"", b"text/plain")
        elif method == b"GET" and path == "/stats":
            self._complete(reply, 200, _encoder.encode(server.stats.as_dict()))
        else:
            self._complete(reply, 404, b'{"error":"not found"}')

    def _schedule(self, reply: _Reply, answer: Answer) -> None:
        reply.reset = answer.fault == "connection_reset"
        reply.head = _head(answer.status, len(answer.body), reply.keep_alive)
        reply.body = answer.body
        if answer.fault == "slow_body":
            reply.trickle_ms = self._server.behaviour.dsp.config.faults.slow_body_ms
        delay_s = answer.delay_ms / 1000.0 if self._server.simulate_latency else 0.0
        if delay_s > 0:
            self._loop.call_later(delay_s, self._mark_ready, reply)
        else:
            self._mark_ready(reply)

    def _complete(
        self, reply: _Reply, status: int, body: bytes, content_type: bytes = b"application/json"
    ) -> None:
        reply.head = _head(status, len(body), reply.keep_alive, content_type)
        reply.body = body
        self._mark_ready(reply)

    def _mark_ready(self, reply: _Reply) -> None:
        reply.ready = True
        self._flush()

    def _flush(self) -> None:
        while not self._writing and self._replies and self._replies[0].ready:
            reply = self._replies.popleft()
            transport = self._transport
            if transport is None:
                self._replies.clear()
                return
            if reply.reset:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
                self._replies.clear()
                return
            if reply.trickle_ms > 0 and reply.body:
                self._trickle(reply)
                return
            transport.write(reply.head + reply.body)
            if not reply.keep_alive:
                transport.close()
                self._replies.clear()
                return

    def _trickle(self, reply: _Reply) -> None:
        if self._transport is None:
            return
        self._writing = True
        self._transport.write(reply.head)
        body = reply.body
        step = max(1, -(-len(body) // SLOW_BODY_PIECES))
        pieces = [body[i : i + step] for i in range(0, len(body), step)]
        interval_s = reply.trickle_ms / 1000.0 / len(pieces)

        def send(index: int) -> None:
            if self._transport is None:
                self._writing = False
                return
            self._transport.write(pieces[index])
            if index + 1 < len(pieces):
                self._loop.call_later(interval_s, send, index + 1)
                return
            self._writing = False
            if not reply.keep_alive:
                self._transport.close()
                return
            self._flush()

        self._loop.call_later(interval_s, send, 0)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class DspServer:
    """One simulated DSP listening on one port."""

    def __init__(self, market: Market, dsp: str, *, simulate_latency: bool = True) -> None:
        self.market = market
        self.name = dsp
        self.simulate_latency = simulate_latency
        self.stats = DspStats(dsp)
        self.behaviour = DspBehaviour(market, dsp)
        self.connections: set[_DspProtocol] = set()
        self.host = ""
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        """The bid endpoint (`POST` here)."""
        return f"http://{self.host}:{self.port}/openrtb2"

    def count(self, answer: Answer) -> None:
        stats = self.stats
        stats.requests += 1
        if answer.status == 400:
            stats.bad_requests += 1
            return
        if answer.fault != "none":
            stats.faults[answer.fault] += 1
        if answer.bids and answer.fault in ("none", "slow_body", "timeout"):
            stats.bids += 1
        elif answer.status == 204:
            stats.no_bids += 1

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _DspProtocol(self), host, port, backlog=2048, reuse_address=True
        )
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        self.behaviour.base_url = f"http://{host}:{self.port}"
        log.info("simulated DSP listening", extra={"dsp": self.name, "url": self.url})
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.close()
        await self._server.wait_closed()
        self._server = None


class DspServers:
    """Every DSP of a market (or the named ones), each on its own port.

    `base_port=0` picks free ports; otherwise DSP `i` listens on `base_port + i`.
    """

    def __init__(
        self,
        market: Market,
        host: str = "127.0.0.1",
        base_port: int = 0,
        *,
        dsps: Iterable[str] | None = None,
        simulate_latency: bool = True,
    ) -> None:
        names = list(dsps) if dsps is not None else [d.name for d in market.dsps]
        self.host = host
        self.base_port = base_port
        self.servers = [
            DspServer(market, name, simulate_latency=simulate_latency) for name in names
        ]

    async def start(self) -> DspServers:
        for offset, server in enumerate(self.servers):
            await server.start(self.host, self.base_port + offset if self.base_port else 0)
        return self

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop()

    async def __aenter__(self) -> DspServers:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def urls(self) -> dict[str, str]:
        """Bid endpoint of each DSP, by name."""
        return {server.name: server.url for server in self.servers}

    @property
    def ports(self) -> dict[str, int]:
        return {server.name: server.port for server in self.servers}

    def stats(self) -> dict[str, dict]:
        """Counters of each DSP, by name."""
        return {server.name: server.stats.as_dict() for server in self.servers}


async def start_dsp_servers(
    market: Market, host: str = "127.0.0.1", base_port: int = 0, **options: object
) -> DspServers:
    """Starts the DSP servers of a market in the running loop; `await servers.stop()` ends them."""
    return await DspServers(market, host, base_port, **options).start()  # type: ignore[arg-type]


class DspServersThread:
    """The DSP servers of a market on a background thread with its own event loop.

    >>> market = Market.load("default")
    >>> with DspServersThread(market, dsps=["fjord"]) as servers:
    ...     servers.urls["fjord"].startswith("http://127.0.0.1:")
    True
    """

    def __init__(
        self,
        market: Market,
        host: str = "127.0.0.1",
        base_port: int = 0,
        *,
        dsps: Iterable[str] | None = None,
        simulate_latency: bool = True,
    ) -> None:
        self.servers = DspServers(
            market, host, base_port, dsps=dsps, simulate_latency=simulate_latency
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> DspServersThread:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = _new_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.servers.start())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.servers.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="sim-dsp-servers", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop = None

    def __enter__(self) -> DspServersThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def urls(self) -> dict[str, str]:
        return self.servers.urls

    @property
    def ports(self) -> dict[str, int]:
        return self.servers.ports

    def stats(self) -> dict[str, dict]:
        """A snapshot of the counters, read on the servers' own thread."""
        if self._loop is None:
            return self.servers.stats()

        async def snapshot() -> dict[str, dict]:
            return self.servers.stats()

        return asyncio.run_coroutine_threadsafe(snapshot(), self._loop).result()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
