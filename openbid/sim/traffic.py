"""Sends generated bid requests to any OpenRTB endpoint at a target rate, and counts replies.

A lean HTTP/1.1 client (asyncio Protocol + httptools) keeps `concurrency` keep-alive
connections, one request in flight on each. Requests leave on a fixed schedule (request
`i` at `i / rate`); when every connection is busy the schedule slips, and the report says
by how much (the achieved rate). Replies are counted by status, bids by parsing the body.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import httptools
import msgspec
import numpy as np

from openbid.errors import OpenbidError


class TrafficError(OpenbidError):
    """The target cannot be used (bad URL, nothing listening)."""


class _Bid(msgspec.Struct):
    price: float = 0.0


class _SeatBid(msgspec.Struct):
    bid: list[_Bid] = []


class _BidResponse(msgspec.Struct):
    seatbid: list[_SeatBid] = []


_response_decoder = msgspec.json.Decoder(_BidResponse)


class TrafficReport(msgspec.Struct, kw_only=True):
    """What was sent and what came back."""

    target: str
    sent: int = 0
    statuses: dict[str, int] = {}
    """Replies by HTTP status, and failures by kind (`timeout`, `connection_reset`, ...)."""
    bids: int = 0
    bid_responses: int = 0
    malformed_responses: int = 0
    latencies_ms: list[float] = []
    elapsed_s: float = 0.0
    """From the first request sent to the last reply received."""
    sending_s: float = 0.0
    """From the first request sent to the last, plus one scheduled interval."""
    target_rate_per_s: float = 0.0

    @property
    def achieved_rate_per_s(self) -> float:
        return self.sent / self.sending_s if self.sending_s > 0 else 0.0

    def latency_percentiles_ms(self) -> dict[str, float]:
        if not self.latencies_ms:
            return {}
        values = np.percentile(np.asarray(self.latencies_ms), [50, 90, 99, 99.9])
        return {
            name: float(v) for name, v in zip(("p50", "p90", "p99", "p99.9"), values, strict=True)
        }

    def summary(self) -> dict:
        """The report as plain data (without the raw latencies)."""
        return {
            "target": self.target,
            "sent": self.sent,
            "elapsed_s": round(self.elapsed_s, 3),
            "target_rate_per_s": self.target_rate_per_s,
            "achieved_rate_per_s": round(self.achieved_rate_per_s, 1),
            "statuses": dict(sorted(self.statuses.items())),
            "bid_responses": self.bid_responses,
            "bids": self.bids,
            "malformed_responses": self.malformed_responses,
            "latency_ms": {k: round(v, 2) for k, v in self.latency_percentiles_ms().items()},
        }


class _Exchange(asyncio.Protocol):
    """One keep-alive client connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionResetError("connection closed by the target"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(exc)
            self.close()

    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._parser.get_status_code(), b"".join(self._body)))
        if not self._parser.should_keep_alive():
            self.close()

    def send(self, payload: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class TrafficSender:
    """Posts bodies to one URL over keep-alive connections and fills a `TrafficReport`."""

    def __init__(
        self,
        target_url: str,
        concurrency: int = 64,
        timeout_ms: float = 1000.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        parts = urlsplit(target_url)
        if parts.scheme != "http" or not parts.hostname:
            raise TrafficError(f"--target {target_url}: expected an http:// URL")
        self.host = parts.hostname
        self.port = parts.port or 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._head = (
            f"POST {path} HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-type: application/json\r\n"
            f"x-openrtb-version: 2.6\r\n{extra}content-length: "
        ).encode()
        self.concurrency = concurrency
        self.timeout_s = timeout_ms / 1000.0
        self.report = TrafficReport(target=target_url)

    async def _connect(self) -> _Exchange:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(_Exchange, self.host, self.port)
        except OSError as exc:
            raise TrafficError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        return protocol

    async def _one(self, connection: _Exchange | None, body: bytes) -> _Exchange | None:
        report = self.report
        statuses = report.statuses
        try:
            if connection is None or connection.closed:
                connection = await self._connect()
            started = time.perf_counter()
            waiter = connection.send(self._head + b"%d\r\n\r\n" % len(body) + body)
            status, payload = await asyncio.wait_for(waiter, self.timeout_s)
        except TimeoutError:
            statuses["timeout"] = statuses.get("timeout", 0) + 1
            if connection is not None:
                connection.close()
            return None
        except (ConnectionError, httptools.HttpParserError, TrafficError) as exc:
            kind = "connection_reset" if isinstance(exc, ConnectionError) else "connect_failed"
            if isinstance(exc, httptools.HttpParserError):
                kind = "bad_http"
            statuses[kind] = statuses.get(kind, 0) + 1
            return None
        report.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        key = str(status)
        statuses[key] = statuses.get(key, 0) + 1
        if status == 200:
            try:
                response = _response_decoder.decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                report.malformed_responses += 1
            else:
                count = sum(len(seat.bid) for seat in response.seatbid)
                report.bids += count
                report.bid_responses += 1 if count else 0
        return connection

    async def run(self, bodies: list[bytes], rate_per_s: float) -> TrafficReport:
        """Sends every body, at `rate_per_s` on the schedule, and waits for the replies."""
        report = self.report
        report.target_rate_per_s = rate_per_s
        first = await self._connect()
        idle: asyncio.Queue[_Exchange | None] = asyncio.Queue()
        idle.put_nowait(first)
        for _ in range(self.concurrency - 1):
            idle.put_nowait(None)
        pending: set[asyncio.Task] = set()

        async def run_one(connection: _Exchange | None, body: bytes) -> None:
            idle.put_nowait(await self._one(connection, body))

        loop = asyncio.get_running_loop()
        started = loop.time()
        for index, body in enumerate(bodies):
            due = started + index / rate_per_s
            delay = due - loop.time()
            if delay > 0.001:
                await asyncio.sleep(delay)
            connection = await idle.get()
            task = loop.create_task(run_one(connection, body))
            pending.add(task)
            task.add_done_callback(pending.discard)
            report.sent += 1
        report.sending_s = loop.time() - started + 1.0 / rate_per_s
        if pending:
            await asyncio.gather(*pending)
        report.elapsed_s = loop.time() - started
        while not idle.empty():
            connection = idle.get_nowait()
            if connection is not None:
                connection.close()
        return report


async def send_traffic(
    target_url: str,
    bodies: list[bytes],
    rate_per_s: float,
    *,
    concurrency: int = 64,
    timeout_ms: float = 1000.0,
    headers: dict[str, str] | None = None,
) -> TrafficReport:
    """Sends `bodies` to `target_url` at `rate_per_s`; returns what was sent and received."""
    sender = TrafficSender(
        target_url, concurrency=concurrency, timeout_ms=timeout_ms, headers=headers
    )
    return await sender.run(bodies, rate_per_s)
