"""One connection of `HttpServer`: parsing (httptools/llhttp), limits, ordered responses, timers.

Requests are parsed as bytes arrive and answered in order, one handler at a time per
connection (pipelined requests wait their turn, at most `max_pipelined` of them: past it the
connection is not read). Whatever refuses a request (malformed or ambiguous framing, a
limit passed, a timeout) queues its error reply behind the responses still owed, then the
connection closes. What llhttp itself refuses (CL with TE, duplicate Content-Length, bad
chunk sizes, bare LF or CR, obs-fold, NUL and other bytes no header may hold) is a 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING

import httptools

from openbid.http.messages import CONTINUE, Request, Response, encode_response
from openbid.http.metrics import CONNECTIONS_DROPPED, REQUESTS_REFUSED

log = logging.getLogger("openbid.http.server")

if TYPE_CHECKING:
    from openbid.http.server import ServerState

FEED_SLICE_BYTES = 4096
"""A read larger than this is parsed in slices of it, and parsing stops between slices once
`max_pipelined` requests wait: the bound then holds to within what one slice can carry."""
_LINGER_RESET = struct.pack("ii", 1, 0)
LINGER_S = 2.0
LINGER_MAX_BYTES = 1 << 20
"""After an error reply the connection half-closes and reads (and drops) what the client
still sends, up to this long and this much, before closing: closing with unread bytes
would send a RST, which can destroy the reply before the client reads it."""
_INTERNAL_ERROR = Response(500, b'{"error":"internal error"}')
_OVERLOADED = Response(503, b'{"error":"overloaded"}', headers=[("retry-after", "1")])


class _Reject(Exception):
    """Raised in a parser callback to stop parsing a request we answer with an error."""


class HttpConnection(asyncio.Protocol):
    __slots__ = (
        "_state",
        "_loop",
        "_parser",
        "_transport",
        "_client",
        "_url",
        "_headers",
        "_header_count",
        "_header_bytes",
        "_max_header_count",
        "_max_header_bytes",
        "_headers_done",
        "_in_message",
        "_body",
        "_body_bytes",
        "_wire_bytes",
        "_http10",
        "_replay_head",
        "_queue",
        "_busy",
        "_reading",
        "_refused",
        "_lingering",
        "_eof",
        "_pending",
        "_writable",
        "_drain_task",
        "active_at",
        "_started_at",
        "_timer",
        "_timer_due",
    )

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._loop: asyncio.AbstractEventLoop = state.loop  # type: ignore[assignment]
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client = ""
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_count = 0
        self._header_bytes = 0
        self._max_header_count = state.max_header_count
        self._max_header_bytes = state.max_header_bytes
        self._headers_done = False
        self._in_message = False
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._wire_bytes = 0
        self._http10 = False
        self._replay_head: bytes | None = None
        self._queue: deque[tuple[object, bool, bool]] = deque()
        self._busy = False
        self._reading = True
        self._refused = False
        self._lingering = -1  # bytes dropped while lingering; -1: not lingering
        self._eof = False
        self._pending: memoryview | None = None
        self._writable: asyncio.Future[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self.active_at = 0.0
        """Loop time of the last bytes received or response finished (idle since then)."""
        self._started_at = -1.0
        """Loop time of the current request's first byte (-1: none being received)."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  (uvloop's is no subclass)
        peer = transport.get_extra_info("peername")
        self._client = peer[0] if peer else ""
        state = self._state
        state.connections.add(self)
        self.active_at = now = self._loop.time()
        # A new connection owes us its first request head within the header timeout.
        self._started_at = now
        self._schedule(now + min(state.header_timeout_s, state.idle_timeout_s))
        if state.closing:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._state.connections.discard(self)
        self._transport = None
        self._pending = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._resume_writing()

    def eof_received(self) -> bool:
        """The client sent all it will (a half-close): answer what it asked, then close."""
        self._eof = True
        return self._busy  # True keeps the connection open for the answers still owed

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
        self.active_at = self._loop.time()
        if self._refused or self._pending is not None:
            self._hold(data)
        elif len(data) <= FEED_SLICE_BYTES:
            self._feed(data)
        else:
            self._consume(data)

    def _hold(self, data: bytes) -> None:
        """Bytes that cannot be parsed now: after a refusal (dropped, up to the linger
        limits) or behind bytes kept for a full pipeline (kept, in order)."""
        if not self._refused:
            self._keep(data)
        elif self._lingering >= 0:
            self._lingering += len(data)
            if self._lingering > LINGER_MAX_BYTES and self._transport is not None:
                self._transport.abort()

    # --- parsing
    def _consume(self, data: bytes | memoryview) -> None:
        """Parses `data`, a large one in slices, keeping what follows a full pipeline for later."""
        if len(data) <= FEED_SLICE_BYTES:
            self._feed(data)
        else:
            view = memoryview(data)
            for start in range(0, len(view), FEED_SLICE_BYTES):
                if self._refused:
                    break
                if not self._reading:
                    self._keep(view[start:])
                    break
                self._feed(view[start : start + FEED_SLICE_BYTES])

    def _keep(self, data: bytes | memoryview) -> None:
        """Keeps bytes received while the pipeline is full, to parse once it has room."""
        if self._pending is None:
            self._pending = memoryview(data)
        else:
            self._pending = memoryview(bytes(self._pending) + bytes(data))

    def _feed(self, data: bytes | memoryview) -> None:
        # Counted as parsed: on_message_complete starts the next request's count from 0.
        self._wire_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Reject):
                self._refuse(400, "malformed HTTP request")
            return
        except httptools.HttpParserUpgrade as upgrade:
            self._replay_without_upgrade(data, upgrade.args[0])
            return
        except httptools.HttpParserError as exc:
            reason = str(exc)
            if "HTTP version" in reason or "PRI" in reason:  # PRI: an HTTP/2 preface
                self._refuse(505, "only HTTP/1.0 and HTTP/1.1 are served")
            else:
                self._refuse(400, f"malformed HTTP request: {reason}")
            return
        if self._in_message:  # a request is partly received
            state = self._state
            if not self._headers_done:
                if self._wire_bytes > state.max_head_wire_bytes:
                    self._refuse(431, f"request head exceeds {state.max_head_wire_bytes} bytes")
                    return
                due = self._started_at + state.header_timeout_s
            elif self._wire_bytes > state.max_body_wire_bytes:
                self._refuse(413, f"request body exceeds {state.max_body_bytes} bytes")
                return
            else:
                due = self._started_at + state.request_timeout_s
            if due < self._timer_due:  # both timeouts hold from the request's first byte
                self._schedule(due)

    def _replay_without_upgrade(self, data: bytes | memoryview, offset: int) -> None:
        """Upgrades are not offered (RFC 9110 7.8 lets a server ignore them): llhttp stopped
        at the end of an Upgrade request's head, skipping its body. A new parser reads the
        same request again, without its Upgrade header, then what follows it."""
        head, self._replay_head = self._replay_head, None
        if head is None:  # CONNECT was refused before this
            return
        self._parser = httptools.HttpRequestParser(self)
        self._consume(head + bytes(data[offset:]))

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_count = 0
        self._header_bytes = 0
        self._headers_done = False
        self._in_message = True
        self._body = []
        self._body_bytes = 0
        if self._started_at < 0:
            self._started_at = self.active_at

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._state.max_url_bytes:
            self._reject(414, f"request target exceeds {self._state.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        count = self._header_count = self._header_count + 1
        size = self._header_bytes = self._header_bytes + len(name) + len(value) + 4
        if size > self._max_header_bytes or count > self._max_header_count:
            state = self._state
            if count > state.max_header_count:
                self._reject(431, f"more than {state.max_header_count} header fields")
            self._reject(431, f"headers exceed {state.max_header_bytes} bytes")
        if self._headers_done:
            return  # a trailer: never mixed with the headers (a proxy vouched for those)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._headers
        previous = headers.get(key)
        if previous is None:
            headers[key] = text
        elif key == "host":
            self._reject(400, "more than one Host header")
        else:
            headers[key] = f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self._headers_done = True
        parser = self._parser
        headers = self._headers
        encoding = headers.get("transfer-encoding")
        expect = headers.get("expect")
        http10 = False
        # The version matters only for these (its string costs more than the lookups):
        # an HTTP/1.1 request with Host and none of them is answered the same either way.
        if (
            encoding is not None
            or expect is not None
            or "connection" in headers
            or "host" not in headers
        ):
            version = parser.get_http_version()
            http10 = version == "1.0"
            if not http10 and version != "1.1":
                self._reject(400, "HTTP/0.9 requests are not served")
            if "host" not in headers and not http10:
                self._reject(400, "missing Host header")
        self._http10 = http10
        if parser.should_upgrade():
            if parser.get_method() == b"CONNECT":
                self._reject(405, "CONNECT is not served")
            self._replay_head = self._head_without_upgrade()
            return  # the replay checks the rest
        if encoding is not None:
            if http10:  # RFC 9112 6.1: its framing cannot be trusted
                self._reject(400, "Transfer-Encoding in an HTTP/1.0 request")
            if encoding.strip().lower() != "chunked":
                self._reject(501, "the only transfer coding served is chunked")
        length = headers.get("content-length")
        if length is not None and int(length) > self._state.max_body_bytes:
            # Answer now rather than read (and drop) a body we will refuse.
            self._reject(413, f"request body exceeds {self._state.max_body_bytes} bytes")
        if expect is not None and not http10:
            if expect.strip().lower() != "100-continue":
                self._reject(417, "only Expect: 100-continue is met")
            if encoding is not None or (length is not None and int(length) > 0):
                self._continue()

    def _head_without_upgrade(self) -> bytes:
        parser = self._parser
        version = parser.get_http_version().encode()
        lines = [b"%s %s HTTP/%s\r\n" % (parser.get_method(), self._url, version)]
        for name, value in self._headers.items():
            if name == "upgrade":
                continue
            if name == "connection":
                tokens = [t for t in value.split(",") if t.strip().lower() != "upgrade"]
                if not tokens:
                    continue
                value = ",".join(tokens)
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"\r\n")
        return b"".join(lines)

    def _continue(self) -> None:
        """Tells the client to send its body: now, or after the responses still owed."""
        if not self._busy and self._transport is not None:
            self._transport.write(CONTINUE)
            self._body_invited()
        else:
            self._enqueue(CONTINUE, True, False)

    def _body_invited(self) -> None:
        """A 100 Continue was sent: the client waited for it, so the body's time starts now."""
        if self._in_message and self._headers_done:
            self._started_at = self._loop.time()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._state.max_body_bytes:
            self._reject(413, f"request body exceeds {self._state.max_body_bytes} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._wire_bytes = 0
        self._started_at = -1.0
        if self._replay_head is not None:
            return  # read again without its Upgrade header (`_replay_without_upgrade`)
        parser = self._parser
        parsed = httptools.parse_url(self._url)
        body = self._body
        request = Request(
            parser.get_method().decode("ascii"),
            parsed.path.decode("latin-1"),
            (parsed.query or b"").decode("latin-1"),
            self._headers,
            body[0] if len(body) == 1 else b"".join(body),
            self._client,
        )
        self._enqueue(request, parser.should_keep_alive(), self._http10)

    def _reject(self, status: int, message: str) -> None:
        """In a parser callback: refuses the request being parsed and stops parsing."""
        self._refuse(status, message)
        raise _Reject

    def _refuse(self, status: int, message: str) -> None:
        """Answers `status` after the responses still owed, then closes; nothing more is read."""
        REQUESTS_REFUSED.labels(str(status)).inc()
        self._refused = True
        self._pending = None
        self._stop_reading()
        body = b'{"error":"%s"}' % message.replace('"', "'").encode("latin-1", "replace")
        self._enqueue(Response(status, body), False, False)

    def _stop_reading(self) -> None:
        if self._reading and self._transport is not None:
            self._transport.pause_reading()
        self._reading = False

    def _resume_reading(self) -> None:
        """Reads again once the pipeline has room: first what was received and kept."""
        self._reading = True
        pending, self._pending = self._pending, None
        if pending is not None:
            self._consume(pending)
        if self._reading and self._transport is not None:
            self._transport.resume_reading()

    # --- responses
    def _enqueue(self, item: object, keep_alive: bool, http10: bool) -> None:
        queue = self._queue
        queue.append((item, keep_alive, http10))
        if len(queue) >= self._state.max_pipelined and self._reading:
            self._stop_reading()  # resumed as the queue drains
        if not self._busy:
            self._busy = True
            # Referenced here: the loop holds tasks only weakly.
            self._drain_task = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        state = self._state
        queue = self._queue
        try:
            while queue and self._transport is not None:
                item, keep_alive, http10 = queue.popleft()
                if item is CONTINUE:
                    self._transport.write(CONTINUE)
                    self._body_invited()
                    continue
                if (
                    not self._reading
                    and not self._refused
                    and not state.closing
                    and len(queue) < state.max_pipelined // 2
                ):
                    self._resume_reading()
                head_only = False
                if type(item) is Request:
                    head_only = item.method == "HEAD"
                    if state.in_flight >= state.max_in_flight:
                        response: object = _OVERLOADED
                    else:
                        state.in_flight += 1
                        try:
                            response = await state.handler(item)
                        except Exception:
                            log.exception("request handler failed", extra={"path": item.path})
                            response = _INTERNAL_ERROR
                        finally:
                            state.in_flight -= 1
                else:
                    response = item
                transport = self._transport
                if transport is None:
                    return
                if not queue and (state.closing or self._eof):
                    keep_alive = False  # the last answer owed: then close
                if type(response) is Response:
                    try:
                        data = encode_response(response, keep_alive, head_only, http10)
                    except ValueError:
                        log.exception("response cannot be sent", extra={"status": response.status})
                        data = encode_response(_INTERNAL_ERROR, keep_alive, head_only, http10)
                    if self._writable is not None:  # the client is not reading: wait for it
                        await self._writable
                        if self._transport is None:
                            return
                    transport.write(data)
                else:
                    keep_alive = await self._send_other(response, keep_alive, head_only, http10)
                if not keep_alive:
                    if self._refused:
                        self._linger()
                    else:
                        self.close()
                    queue.clear()
                    return
        finally:
            self._busy = False
            self.active_at = self._loop.time()
            if self._eof and not queue:
                self.close()

    async def _send_other(
        self, response: object, keep_alive: bool, head_only: bool, http10: bool
    ) -> bool:
        """A `StreamResponse`, `RawResponse` or `ResetConnection` sends itself; returns
        whether the connection can serve another request after it."""
        send = getattr(response, "send", None)
        if send is not None:
            return await send(self, keep_alive, head_only, http10)
        log.error("a handler returned no response", extra={"returned": type(response).__name__})
        self.write(encode_response(_INTERNAL_ERROR, keep_alive, head_only, http10))
        return keep_alive

    # --- `messages.Output`, through which responses other than `Response` send themselves
    def write(self, data: bytes) -> bool:
        if self._transport is None:
            return False
        self._transport.write(data)
        return True

    async def drained(self) -> bool:
        if self._writable is not None:  # the client is not reading: wait for it
            await self._writable
        return self._transport is not None

    def _linger(self) -> None:
        """Half-closes after an error reply, then drops what still arrives (`LINGER_S`)."""
        transport = self._transport
        if transport is None:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering = 0
        transport.resume_reading()
        self._schedule(self._loop.time() + LINGER_S)

    # --- timers: one per connection, moved on rather than replaced
    def _schedule(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = math.inf
        transport = self._transport
        if transport is None:
            return
        if self._lingering >= 0:
            transport.abort()
            return
        state = self._state
        now = self._loop.time()
        idle_due = self.active_at + state.idle_timeout_s
        if self._busy:
            if self._writable is not None and now >= idle_due:
                CONNECTIONS_DROPPED.labels("write_stalled").inc()
                transport.abort()  # it read none of its responses for a whole idle timeout
                return
            self._schedule(max(idle_due, now + 0.001))
            return
        request_due = math.inf
        if self._started_at >= 0:
            if self._headers_done:  # a body: a whole-request bound, however it trickles
                request_due = self._started_at + state.request_timeout_s
            else:
                request_due = self._started_at + state.header_timeout_s
        if now >= request_due:
            if self._headers_done:
                self._refuse(408, "request body not received in time")
            else:
                self._refuse(408, "request head not received in time")
        elif now >= idle_due:
            if self._in_message:
                self._refuse(408, "request not received in time")
            else:
                transport.close()
        else:
            self._schedule(min(request_due, idle_due))

    # --- for the server
    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def idle(self) -> bool:
        """Open, with no request being received or answered."""
        return not self._busy and not self._in_message and self._transport is not None

    @property
    def queued(self) -> int:
        """Parsed requests waiting to be answered."""
        return len(self._queue)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def close_if_idle(self) -> None:
        if self._busy:
            self._stop_reading()  # answers what it asked, then closes (state.closing)
        else:
            self.close()

    def abort(self) -> None:
        """Closes at once, dropping whatever is not written yet."""
        if self._transport is not None:
            self._transport.abort()

    def reset(self) -> None:
        """Closes with a TCP RST (nothing buffered is sent)."""
        transport = self._transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()
