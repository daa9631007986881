"""Simulated DSPs as real HTTP/1.1 servers on loopback ports, on `openbid.http.server`.

Each DSP listens on its own port: `POST` on any path is a bid request (204 for no bid, 200
with a BidResponse), `GET /win`, `/bill` and `/loss` count notices, `GET /stats` returns the
counters as JSON. Latencies and faults are played for real: the reply waits its drawn
latency, a timeout holds the request, a slow body trickles after its head
(`StreamResponse`), a reset closes the socket with RST (`ResetConnection`). Responses on one
connection leave in request order.

Use `DspServers` (async context manager) inside an event loop, or `DspServersThread` from
synchronous code (tests, `openbid up --demo`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterable

import msgspec

from openbid.http.server import HttpServer, Request, ResetConnection, Response, StreamResponse
from openbid.sim.dsp import Answer, DspBehaviour
from openbid.sim.market import Market

log = logging.getLogger(__name__)

NOTICE_PATHS = {"/win": "win", "/bill": "bill", "/loss": "loss"}
SLOW_BODY_PIECES = 8
_encoder = msgspec.json.Encoder()
_OPENRTB_HEADERS = (("x-openrtb-version", "2.6"),)
_NOTICE_OK = Response(200, b"", "text/plain")
_NOT_FOUND = Response(404, b'{"error":"not found"}')
_RESET = ResetConnection()


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


async def _trickle(body: bytes, total_ms: float) -> AsyncIterator[bytes]:
    """`body` in `SLOW_BODY_PIECES` pieces spread over `total_ms`, the first after a pause."""
    step = max(1, -(-len(body) // SLOW_BODY_PIECES))
    pieces = [body[i : i + step] for i in range(0, len(body), step)]
    interval_s = total_ms / 1000.0 / len(pieces)
    for piece in pieces:
        await asyncio.sleep(interval_s)
        yield piece


class DspServer:
    """One simulated DSP listening on one port."""

    def __init__(self, market: Market, dsp: str, *, simulate_latency: bool = True) -> None:
        self.market = market
        self.name = dsp
        self.simulate_latency = simulate_latency
        self.stats = DspStats(dsp)
        self.behaviour = DspBehaviour(market, dsp)
        self.host = ""
        self.port = 0
        # A DSP holds what its latencies and timeouts make it hold: no in-flight bound.
        self._server = HttpServer(self._handle, max_in_flight=1 << 30, max_body_bytes=1 << 20)
        self._started = False

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

    async def _handle(self, request: Request) -> object:
        path = request.path
        if request.method == "POST" and path not in NOTICE_PATHS:
            answer = self.behaviour.answer(request.body)
            self.count(answer)
            return await self._play(answer)
        if request.method == "GET":
            notice = NOTICE_PATHS.get(path)
            if notice is not None:
                self.stats.notices[notice] += 1
                return _NOTICE_OK
            if path == "/stats":
                return Response(200, _encoder.encode(self.stats.as_dict()))
        return _NOT_FOUND

    async def _play(self, answer: Answer) -> object:
        """The answer as the DSP sends it: after its latency, with its fault."""
        if self.simulate_latency and answer.delay_ms > 0:
            await asyncio.sleep(answer.delay_ms / 1000.0)
        if answer.fault == "connection_reset":
            return _RESET
        headers = _OPENRTB_HEADERS if answer.status == 200 else None
        if answer.fault == "slow_body" and answer.body:
            slow_ms = self.behaviour.dsp.config.faults.slow_body_ms
            return StreamResponse(
                answer.status, len(answer.body), _trickle(answer.body, slow_ms), headers=headers
            )
        return Response(answer.status, answer.body, headers=headers)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.port = await self._server.start(host, port)
        self._started = True
        self.host = host
        self.behaviour.base_url = f"http://{host}:{self.port}"
        log.info("simulated DSP listening", extra={"dsp": self.name, "url": self.url})
        return self.port

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._server.stop(grace_s=0)


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
