"""A lean HTTP/1.1 server on asyncio + httptools for openbid's hot paths.

Frameworks cost more per request than an auction can spare, so every openbid server shares
this small core: keep-alive (HTTP/1.0's too), pipelined requests answered in order, limits
on the request line (414), the header block (431, bounded in bytes and fields before it
ends), the body (413, as soon as it passes the limit), requests in flight (503 with
`Retry-After`), connections (`max_connections`: the longest idle are shed first), and time
(408 for a head not received within `header_timeout_s`, or a whole request, body
included, within `request_timeout_s`: a body trickled a byte at a time holds a connection no
longer; idle connections closed after `idle_timeout_s` without a byte); backpressure both ways, `Expect: 100-continue`, a
half-closed client still answered, and a graceful stop that never outlives its grace.
Upgrade is ignored (RFC 9110 7.8); requests whose framing could be read two ways are refused.

The server accepts connections itself rather than through `loop.create_server`, on asyncio
and uvloop alike: running out of file descriptors (EMFILE) is then logged and counted, the
oldest idle connections are shed to make room, and accepting resumes, instead of libuv
closing new connections unseen. The per-connection protocol is in `connection.py`, what
handlers take and return in `messages.py`. `tests/http/conformance.json` pins the behaviour
with raw bytes.
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import ipaddress
import logging
import resource
import socket
from collections.abc import Awaitable, Callable, Sequence
from operator import attrgetter

from openbid.http.connection import HttpConnection
from openbid.http.messages import (
    RawResponse,
    Request,
    ResetConnection,
    Response,
    StreamResponse,
)
from openbid.http.metrics import ACCEPT_ERRORS, CONNECTIONS_DROPPED, WARNINGS

__all__ = [
    "HttpServer",
    "RawResponse",
    "Request",
    "ResetConnection",
    "Response",
    "Router",
    "StreamResponse",
    "client_address",
]

log = logging.getLogger(__name__)

MAX_URL_BYTES = 8192
MAX_HEADER_BYTES = 32768
"""Request line and header limits, like common proxies' defaults (nginx: 4 x 8 KiB)."""
MAX_HEADER_COUNT = 100
MAX_PIPELINED = 32
"""Requests parsed ahead of their responses before the connection stops being read."""
_ACCEPT_BATCH = 64
_OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_FULL_BODY = b'{"error":"too many connections"}'
_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\ncontent-type: application/json"
    b"\r\nretry-after: 1\r\nconnection: close\r\n\r\n%s" % (len(_FULL_BODY), _FULL_BODY)
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[Request], Awaitable[object]]


def client_address(request: Request, trusted: Sequence[Network]) -> str:
    """The client's IP: the connection's peer, or, when the peer is one of our `trusted`
    proxies, the right-most `X-Forwarded-For` address that no trusted proxy added (anything
    left of it is whatever the client chose to send). Repeated `X-Forwarded-For` lines
    arrive joined in order, so a chain split over several lines reads the same.

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


class ServerState:
    """Limits and counters shared by every connection of one server."""

    __slots__ = (
        "handler",
        "loop",
        "in_flight",
        "max_in_flight",
        "max_body_bytes",
        "max_url_bytes",
        "max_header_bytes",
        "max_header_count",
        "max_head_wire_bytes",
        "max_body_wire_bytes",
        "max_pipelined",
        "idle_timeout_s",
        "header_timeout_s",
        "request_timeout_s",
        "connections",
        "closing",
    )

    def __init__(
        self,
        handler: Handler,
        *,
        max_in_flight: int,
        max_body_bytes: int,
        max_url_bytes: int,
        max_header_bytes: int,
        max_header_count: int,
        max_pipelined: int,
        idle_timeout_s: float,
        header_timeout_s: float,
        request_timeout_s: float,
    ) -> None:
        self.handler = handler
        self.loop: asyncio.AbstractEventLoop | None = None
        self.in_flight = 0
        self.max_in_flight = max_in_flight
        self.max_body_bytes = max_body_bytes
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        # Bytes a request may take on the wire before its head ends (request line, headers,
        # their CRLFs), and after it (the body, chunk framing, trailers): llhttp keeps a
        # header line being received in memory, so it must end within bounds.
        self.max_head_wire_bytes = max_url_bytes + max_header_bytes + 2 * max_header_count + 64
        self.max_body_wire_bytes = 2 * max_body_bytes + max_header_bytes + 65536
        self.max_pipelined = max_pipelined
        self.idle_timeout_s = idle_timeout_s
        self.header_timeout_s = header_timeout_s
        self.request_timeout_s = request_timeout_s
        self.connections: set[HttpConnection] = set()
        self.closing = False


def default_max_connections() -> int:
    """Half the process's open-file limit: the rest stays for the fan-out's connections
    to partners, the event log, the stores."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(16, soft // 2)


class HttpServer:
    """Serves `handler` on one listening socket until `stop()`.

    `max_connections=0` means `default_max_connections()`. At the cap, a new connection
    sheds the longest-idle ones (a batch, so the scan is paid rarely); with none idle it is
    answered 503 and closed.

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
        header_timeout_s: float = 10.0,
        request_timeout_s: float = 30.0,
        max_connections: int = 0,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_header_count: int = MAX_HEADER_COUNT,
        max_url_bytes: int = MAX_URL_BYTES,
        max_pipelined: int = MAX_PIPELINED,
    ) -> None:
        self._state = ServerState(
            handler,
            max_in_flight=max_in_flight,
            max_body_bytes=max_body_bytes,
            max_url_bytes=max_url_bytes,
            max_header_bytes=max_header_bytes,
            max_header_count=max_header_count,
            max_pipelined=max_pipelined,
            idle_timeout_s=idle_timeout_s,
            header_timeout_s=header_timeout_s,
            request_timeout_s=request_timeout_s,
        )
        self.max_connections = max_connections or default_max_connections()
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._adopting = 0
        self._adoptions: set[asyncio.Task[None]] = set()
        self._resume_handle: asyncio.TimerHandle | None = None

    @property
    def in_flight(self) -> int:
        return self._state.in_flight

    def stats(self) -> dict[str, int]:
        """Open connections, requests being handled, and parsed requests waiting."""
        connections = self._state.connections
        return {
            "connections": len(connections),
            "in_flight": self._state.in_flight,
            "queued": sum(c.queued for c in connections),
        }

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 2048,
        *,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
    ) -> int:
        """Starts listening (on `sock` if given: a bound socket, listening or not, such as a
        worker's share of a SO_REUSEPORT port) and returns the bound port (useful with
        `port=0`). `reuse_port` lets several processes listen on one port (SO_REUSEPORT)."""
        loop = asyncio.get_running_loop()
        if sock is None:
            sock = await _listening_socket(loop, host, port, backlog, reuse_port)
        else:
            sock.listen(backlog)  # a no-op but for the backlog when it listens already
        sock.setblocking(False)
        self._loop = self._state.loop = loop
        self._state.closing = False  # a server stopped before may start again
        self._sock = sock
        loop.add_reader(sock.fileno(), self._accept)
        return sock.getsockname()[1]

    # --- accepting
    def _accept(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._accept_failed(exc)
                return
            if len(
                self._state.connections
            ) + self._adopting >= self.max_connections and not self._shed_idle("idle_at_cap"):
                self._refuse(conn)
                continue
            self._adopting += 1
            task = self._loop.create_task(self._adopt(conn))  # type: ignore[union-attr]
            self._adoptions.add(task)
            task.add_done_callback(self._adoptions.discard)

    async def _adopt(self, conn: socket.socket) -> None:
        try:
            conn.setblocking(False)
            await self._loop.connect_accepted_socket(  # type: ignore[union-attr]
                lambda: HttpConnection(self._state), conn
            )
        except OSError as exc:  # the client left already
            log.debug("accepted connection lost", extra={"error": str(exc)})
            conn.close()
        finally:
            self._adopting -= 1

    def _shed_idle(self, reason: str) -> int:
        """Closes the longest-idle connections (1/64 of them, at least one); how many."""
        connections = self._state.connections
        idle = [c for c in connections if c.idle]
        if not idle:
            return 0
        count = max(1, len(connections) // 64)
        for connection in heapq.nsmallest(count, idle, key=attrgetter("active_at")):
            connections.discard(connection)  # no longer counted, even before its close ends
            connection.close()
        shed = min(count, len(idle))
        CONNECTIONS_DROPPED.labels(reason).inc(shed)
        WARNINGS.warning(
            reason,
            "HTTP server shed idle connections",
            reason=reason,
            shed=shed,
            connections=len(connections),
            max_connections=self.max_connections,
        )
        return shed

    def _refuse(self, conn: socket.socket) -> None:
        CONNECTIONS_DROPPED.labels("refused_at_cap").inc()
        WARNINGS.warning(
            "refused_at_cap",
            "HTTP server at its connection cap with none idle: new connection refused",
            max_connections=self.max_connections,
        )
        try:
            conn.setblocking(False)
            conn.send(_FULL)
        except OSError:
            pass
        conn.close()

    def _accept_failed(self, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno or 0, "unknown")
        ACCEPT_ERRORS.labels(name).inc()
        out_of_fds = exc.errno in _OUT_OF_FDS
        shed = self._shed_idle("idle_out_of_fds") if out_of_fds else 0
        WARNINGS.warning(
            f"accept_{name}",
            "HTTP server cannot accept connections"
            + (": out of file descriptors" if out_of_fds else ""),
            error=name,
            detail=str(exc),
            connections=len(self._state.connections),
            shed=shed,
        )
        # Stop listening for a moment (the shed connections free their descriptors on the
        # next loop turns), rather than spin on a socket that stays readable.
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._resume_handle = self._loop.call_later(
                0.05 if shed else 0.5, self._resume_accepting
            )

    def _resume_accepting(self) -> None:
        self._resume_handle = None
        if self._sock is not None and self._loop is not None:
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._accept()

    # --- stopping
    async def stop(self, grace_s: float = 5.0) -> None:
        """Stops accepting, closes idle connections, lets requests in flight finish (up to
        `grace_s`), then closes whatever is left: never waits much past `grace_s`."""
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            return
        state = self._state
        state.closing = True
        self._sock = None
        if self._resume_handle is not None:
            self._resume_handle.cancel()
        loop.remove_reader(sock.fileno())
        sock.close()
        for connection in list(state.connections):
            connection.close_if_idle()
        deadline = loop.time() + grace_s
        while any(c.busy for c in state.connections) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(state.connections):
            connection.abort() if connection.busy else connection.close()
        # Connections close on the next loop turns; adoptions under way see `closing`.
        deadline = loop.time() + 1.0
        while (state.connections or self._adoptions) and loop.time() < deadline:
            await asyncio.sleep(0.005)


async def _listening_socket(
    loop: asyncio.AbstractEventLoop, host: str, port: int, backlog: int, reuse_port: bool
) -> socket.socket:
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, _, _, _, address = infos[0]
    dualstack = family == socket.AF_INET6 and not host and socket.has_dualstack_ipv6()
    return socket.create_server(
        address[:2],
        family=family,
        backlog=backlog,
        reuse_port=reuse_port,
        dualstack_ipv6=dualstack,
    )


class Router:
    """Dispatches on (method, path); 404 for an unknown path, 405 for a wrong method.

    HEAD runs the GET handler only for routes added with `safe=True` (no side effects): a
    link checker's HEAD must not run an auction or count an impression. The server sends
    the GET response's head (its Content-Length included) without the body.
    """

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Handler]] = {}
        self._safe: set[str] = set()

    def add(self, method: str, path: str, handler: Handler, *, safe: bool = False) -> None:
        self._routes.setdefault(path, {})[method.upper()] = handler
        if safe and method.upper() == "GET":
            self._safe.add(path)

    async def __call__(self, request: Request) -> object:
        methods = self._routes.get(request.path)
        if methods is None:
            return Response(404, b'{"error":"not found"}')
        handler = methods.get(request.method)
        if handler is None:
            if request.method == "HEAD" and request.path in self._safe:
                return await methods["GET"](request)
            return Response(
                405, b'{"error":"method not allowed"}', headers=[("allow", ", ".join(methods))]
            )
        return await handler(request)
