"""`server.engine = "granian"`: our handlers behind granian's HTTP/1.1 (Rust: hyper on tokio).

`GranianServer` has the shape of `HttpServer` (`start` on a host and port or on a socket
the caller bound, such as a worker's share of a SO_REUSEPORT port; `stop` with a grace), so
`Platform.serve` and the workers' supervisor run either engine the same way. The HTTP is
granian's: parsing, framing, keep-alive, pipelining, smuggling checks. The adapter turns an
RSGI scope into our `Request` and our `Response` back, and adds what RSGI leaves to the
application: the body limit (413 from Content-Length, or as soon as a chunked body passes
it, never buffered whole), requests in flight (503, as ours), a repeated header's values
joined by `, ` (as ours: an X-Forwarded-For chain over several lines), HEAD sending no body.

Granian runs in this process's event loop: its Rust I/O thread hands requests to the loop
(granian's single-threaded runtime, the fastest of its modes measured with one core each).
That is granian's own worker driven directly rather than its process manager, so our
supervisor (workers, restarts, signals, gathered metrics) stays the one for both engines;
it uses names granian does not document (`granian._granian.RSGIWorker`, `_futures`), which
is why the dependency is pinned to one minor release (`pyproject.toml`, extra `granian`).

Not configurable in granian, so not applied on this engine: `max_connections` (no cap),
`max_header_count` (hyper's own bound: 100 fields), `idle_timeout_s` (no idle timer for
keep-alive connections here). `max_header_bytes` bounds granian's read buffer (so the head),
`header_timeout_s` is granian's header read timeout, and `request_timeout_s` bounds the
body's arrival here (408, as ours; granian has no timer for it).
`docs/operations.md` lists the engines and their conformance results.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from openbid.errors import ConfigError

try:
    from granian._granian import RSGIProtocolClosed
except ImportError:  # the optional extra is not installed: `require_granian` says so

    class RSGIProtocolClosed(Exception):  # type: ignore[no-redef]
        """Stands in for granian's, never raised."""


from openbid.http.messages import Request, Response

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[object]]

_NO_BODY = frozenset({204, 304})
_OVERLOADED_BODY = b'{"error":"overloaded"}'
_TOO_LARGE_BODY = b'{"error":"request body too large"}'
_BAD_LENGTH_BODY = b'{"error":"bad content-length"}'
_INTERNAL_BODY = b'{"error":"internal error"}'
_TIMEOUT_BODY = b'{"error":"request body not received in time"}'
_JSON = [("content-type", "application/json")]
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def granian_available() -> bool:
    """Whether the optional `granian` extra is installed."""
    try:
        import granian._granian  # noqa: F401
    except ImportError:
        return False
    return True


def require_granian() -> None:
    """A `ConfigError` naming `server.engine` when granian is not installed."""
    if not granian_available():
        raise ConfigError(
            'server.engine: "granian" needs the granian package: '
            "pip install 'openbid[granian]' (or set server.engine = \"builtin\")"
        )


def _client_ip(client: str) -> str:
    """The peer's address from RSGI's `host:port` (`[::1]:port` for IPv6)."""
    host = client.rpartition(":")[0]
    if host.startswith("["):
        return host[1:-1]
    return host


def _headers(scope_headers: Any) -> Any:
    """The request headers as the handlers read them. RSGI's mapping answers `.get` with the
    first value of a repeated header; ours joins them (RFC 9110 5.3), so a request with a
    repeated name is copied into a dict, and the others pass as they are (no copy)."""
    if len(scope_headers.values()) == len(scope_headers.keys()):  # keys() has each name once
        return scope_headers
    joined: dict[str, str] = {}
    for name, value in scope_headers.items():
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


class RsgiAdapter:
    """An RSGI application around one of our handlers (a `Router`, or any
    `async (Request) -> Response`)."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int,
        max_in_flight: int,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.body_timeout_s = body_timeout_s
        self.in_flight = 0
        self._heads: dict[str, list[tuple[str, str]]] = {}

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":  # websockets are not enabled: never reached
            return
        if self.in_flight >= self.max_in_flight:
            protocol.response_bytes(503, [*_JSON, ("retry-after", "1")], _OVERLOADED_BODY)
            return
        self.in_flight += 1
        try:
            await self._serve(scope, protocol)
        finally:
            self.in_flight -= 1

    async def _serve(self, scope: Any, protocol: Any) -> None:
        method = scope.method
        headers = _headers(scope.headers)
        body = b""
        if method in _BODY_METHODS:
            try:
                read = await asyncio.wait_for(self._body(headers, protocol), self.body_timeout_s)
            except TimeoutError:  # a trickled body: granian has no timer of its own for it
                protocol.response_bytes(408, [*_JSON, ("connection", "close")], _TIMEOUT_BODY)
                return
            except RSGIProtocolClosed:  # the client left mid-body
                return
            if read is None:
                return
            body = read
        request = Request(
            method, scope.path, scope.query_string, headers, body, _client_ip(scope.client)
        )
        try:
            response = await self.handler(request)
        except Exception:
            log.exception("request handler failed", extra={"path": request.path})
            protocol.response_bytes(500, _JSON, _INTERNAL_BODY)
            return
        if type(response) is not Response:  # streamed or raw replies: test doubles' only
            log.error("a handler returned no Response", extra={"returned": type(response).__name__})
            protocol.response_bytes(500, _JSON, _INTERNAL_BODY)
            return
        self._send(response, protocol, method == "HEAD")

    async def _body(self, headers: Any, protocol: Any) -> bytes | None:
        """The whole body, or None once a 413 (or 400) has been answered."""
        limit = self.max_body_bytes
        announced = headers.get("content-length")
        if announced is not None:
            try:
                length = int(announced)
            except ValueError:  # granian refuses bad lengths itself: never reached
                protocol.response_bytes(400, _JSON, _BAD_LENGTH_BODY)
                return None
            if length > limit:
                protocol.response_bytes(413, [*_JSON, ("connection", "close")], _TOO_LARGE_BODY)
                return None
            return await protocol()
        parts: list[bytes] = []
        size = 0
        async for chunk in protocol:  # chunked: refused as soon as it passes the limit
            size += len(chunk)
            if size > limit:
                protocol.response_bytes(413, [*_JSON, ("connection", "close")], _TOO_LARGE_BODY)
                return None
            parts.append(chunk)
        return b"".join(parts)

    def _send(self, response: Response, protocol: Any, head_only: bool) -> None:
        status = response.status
        if status in _NO_BODY:
            protocol.response_empty(status, list(response.headers))
            return
        head = self._heads.get(response.content_type)
        if head is None:
            head = [("content-type", response.content_type)]
            if len(self._heads) < 64:  # handlers use a handful of types
                self._heads[response.content_type] = head
        if response.headers:
            head = head + list(response.headers)
        if head_only:  # the GET's length, no body (hyper would send none, nor the length)
            head = [*head, ("content-length", str(len(response.body)))]
            protocol.response_empty(status, head)
            return
        protocol.response_bytes(status, head, response.body)


class GranianServer:
    """Serves `handler` through granian on one listening socket until `stop()`; the same
    start/stop as `HttpServer` (the options granian has no equivalent for are listed in
    the module's docstring)."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int = 65536,
        max_in_flight: int = 2048,
        header_timeout_s: float = 10.0,
        request_timeout_s: float = 30.0,
        max_header_bytes: int = 32768,
    ) -> None:
        require_granian()
        self.app = RsgiAdapter(
            handler,
            max_body_bytes=max_body_bytes,
            max_in_flight=max_in_flight,
            body_timeout_s=request_timeout_s,
        )
        self.header_timeout_s = header_timeout_s
        self.max_header_bytes = max_header_bytes
        self._sock: socket.socket | None = None
        self._signal: Any = None
        self._stopped: asyncio.Future[None] | None = None

    @property
    def in_flight(self) -> int:
        return self.app.in_flight

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 2048,
        *,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
    ) -> int:
        """Starts serving (on `sock` if given: bound, listening or not) and returns the port."""
        from granian._futures import _future_watcher_wrapper, _new_cbscheduler
        from granian._granian import RSGIWorker, SocketHolder, WorkerSignal
        from granian.http import HTTP1Settings

        from openbid.http.server import _listening_socket

        loop = asyncio.get_running_loop()
        if sock is None:
            sock = await _listening_socket(loop, host, port, backlog, reuse_port)
        else:
            sock.listen(backlog)
        self._sock = sock
        http1 = HTTP1Settings(
            header_read_timeout=max(1, int(self.header_timeout_s * 1000)),
            keep_alive=True,
            # granian's read buffer bounds a request's head; its default (408 KiB) is larger
            max_buffer_size=max(self.max_header_bytes + 8192, 65536),
            pipeline_flush=True,
        )
        worker = RSGIWorker(
            1,  # worker id (log lines only)
            (None, SocketHolder(os.dup(sock.fileno()), False, backlog)),
            None,  # no IPC with a granian supervisor
            1,  # Rust runtime threads: I/O only, one is enough for one Python thread
            1,  # Rust blocking threads
            1,  # Python blocking threads (RSGI runs on the event loop)
            30,  # their idle timeout, s
            self.app.max_in_flight,  # backpressure: requests handed to Python at once
            "1",  # HTTP/1 only
            http1,
            None,
            False,  # no websockets
            None,  # no static files
            False,  # no TLS: a proxy in front terminates it
            None,
            None,
            None,
            "tls1.3",
            None,
            [],
            False,
            (None, None),  # no granian metrics
        )
        scheduler = _new_cbscheduler(
            loop, _future_watcher_wrapper(self.app.__rsgi__), impl_asyncio=True
        )
        self._signal = WorkerSignal()
        self._stopped = loop.create_future()
        stopped = self._stopped

        def on_stopped() -> None:  # called from granian's thread once it stopped serving
            loop.call_soon_threadsafe(lambda: stopped.done() or stopped.set_result(None))

        self._signal.add_cb(on_stopped)
        worker.serve_str(scheduler, loop, self._signal)
        return sock.getsockname()[1]

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stops accepting, lets requests in flight finish (up to `grace_s`), then returns."""
        if self._signal is None or self._stopped is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        self._signal.set()
        signal, self._signal = self._signal, None
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped), max(grace_s, 0.1))
        except TimeoutError:
            log.warning("granian did not stop within its grace", extra={"grace_s": grace_s})
        while self.app.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        del signal
        if self._sock is not None:
            self._sock.close()
            self._sock = None
