"""The fan-out client: HTTP/1.1 POSTs to demand partners over pooled keep-alive connections.

A lean asyncio Protocol with httptools' parser: the benchmark (`bench/fanout.py`) measured it
several times faster than aiohttp on one core, which decides how many DSPs an auction can
afford to call. Every call has a hard deadline; a connection whose response did not finish
in time is aborted (it cannot be reused mid-response), and every failure is classified
(`UpstreamError.kind`) for metrics and circuit breakers. A POST is never sent twice: only a
GET finding its reused connection closed before any answer goes again on a new one. URLs a
DSP chose are checked and percent-encoded before they are sent (`openbid.http.urls`).
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable

from openbid.http.upstream import (
    MAX_RESPONSE_HEAD_BYTES,
    Call,
    Deadlines,
    Pool,
    UpstreamError,
    UpstreamResponse,
    Waiter,
)
from openbid.http.urls import parse_target

__all__ = ["Call", "FanoutClient", "UpstreamError", "UpstreamResponse"]

_MAX_POOLS = 1024


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
        idle_timeout_s: float = 4.0,
        max_head_bytes: int = MAX_RESPONSE_HEAD_BYTES,
    ) -> None:
        self._max_connections = max_connections_per_host
        self._pools: dict[tuple[str, str, int, bool], Pool] = {}
        self._targets: dict[str, tuple[Pool, bytes]] = {}
        self._max_idle = max_idle_per_host
        self._max_body_bytes = max_body_bytes
        self._max_head_bytes = max_head_bytes
        self._idle_timeout_s = idle_timeout_s
        self._connecting: set[asyncio.Task[None]] = set()
        self._deadlines: Deadlines | None = None

    def _deadlines_of(self, loop: asyncio.AbstractEventLoop) -> Deadlines:
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop is not loop:  # a client outlives a loop
            deadlines = self._deadlines = Deadlines(loop)
        return deadlines

    def _target(
        self, url: str, method: str = "POST", public_only: bool = False
    ) -> tuple[Pool, bytes]:
        """The pool and request head for `url`. Requests that must reach only public
        addresses (`public_only`) get pools of their own: a connection another request
        opened without that check is never theirs to reuse."""
        cache_key = method + ("!" if public_only else " ") + url
        target = self._targets.get(cache_key)
        if target is None:
            # URLs come from DSPs (nurl, burl, lurl): anything malformed is that DSP's
            # failure (UpstreamError), never ours.
            try:
                parsed = parse_target(url)
            except ValueError as exc:
                raise UpstreamError("connect", f"bad URL {url[:200]!r}: {exc}") from None
            pool_key = (parsed.scheme, parsed.host, parsed.port, public_only)
            pool = self._pools.get(pool_key)
            if pool is None:
                if len(self._pools) >= _MAX_POOLS:  # notice hosts vary: forget unused ones
                    for key, unused in list(self._pools.items()):
                        if unused.open_connections == 0:
                            del self._pools[key]
                    self._targets.clear()
                pool = Pool(
                    parsed.host,
                    parsed.port,
                    self._max_idle,
                    self._max_body_bytes,
                    parsed.scheme == "https",
                    self._max_connections,
                    self._idle_timeout_s,
                    self._max_head_bytes,
                )
                self._pools[pool_key] = pool
            head = f"{method} {parsed.request_target} HTTP/1.1\r\nhost: {parsed.host_header}\r\n"
            if method == "POST":
                head += "content-type: application/json\r\nx-openrtb-version: 2.6\r\n"
            target = (pool, head.encode("ascii"))
            if len(self._targets) < 10_000:  # notice URLs vary: cache only the steady ones
                self._targets[cache_key] = target
        return target

    def _post_request(
        self, url: str, body: bytes, gzip_body: bool, headers: bytes = b""
    ) -> tuple[Pool, bytes]:
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
            idempotent=True,
        )
        return await waiter

    def _start(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: Pool,
        request: bytes,
        waiter: Waiter,
        timeout_s: float,
        *,
        want_headers: bool,
        public_only: bool = False,
        idempotent: bool = False,
    ) -> None:
        now = loop.time()
        deadline = now + timeout_s
        connection = pool.take_idle(now)
        if connection is not None:
            retry = (self, request, deadline, want_headers, public_only) if idempotent else None
            deadlines = self._deadlines_of(loop)
            connection.send(request, waiter, deadlines, deadline, want_headers, now, retry)
        else:
            self._connect(pool, request, waiter, deadline, want_headers, public_only)

    def _connect(
        self,
        pool: Pool,
        request: bytes,
        waiter: Waiter,
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
        pool: Pool,
        request: bytes,
        waiter: Waiter,
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
        loop = asyncio.get_running_loop()
        connection.send(
            request, waiter, self._deadlines_of(loop), deadline, want_headers, loop.time()
        )

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
