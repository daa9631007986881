"""A lean HTTP/1.1 server on asyncio + httptools for openbid's hot paths.

Frameworks cost more per request than an auction can spare, so the servers share this small
core: keep-alive, pipelined requests answered in order, a body size limit (413, answered as
soon as the headers announce it), limits on the request line (414) and headers (431), a
bound on requests in flight (503 with `Retry-After`, never a hang), backpressure both ways
(a client that pipelines without reading stops being read; a client that does not read its
responses stops being written to), and graceful stop. Header values that would split a
response (CR, LF) or that HTTP/1.1 cannot carry are refused as the handler's error (500).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from urllib.parse import parse_qsl

import httptools

log = logging.getLogger(__name__)

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
MAX_URL_BYTES = 8192
MAX_HEADER_BYTES = 32768
"""Request line and header limits, like common proxies' defaults (nginx: 4 x 8 KiB)."""
MAX_PIPELINED = 32
"""Requests parsed ahead of their responses before the connection stops being read."""


class _Reject(Exception):
    """Raised in a parser callback to stop parsing a request we answer with an error."""


class Request:
    """One parsed HTTP request. Header names are lower-case."""

    __slots__ = ("method", "path", "query_string", "headers", "body", "client")

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: dict[str, str],
        body: bytes,
        client: str,
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.client = client

    def query(self) -> dict[str, str]:
        """The query parameters (the last value wins for repeated names)."""
        return dict(parse_qsl(self.query_string, keep_blank_values=True))


class Response:
    """An HTTP response; `headers` are extra headers beyond length, type and connection."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


Handler = Callable[[Request], Awaitable[Response]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(request: Request, trusted: Sequence[Network]) -> str:
    """The client's IP: the connection's peer, or, when the peer is one of our `trusted`
    proxies, the right-most `X-Forwarded-For` address that no trusted proxy added (anything
    left of it is whatever the client chose to send).

    >>> lb = [ipaddress.ip_network("10.0.0.0/8")]
    >>> req = Request("GET", "/", "", {"x-forwarded-for": "6.6.6.6, 203.0.113.9"}, b"", "10.1.2.3")
    >>> client_address(req, lb), client_address(req, [])
    ('203.0.113.9', '10.1.2.3')
    """
    address = request.client
    forwarded = request.headers.get("x-forwarded-for")
    if not trusted or not forwarded:
        return address
    hops = [hop.strip() for hop in forwarded.split(",")]
    while hops and _in_networks(address, trusted):
        candidate = hops.pop()
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            break  # a malformed hop: keep the last address we can vouch for
        address = candidate
    return address


def _in_networks(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _serialize(response: Response, keep_alive: bool) -> bytes:
    head = [
        b"HTTP/1.1 %d %s\r\n" % (response.status, _REASONS.get(response.status, b"Unknown")),
        b"content-length: %d\r\n" % len(response.body),
    ]
    if response.body or response.status not in (204, 304):
        head.append(b"content-type: %s\r\n" % response.content_type.encode())
    for name, value in response.headers:
        line = f"{name}: {value}"
        if "\r" in line or "\n" in line or "\0" in line:
            raise ValueError(f"header {name!r} holds a line break or NUL")
        head.append(line.encode("latin-1") + b"\r\n")  # UnicodeEncodeError is a ValueError
    if not keep_alive:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + response.body


class _State:
    """Server-wide counters shared by every connection."""

    __slots__ = ("in_flight", "max_in_flight", "max_body_bytes", "connections", "closing")

    def __init__(self, max_in_flight: int, max_body_bytes: int) -> None:
        self.in_flight = 0
        self.max_in_flight = max_in_flight
        self.max_body_bytes = max_body_bytes
        self.connections: set[_HttpProtocol] = set()
        self.closing = False


class _HttpProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, state: _State, idle_timeout_s: float) -> None:
        self._handler = handler
        self._state = state
        self._idle_timeout_s = idle_timeout_s
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client = ""
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._too_large = False
        self._head_bytes = 0
        self._queue: deque[tuple[Request | Response, bool]] = deque()
        self._busy = False
        self._reading = True
        self._writable: asyncio.Future[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._loop = asyncio.get_running_loop()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._client = peer[0] if peer else ""
        self._state.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._state.connections.discard(self)
        self._transport = None
        if self._idle_handle:
            self._idle_handle.cancel()
        self._resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        self._resume_writing()

    def _resume_writing(self) -> None:
        if self._writable is not None:
            if not self._writable.done():
                self._writable.set_result(None)
            self._writable = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except _Reject:
            pass
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Reject):
                self._reply_and_close(Response(400, b'{"error":"malformed HTTP request"}'))
        except httptools.HttpParserUpgrade:
            self._reply_and_close(Response(400, b'{"error":"upgrades are not supported"}'))
        except httptools.HttpParserError:
            self._reply_and_close(Response(400, b'{"error":"malformed HTTP request"}'))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_bytes = 0
        self._too_large = False
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL_BYTES:
            self._reject(414, b'{"error":"request line exceeds %d bytes"}' % MAX_URL_BYTES)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEADER_BYTES:
            self._reject(431, b'{"error":"headers exceed %d bytes"}' % MAX_HEADER_BYTES)
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._state.max_body_bytes:
            # Answer now rather than read (and drop) a body we will refuse.
            limit = self._state.max_body_bytes
            self._reject(413, b'{"error":"request body exceeds %d bytes"}' % limit)

    def _reject(self, status: int, body: bytes) -> None:
        """Answers the request being parsed with an error (after those queued before it),
        stops reading the connection and closes it after that answer."""
        self._enqueue(Response(status, body), keep_alive=False)
        if self._transport is not None:
            self._transport.pause_reading()
            self._reading = False
        raise _Reject

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._state.max_body_bytes:
            self._too_large = True
            self._body = []
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self._parser.should_keep_alive() and not self._state.closing
        if self._too_large:
            limit = self._state.max_body_bytes
            item: Request | Response = Response(
                413, b'{"error":"request body exceeds %d bytes"}' % limit
            )
            keep_alive = False
        else:
            parsed = httptools.parse_url(self._url)
            item = Request(
                self._parser.get_method().decode(),
                parsed.path.decode("latin-1"),
                (parsed.query or b"").decode("latin-1"),
                self._headers,
                b"".join(self._body),
                self._client,
            )
        self._enqueue(item, keep_alive)

    def _enqueue(self, item: Request | Response, keep_alive: bool) -> None:
        self._queue.append((item, keep_alive))
        if len(self._queue) >= MAX_PIPELINED and self._reading and self._transport is not None:
            self._transport.pause_reading()  # resumed as the queue drains
            self._reading = False
        if not self._busy:
            self._busy = True
            # Referenced here: the loop holds tasks only weakly.
            self._drain_task = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        state = self._state
        try:
            while self._queue and self._transport is not None:
                item, keep_alive = self._queue.popleft()
                if not self._reading and keep_alive and len(self._queue) < MAX_PIPELINED // 2:
                    self._transport.resume_reading()
                    self._reading = True
                if isinstance(item, Response):
                    response = item
                elif state.in_flight >= state.max_in_flight:
                    response = Response(
                        503, b'{"error":"overloaded"}', headers=[("retry-after", "1")]
                    )
                else:
                    state.in_flight += 1
                    try:
                        response = await self._handler(item)
                    except Exception:
                        log.exception("request handler failed", extra={"path": item.path})
                        response = Response(500, b'{"error":"internal error"}')
                    finally:
                        state.in_flight -= 1
                if self._transport is None:
                    return
                keep_alive = keep_alive and not state.closing
                try:
                    data = _serialize(response, keep_alive)
                except ValueError:
                    log.exception("response cannot be sent", extra={"status": response.status})
                    data = _serialize(Response(500, b'{"error":"internal error"}'), keep_alive)
                if self._writable is not None:  # the client is not reading: wait for it
                    await self._writable
                    if self._transport is None:
                        return
                self._transport.write(data)
                if not keep_alive:
                    self._transport.close()
                    self._queue.clear()
                    return
        finally:
            self._busy = False
            self._arm_idle()

    def _reply_and_close(self, response: Response) -> None:
        if self._transport is not None:
            self._transport.write(_serialize(response, False))
            self._transport.close()

    def _arm_idle(self) -> None:
        """The connection is idle from now: it is closed after `idle_timeout_s` of that.
        One timer per connection, moved on when it fires rather than replaced per request
        (a cancel and a new timer for every request on a keep-alive connection)."""
        self._idle_since = self._loop.time()
        if self._idle_handle is None:
            self._idle_handle = self._loop.call_at(
                self._idle_since + self._idle_timeout_s, self._on_idle
            )

    def _on_idle(self) -> None:
        self._idle_handle = None
        if self._busy or self._transport is None:
            return  # a request is being served: its end arms the timer again
        due = self._idle_since + self._idle_timeout_s
        if self._loop.time() < due:  # requests came and went since it was set
            self._idle_handle = self._loop.call_at(due, self._on_idle)
            return
        self._transport.close()

    def close_if_idle(self) -> None:
        if not self._busy and self._transport is not None:
            self._transport.close()

    @property
    def busy(self) -> bool:
        return self._busy


class HttpServer:
    """Serves `handler` on one listening socket until `stop()`.

    >>> import asyncio
    >>> async def hello(request):
    ...     return Response(200, b"hi", "text/plain")
    >>> async def main():
    ...     server = HttpServer(hello)
    ...     port = await server.start("127.0.0.1", 0)
    ...     reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ...     writer.write(b"GET / HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\n\\r\\n")
    ...     reply = await reader.read()
    ...     writer.close()
    ...     await server.stop()
    ...     return reply.split(b"\\r\\n")[0], reply.endswith(b"hi")
    >>> asyncio.run(main())
    (b'HTTP/1.1 200 OK', True)
    """

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int = 65536,
        max_in_flight: int = 2048,
        idle_timeout_s: float = 75.0,
    ) -> None:
        self._handler = handler
        self._state = _State(max_in_flight, max_body_bytes)
        self._idle_timeout_s = idle_timeout_s
        self._server: asyncio.base_events.Server | None = None

    @property
    def in_flight(self) -> int:
        return self._state.in_flight

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 2048,
        *,
        sock: socket.socket | None = None,
    ) -> int:
        """Starts listening and returns the bound port (useful with `port=0`); `sock`, a
        socket already listening (shared by several worker processes), replaces host/port."""
        loop = asyncio.get_running_loop()
        address: dict = {"sock": sock}
        if sock is None:
            address = {"host": host, "port": port, "reuse_address": True}
        self._server = await loop.create_server(
            lambda: _HttpProtocol(self._handler, self._state, self._idle_timeout_s),
            backlog=backlog,
            **address,
        )
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stops accepting, lets requests in flight finish (up to `grace_s`), closes sockets."""
        if self._server is None:
            return
        self._state.closing = True
        self._server.close()
        deadline = asyncio.get_running_loop().time() + grace_s
        while any(c.busy for c in self._state.connections):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)
        for connection in list(self._state.connections):
            connection.close_if_idle()
        await self._server.wait_closed()
        self._server = None


class Router:
    """Dispatches on (method, path); 404 for an unknown path, 405 for a wrong method.

    HEAD runs the GET handler only for routes added with `safe=True` (no side effects): a
    link checker's HEAD must not run an auction or count an impression.
    """

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Handler]] = {}
        self._safe: set[str] = set()

    def add(self, method: str, path: str, handler: Handler, *, safe: bool = False) -> None:
        self._routes.setdefault(path, {})[method.upper()] = handler
        if safe and method.upper() == "GET":
            self._safe.add(path)

    async def __call__(self, request: Request) -> Response:
        methods = self._routes.get(request.path)
        if methods is None:
            return Response(404, b'{"error":"not found"}')
        handler = methods.get(request.method)
        if handler is None:
            if request.method == "HEAD" and request.path in self._safe:
                response = await methods["GET"](request)
                return Response(response.status, b"", response.content_type, response.headers)
            return Response(
                405, b'{"error":"method not allowed"}', headers=[("allow", ", ".join(methods))]
            )
        return await handler(request)
