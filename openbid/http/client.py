"""The fan-out client: HTTP/1.1 POSTs to demand partners over pooled keep-alive connections.

A lean asyncio Protocol with httptools' parser: the benchmark (`bench/fanout.py`) measured it
several times faster than aiohttp on one core, which decides how many DSPs an auction can
afford to call. Every call has a hard deadline; a connection whose response did not finish
in time is aborted (it cannot be reused mid-response), and every failure is classified
(`timeout`, `connect`, `reset`, `malformed`, `too_large`, `busy`: the host's connection cap,
`forbidden`: a URL a DSP chose that resolves to our own network) for metrics and circuit
breakers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ipaddress
import logging
import math
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import Callable
from types import SimpleNamespace
from urllib.parse import quote, urlsplit

import httptools

from openbid.errors import OpenbidError

log = logging.getLogger(__name__)

# Characters left as they are when percent-encoding a DSP's URL (the reserved set and `%`).
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
_MAX_POOLS = 1024


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
_Waiter = asyncio.Future[UpstreamResponse] | Call


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight on it."""

    def __init__(self, pool: _Pool, max_body_bytes: int) -> None:
        self._pool = pool
        self._max_body_bytes = max_body_bytes
        # Two parsers, each made on first use and kept for the connection's later responses
        # (making one looks up every callback name: 1-2 µs a call). Bid responses need no
        # headers: the lean parser, given only these callbacks, skips the per-header calls.
        self._full_parser: httptools.HttpResponseParser | None = None
        self._lean_parser: httptools.HttpResponseParser | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self.transport: asyncio.Transport | None = None
        self._waiter: _Waiter | None = None
        self._sent = 0  # requests sent on this connection: names the one a deadline is for
        self._headers: list[tuple[bytes, bytes]] = []
        self._gzip = False
        self._body: list[bytes] = []
        self._body_bytes = 0
        self.reusable = False
        self._answered = False
        # For a request sent on a reused connection: how to send it again on a new one.
        self._retry: tuple[FanoutClient, bytes, float, bool, bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.reusable = False
        self._pool.forget(self)
        self._pool.open_connections -= 1
        retry, self._retry = self._retry, None
        waiter = self._waiter
        if retry is not None and not self._answered and waiter is not None and not waiter.done():
            # A reused connection the peer had closed while idle (its keep-alive timeout):
            # the request never reached it, so it goes again on a new connection.
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
        try:
            self._parser.feed_data(data)  # type: ignore[union-attr]
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError("malformed", f"malformed HTTP response: {exc}"))

    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second response after ours, in the same read
            self.abort()
        self._headers = []
        self._gzip = False
        self._body = []
        self._body_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if len(name) == 16 and name.lower() == b"content-encoding":
            self._gzip = value.strip().lower() == b"gzip"

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
        if 100 <= status < 200 and status != 101:
            return  # an interim response (100 Continue, 103 Early Hints): the answer follows
        if waiter.done():
            # The caller gave up on it (the auction's deadline passed): the answer is
            # dropped, the connection, at a message boundary, serves the next request.
            self._waiter = None
            self._retry = None
            self.reusable = self._parser.should_keep_alive()  # type: ignore[union-attr]
            self._pool.release(self)
            return
        body = b"".join(self._body)
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
        self._waiter = None
        self._retry = None
        # Back to the pool before the caller wakes, so its next call can reuse it.
        self.reusable = self._parser.should_keep_alive()
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
        """The deadline of the request in flight has passed (`_Deadlines` checked that it
        is the one the deadline was set for and that it is still out)."""
        self._fail(UpstreamError("timeout", "no complete response before the deadline"))

    def send(
        self,
        request: bytes,
        waiter: _Waiter,
        deadlines: _Deadlines,
        deadline: float,
        want_headers: bool,
        retry: FanoutClient | None = None,
        public_only: bool = False,
    ) -> None:
        """Sends `request`; with `retry` (for a reused connection), that client resends it
        on a new connection (`public_only` as asked) if this one turns out closed before
        any byte of a response arrived."""
        self._waiter = waiter
        self._retry = (
            None if retry is None else (retry, request, deadline, want_headers, public_only)
        )
        self._answered = False
        self.reusable = False
        # A connection is sent a request only when idle: its last response, if any, parsed
        # whole, so the parser is between messages, as keep-alive leaves it.
        if want_headers:
            if self._full_parser is None:
                self._full_parser = httptools.HttpResponseParser(self)
            self._parser = self._full_parser
        else:
            if self._lean_parser is None:
                self._lean_parser = httptools.HttpResponseParser(
                    SimpleNamespace(
                        on_message_begin=self.on_message_begin,
                        on_body=self.on_body,
                        on_message_complete=self.on_message_complete,
                    )
                )
            self._parser = self._lean_parser
        self._sent += 1
        deadlines.add(deadline, self, self._sent)
        assert self.transport is not None
        self.transport.write(request)

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()
            self.transport = None


class _Deadlines:
    """Deadline timers of one loop, one per millisecond in which requests fall due: the
    calls of an auction share theirs (a loop timer and its cancel cost more than the rest
    of a call's bookkeeping). A deadline is rounded up to the millisecond, the resolution
    of uvloop's clock anyway; answered requests are not unhooked, their entries are
    skipped when the timer fires."""

    __slots__ = ("loop", "_due")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._due: dict[int, list[tuple[_Connection, int]]] = {}

    def add(self, deadline: float, connection: _Connection, sent: int) -> None:
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


class _Pool:
    """Keep-alive connections to one host:port: at most `max_connections` open or opening
    (a slow host must not take every file descriptor), `max_idle` of them kept idle."""

    def __init__(
        self,
        host: str,
        port: int,
        max_idle: int,
        max_body_bytes: int,
        tls: bool = False,
        max_connections: int = 1024,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl.create_default_context() if tls else None
        self.max_idle = max_idle
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.idle: deque[_Connection] = deque()
        self.open_connections = 0
        """Connections made and not yet lost, plus those being opened."""

    def forget(self, connection: _Connection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)

    def take_idle(self) -> _Connection | None:
        """An idle open connection, or None."""
        while self.idle:
            connection = self.idle.pop()
            if connection.transport is not None and not connection.transport.is_closing():
                return connection
        return None

    async def connect(self, deadline: float, public_only: bool = False) -> _Connection:
        """A new connection; with `public_only`, refused unless the host resolves only to
        public addresses (URLs a DSP chose must not reach our own network)."""
        if self.open_connections >= self.max_connections:
            raise UpstreamError("busy", f"{self.max_connections} connections open to {self.host}")
        self.open_connections += 1  # the slot is ours until connection_lost gives it back
        made = False
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                host: str = self.host
                if public_only:
                    host = await _public_address(loop, self.host, self.port)
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self, self.max_body_bytes),
                    host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
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

    def release(self, connection: _Connection) -> None:
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


class FanoutClient:
    """POSTs bodies to URLs with a deadline each, reusing connections per host.

    >>> import asyncio
    >>> from openbid.http.server import HttpServer, Response
    >>> async def dsp(request):
    ...     return Response(200, b'{"id":"1"}')
    >>> async def main():
    ...     server = HttpServer(dsp)
    ...     port = await server.start()
    ...     client = FanoutClient()
    ...     response = await client.post(f"http://127.0.0.1:{port}/bid", b"{}", timeout_s=1.0)
    ...     client.close()
    ...     await server.stop()
    ...     return response.status, response.body
    >>> asyncio.run(main())
    (200, b'{"id":"1"}')
    """

    def __init__(
        self,
        *,
        max_idle_per_host: int = 256,
        max_body_bytes: int = 1 << 20,
        max_connections_per_host: int = 1024,
    ) -> None:
        self._max_connections = max_connections_per_host
        self._pools: dict[tuple[str, str, int, bool], _Pool] = {}
        self._targets: dict[str, tuple[_Pool, bytes]] = {}
        self._max_idle = max_idle_per_host
        self._max_body_bytes = max_body_bytes
        self._connecting: set[asyncio.Task[None]] = set()
        self._deadlines: _Deadlines | None = None

    def _deadlines_of(self, loop: asyncio.AbstractEventLoop) -> _Deadlines:
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop is not loop:  # a client outlives a loop
            deadlines = self._deadlines = _Deadlines(loop)
        return deadlines

    def _target(
        self, url: str, method: str = "POST", public_only: bool = False
    ) -> tuple[_Pool, bytes]:
        """The pool and request head for `url`. Requests that must reach only public
        addresses (`public_only`) get pools of their own: a connection another request
        opened without that check is never theirs to reuse."""
        cache_key = method + ("!" if public_only else " ") + url
        target = self._targets.get(cache_key)
        if target is None:
            # URLs come from DSPs (nurl, burl, lurl): anything malformed is that DSP's
            # failure (UpstreamError), never ours.
            try:
                parts = urlsplit(url)
                port = parts.port
                host = parts.hostname
                if parts.scheme not in ("http", "https") or not host:
                    raise ValueError("not an http(s) URL")
                host_header = host.encode("idna").decode("ascii")
                if port is not None:
                    host_header += f":{port}"
            except (ValueError, UnicodeError) as exc:
                raise UpstreamError("connect", f"bad URL {url[:200]!r}: {exc}") from None
            tls = parts.scheme == "https"
            port = port or (443 if tls else 80)
            pool_key = (parts.scheme, host, port, public_only)
            pool = self._pools.get(pool_key)
            if pool is None:
                if len(self._pools) >= _MAX_POOLS:  # notice hosts vary: forget unused ones
                    for key, unused in list(self._pools.items()):
                        if unused.open_connections == 0:
                            del self._pools[key]
                    self._targets.clear()
                pool = _Pool(
                    host, port, self._max_idle, self._max_body_bytes, tls, self._max_connections
                )
                self._pools[pool_key] = pool
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if not path.isascii():  # what a browser sends for non-ASCII characters
                path = quote(path, safe=_URL_SAFE)
            head = f"{method} {path} HTTP/1.1\r\nhost: {host_header}\r\n"
            if method == "POST":
                head += "content-type: application/json\r\nx-openrtb-version: 2.6\r\n"
            target = (pool, head.encode("latin-1"))
            if len(self._targets) < 10_000:  # notice URLs vary: cache only the steady ones
                self._targets[cache_key] = target
        return target

    def _post_request(
        self, url: str, body: bytes, gzip_body: bool, headers: bytes = b""
    ) -> tuple[_Pool, bytes]:
        """The pool for `url` and the whole POST of `body` (gzip'd when asked) as sent."""
        if gzip_body:
            body = gzip.compress(body, compresslevel=1, mtime=0)
            headers += b"content-encoding: gzip\r\naccept-encoding: gzip\r\n"
        pool, head = self._target(url)
        return pool, b"%scontent-length: %d\r\n%s\r\n%s" % (head, len(body), headers, body)

    def start_post(
        self,
        url: str,
        body: bytes,
        *,
        timeout_s: float,
        gzip_body: bool = False,
        headers: bytes = b"",
    ) -> asyncio.Future[UpstreamResponse]:
        """Sends `body` now (on an idle connection) and returns the future of the response,
        which fails with `UpstreamError` unless a complete response arrives in time.
        No task is created unless a new connection must be opened first.
        `headers` are extra header lines, each ending in CRLF."""
        pool, request = self._post_request(url, body, gzip_body, headers)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[UpstreamResponse] = loop.create_future()
        self._start(loop, pool, request, waiter, timeout_s, want_headers=gzip_body)
        return waiter

    def start_call(
        self,
        url: str,
        body: bytes,
        on_done: Callable[[Call], object],
        *,
        timeout_s: float,
        gzip_body: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Call:
        """`start_post` with the outcome delivered to `on_done(call)` rather than a future:
        the auction's way to call its DSPs. The call settles within `timeout_s`."""
        pool, request = self._post_request(url, body, gzip_body)
        call = Call(on_done)
        self._start(
            loop or asyncio.get_running_loop(),
            pool,
            request,
            call,
            timeout_s,
            want_headers=gzip_body,
        )
        return call

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        timeout_s: float,
        gzip_body: bool = False,
        headers: bytes = b"",
    ) -> UpstreamResponse:
        """`start_post`, awaited."""
        return await self.start_post(
            url, body, timeout_s=timeout_s, gzip_body=gzip_body, headers=headers
        )

    async def get(
        self, url: str, *, timeout_s: float, public_only: bool = False, headers: bytes = b""
    ) -> UpstreamResponse:
        """A GET (notices, pixels); raises `UpstreamError` like `post`. `public_only`: for
        URLs a DSP chose, refuse hosts that resolve to loopback or private addresses.
        `headers` are extra header lines, each ending in CRLF (a browser's cookies)."""
        pool, head = self._target(url, "GET", public_only)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[UpstreamResponse] = loop.create_future()
        self._start(
            loop,
            pool,
            head + headers + b"\r\n",
            waiter,
            timeout_s,
            want_headers=True,
            public_only=public_only,
        )
        return await waiter

    def _start(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: _Pool,
        request: bytes,
        waiter: _Waiter,
        timeout_s: float,
        *,
        want_headers: bool,
        public_only: bool = False,
    ) -> None:
        deadline = loop.time() + timeout_s
        connection = pool.take_idle()
        if connection is not None:
            deadlines = self._deadlines_of(loop)
            connection.send(request, waiter, deadlines, deadline, want_headers, self, public_only)
        else:
            self._connect(pool, request, waiter, deadline, want_headers, public_only)

    def _connect(
        self,
        pool: _Pool,
        request: bytes,
        waiter: _Waiter,
        deadline: float,
        want_headers: bool,
        public_only: bool = False,
    ) -> None:
        """Sends `request` on a new connection, opened by a task."""
        task = asyncio.get_running_loop().create_task(
            self._connect_and_send(pool, request, waiter, deadline, want_headers, public_only)
        )
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect_and_send(
        self,
        pool: _Pool,
        request: bytes,
        waiter: _Waiter,
        deadline: float,
        want_headers: bool,
        public_only: bool = False,
    ) -> None:
        try:
            connection = await pool.connect(deadline, public_only)
        except UpstreamError as error:
            if not waiter.done():
                waiter.set_exception(error)
            return
        except Exception as exc:  # the waiter must settle whatever happens
            if not waiter.done():
                waiter.set_exception(UpstreamError("connect", f"cannot connect: {exc!r}"))
            return
        if waiter.done():  # abandoned meanwhile
            pool.release(connection)
            return
        deadlines = self._deadlines_of(asyncio.get_running_loop())
        connection.send(request, waiter, deadlines, deadline, want_headers)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
