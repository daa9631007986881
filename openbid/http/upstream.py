"""The fan-out client's machinery: keep-alive connections to partners, per-host pools, deadlines.

A connection carries one request at a time and parses its response with httptools. Every
failure is an `UpstreamError` whose `kind` says how it failed (`timeout`, `connect`, `reset`,
`malformed`, `too_large`, `busy`: the host's connection cap, `forbidden`: a URL a DSP chose
that resolves to our own network), for metrics and circuit breakers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import socket
import ssl
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING

import httptools

from openbid.errors import OpenbidError

if TYPE_CHECKING:
    from openbid.http.client import FanoutClient

log = logging.getLogger("openbid.http.client")

MAX_RESPONSE_HEAD_BYTES = 65536
"""Status line and headers of a response: past this it is refused as `too_large`."""


class UpstreamError(OpenbidError):
    """A call to a demand partner failed; `kind` says how."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class UpstreamResponse:
    """A complete response. Headers stay raw bytes until asked for (`headers`)."""

    __slots__ = ("status", "raw_headers", "body", "received_at")

    def __init__(
        self, status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes, received_at: float
    ) -> None:
        self.status = status
        self.raw_headers = raw_headers
        self.body = body
        self.received_at = received_at
        """`time.perf_counter()` when the response was complete (the loop clock is too coarse)."""

    @property
    def headers(self) -> dict[str, str]:
        return {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in self.raw_headers
        }


class Call:
    """A request in flight whose outcome goes to a callback, called as soon as it settles
    (`FanoutClient.start_call`): all an auction needs of a DSP call, for less than a future
    (no loop callback to schedule, nothing to unhook). `response` or `error` is set once.

    `on_done(call)` runs inside the client's own I/O callbacks: it must be quick, must not
    raise, and must not start a request (it could be given the very connection whose read
    is still being parsed)."""

    __slots__ = ("response", "error", "_on_done")

    def __init__(self, on_done: Callable[[Call], object]) -> None:
        self.response: UpstreamResponse | None = None
        self.error: UpstreamError | None = None
        self._on_done = on_done

    def done(self) -> bool:
        return self.response is not None or self.error is not None

    def set_result(self, response: UpstreamResponse) -> None:
        if self.done():
            raise asyncio.InvalidStateError("the call has settled")
        self.response = response
        self._on_done(self)

    def set_exception(self, error: UpstreamError) -> None:
        if self.done():
            raise asyncio.InvalidStateError("the call has settled")
        self.error = error
        self._on_done(self)


# What a connection settles: a future (`start_post`, `post`, `get`) or a `Call`.
Waiter = asyncio.Future[UpstreamResponse] | Call
# How to send a request again on a new connection: client, request, deadline, want_headers,
# public_only. Only for idempotent requests (RFC 9110 9.2.2): a POST may have been read.
Retry = tuple["FanoutClient", bytes, float, bool, bool]


class Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight on it."""

    def __init__(self, pool: Pool, max_body_bytes: int, max_head_bytes: int) -> None:
        self._pool = pool
        self._max_body_bytes = max_body_bytes
        self._max_head_bytes = max_head_bytes
        # Two parsers, each made on first use and kept for the connection's later responses
        # (making one looks up every callback name: 1-2 µs a call). Bid responses need no
        # headers: the lean parser, given only these callbacks, skips the per-header calls.
        # The first response of a connection is read in full: one that ends its body by
        # closing (HTTP/1.0 servers) is known by its headers, and it is always the first.
        self._full_parser: httptools.HttpResponseParser | None = None
        self._lean_parser: httptools.HttpResponseParser | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self.transport: asyncio.Transport | None = None
        self._waiter: Waiter | None = None
        self._sent = 0  # requests sent on this connection: names the one a deadline is for
        self.used_at = 0.0  # loop time the last request was sent
        self._headers: list[tuple[bytes, bytes]] = []
        self._gzip = False
        self._framed = False  # the response announced its length (Content-Length or chunked)
        self._ends_at_eof = False  # ... or its body ends when the connection closes
        self._head_done = False
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self.reusable = False
        self._answered = False
        self._retry: Retry | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.reusable = False
        self._pool.forget(self)
        self._pool.open_connections -= 1
        retry, self._retry = self._retry, None
        waiter = self._waiter
        if waiter is None or waiter.done():
            self._waiter = None
            return
        if self._head_done and self._ends_at_eof:
            # A body delimited by the close (RFC 9112 6.3): complete, not a failure.
            self._complete(waiter, self._parser.get_status_code())  # type: ignore[union-attr]
            return
        if retry is not None and not self._answered:
            # A reused connection the peer had closed while idle (its keep-alive timeout),
            # for an idempotent request: it goes again on a new connection.
            self._waiter = None
            client, request, deadline, want_headers, public_only = retry
            client._connect(self._pool, request, waiter, deadline, want_headers, public_only)
            return
        self._fail(UpstreamError("reset", f"connection closed: {exc or 'by peer'}"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes no request asked for (HTTP/1.1 servers answer, never speak first): the
            # stream can no longer be trusted to line up with our requests.
            self.abort()
            return
        self._answered = True
        if not self._head_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)  # type: ignore[union-attr]
        except httptools.HttpParserUpgrade:
            return  # a 101: on_message_complete failed the call and dropped the connection
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError("malformed", f"malformed HTTP response: {exc}"))
            return
        if not self._head_done and self._head_bytes > self._max_head_bytes:
            limit = self._max_head_bytes
            self._fail(UpstreamError("too_large", f"response head over {limit} bytes"))

    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second response after ours, in the same read
            self.abort()
        self._headers = []
        self._gzip = False
        self._framed = False
        self._head_done = False
        self._body = []
        self._body_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        size = len(name)
        if size == 16 and name.lower() == b"content-encoding":
            self._gzip = value.strip().lower() == b"gzip"
        elif (size == 14 and name.lower() == b"content-length") or (
            size == 17 and name.lower() == b"transfer-encoding"
        ):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._head_done = True
        status = self._parser.get_status_code()  # type: ignore[union-attr]
        self._ends_at_eof = not self._framed and status >= 200 and status not in (204, 304)

    def on_lean_headers_complete(self) -> None:
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body_bytes:
            self._fail(UpstreamError("too_large", f"response over {self._max_body_bytes} bytes"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if waiter is None:
            return
        status = self._parser.get_status_code()  # type: ignore[union-attr]
        if status < 200:
            if status == 101:  # we never ask to switch protocols
                self._fail(UpstreamError("malformed", "101 Switching Protocols: not asked for"))
            return  # an interim response (100 Continue, 103 Early Hints): the answer follows
        if waiter.done():
            # The caller gave up on it (the auction's deadline passed): the answer is
            # dropped, the connection, at a message boundary, serves the next request.
            self._waiter = None
            self._retry = None
            self.reusable = self._parser.should_keep_alive()  # type: ignore[union-attr]
            self._pool.release(self)
            return
        self._complete(waiter, status)

    def _complete(self, waiter: Waiter, status: int) -> None:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        if self._gzip:
            # The size cap counts wire bytes; inflation gets its own, or a 200 KB body could
            # inflate to 200 MB on the event loop.
            inflater = zlib.decompressobj(31)
            try:
                body = inflater.decompress(body, self._max_body_bytes)
            except zlib.error as exc:
                self._fail(UpstreamError("malformed", f"bad gzip body: {exc}"))
                return
            if inflater.unconsumed_tail:
                limit = self._max_body_bytes
                self._fail(UpstreamError("too_large", f"response inflates over {limit} bytes"))
                return
            if not inflater.eof:
                self._fail(UpstreamError("malformed", "truncated gzip body"))
                return
        self._waiter = None
        self._retry = None
        # Back to the pool before the caller wakes, so its next call can reuse it.
        self.reusable = self._parser.should_keep_alive()  # type: ignore[union-attr]
        self._pool.release(self)
        waiter.set_result(UpstreamResponse(status, self._headers, body, time.perf_counter()))

    def _fail(self, error: UpstreamError) -> None:
        """Ends the request in flight (if any) with `error`; the connection is not reused."""
        waiter = self._waiter
        self._waiter = None
        self._retry = None
        self.abort()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def on_deadline(self) -> None:
        """The deadline of the request in flight has passed (`Deadlines` checked that it
        is the one the deadline was set for and that it is still out)."""
        self._fail(UpstreamError("timeout", "no complete response before the deadline"))

    def send(
        self,
        request: bytes,
        waiter: Waiter,
        deadlines: Deadlines,
        deadline: float,
        want_headers: bool,
        now: float,
        retry: Retry | None = None,
    ) -> None:
        """Sends `request`; with `retry` (an idempotent request on a reused connection), it
        is sent again on a new connection if this one turns out closed before any byte of
        a response arrived."""
        self._waiter = waiter
        self._retry = retry
        self._answered = False
        self._head_done = False
        self._head_bytes = 0
        self.reusable = False
        self.used_at = now
        # A connection is sent a request only when idle: its last response, if any, parsed
        # whole, so the parser is between messages, as keep-alive leaves it.
        if want_headers or self._sent == 0:
            if self._full_parser is None:
                self._full_parser = httptools.HttpResponseParser(self)
            self._parser = self._full_parser
        else:
            if self._lean_parser is None:
                self._lean_parser = httptools.HttpResponseParser(
                    SimpleNamespace(
                        on_message_begin=self.on_message_begin,
                        on_headers_complete=self.on_lean_headers_complete,
                        on_body=self.on_body,
                        on_message_complete=self.on_message_complete,
                    )
                )
            self._parser = self._lean_parser
            self._ends_at_eof = False
        self._sent += 1
        deadlines.add(deadline, self, self._sent)
        assert self.transport is not None
        self.transport.write(request)

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()
            self.transport = None


class Deadlines:
    """Deadline timers of one loop, one per millisecond in which requests fall due: the
    calls of an auction share theirs (a loop timer and its cancel cost more than the rest
    of a call's bookkeeping). A deadline is rounded up to the millisecond, the resolution
    of uvloop's clock anyway; answered requests are not unhooked, their entries are
    skipped when the timer fires."""

    __slots__ = ("loop", "_due")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._due: dict[int, list[tuple[Connection, int]]] = {}

    def add(self, deadline: float, connection: Connection, sent: int) -> None:
        millis = math.ceil(deadline * 1000)
        due = self._due.get(millis)
        if due is None:
            due = self._due[millis] = []
            self.loop.call_at(millis / 1000, self._fire, millis)
        due.append((connection, sent))

    def _fire(self, millis: int) -> None:
        for connection, sent in self._due.pop(millis, ()):
            if connection._sent == sent and connection._waiter is not None:  # still out
                try:
                    connection.on_deadline()
                except Exception:  # one bad callback must not leave the others hanging
                    log.exception("a request's deadline handler failed")


class Pool:
    """Keep-alive connections to one host:port: at most `max_connections` open or opening
    (a slow host must not take every file descriptor), `max_idle` of them kept idle, none
    reused after `idle_timeout_s` unused (servers close idle connections after a keep-alive
    timeout of their own, often 5 s: a request sent as that close crosses it is lost)."""

    def __init__(
        self,
        host: str,
        port: int,
        max_idle: int,
        max_body_bytes: int,
        tls: bool = False,
        max_connections: int = 1024,
        idle_timeout_s: float = 4.0,
        max_head_bytes: int = MAX_RESPONSE_HEAD_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.max_idle = max_idle
        self.max_body_bytes = max_body_bytes
        self.max_head_bytes = max_head_bytes
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.idle: deque[Connection] = deque()
        self.open_connections = 0
        """Connections made and not yet lost, plus those being opened."""

    def forget(self, connection: Connection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)

    def take_idle(self, now: float) -> Connection | None:
        """The most recently used idle open connection, or None."""
        idle = self.idle
        while idle:
            connection = idle.pop()
            if connection.transport is not None and not connection.transport.is_closing():
                if now - connection.used_at > self.idle_timeout_s:
                    connection.abort()  # and every one idle before it
                    self.close()
                    return None
                return connection
        return None

    async def connect(self, deadline: float, public_only: bool = False) -> Connection:
        """A new connection; with `public_only`, refused unless the host resolves only to
        public addresses (URLs a DSP chose must not reach our own network)."""
        if self.open_connections >= self.max_connections:
            raise UpstreamError("busy", f"{self.max_connections} connections open to {self.host}")
        self.open_connections += 1  # the slot is ours until connection_lost gives it back
        made = False
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                context = await tls_context() if self.tls else None
                host: str = self.host
                if public_only:
                    host = await _public_address(loop, self.host, self.port)
                _, protocol = await loop.create_connection(
                    lambda: Connection(self, self.max_body_bytes, self.max_head_bytes),
                    host,
                    self.port,
                    ssl=context,
                    server_hostname=self.host if context else None,
                )
                made = True
        except TimeoutError:
            raise UpstreamError("timeout", "timed out connecting") from None
        except OSError as exc:
            raise UpstreamError("connect", f"cannot connect: {exc.strerror or exc}") from None
        except (UnicodeError, ValueError) as exc:  # a host name getaddrinfo cannot encode
            raise UpstreamError("connect", f"cannot connect: {exc}") from None
        finally:
            if not made:
                self.open_connections -= 1
        return protocol

    def release(self, connection: Connection) -> None:
        if (
            connection.reusable
            and connection.transport is not None
            and len(self.idle) < self.max_idle
        ):
            self.idle.append(connection)
        else:
            connection.abort()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().abort()


_tls_lock = threading.Lock()
_tls_default: ssl.SSLContext | None = None


def _build_tls_context() -> ssl.SSLContext:
    global _tls_default
    with _tls_lock:
        if _tls_default is None:
            _tls_default = ssl.create_default_context()
        return _tls_default


async def tls_context() -> ssl.SSLContext:
    """The process's one client TLS context (system CAs, hostname checks). Loading the CA
    store takes tens of milliseconds: it is built once, in a worker thread, never on the
    event loop, and shared by every https pool."""
    context = _tls_default
    if context is None:
        # Shielded: a caller whose deadline passes must not cancel the build for the others.
        context = await asyncio.shield(asyncio.to_thread(_build_tls_context))
    return context


async def _public_address(loop: asyncio.AbstractEventLoop, host: str, port: int) -> str:
    """The first address of `host`, if every address it resolves to is public."""
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UpstreamError("connect", f"cannot resolve {host}: {exc}") from None
    addresses = [info[4][0] for info in infos]
    for address in addresses:
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
            raise UpstreamError("forbidden", f"{host} resolves to a non-public address {address}")
    if not addresses:
        raise UpstreamError("connect", f"cannot resolve {host}")
    return addresses[0]
