"""What handlers of `HttpServer` receive and return, and how a response is written.

A handler gets a `Request` and returns a `Response` (the hot path: one write of head and
body). Test doubles and fault injection (the simulated DSPs) may return instead a
`StreamResponse` (the head at once, the body as its pieces come: a body trickled slowly), a
`RawResponse` (bytes sent as they are: a reply that is not valid HTTP) or `ResetConnection`
(the connection reset with a TCP RST instead of an answer).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from http import HTTPStatus
from typing import Protocol
from urllib.parse import parse_qsl

_STATUS_LINES = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())
    for status in HTTPStatus
}
_NO_BODY = frozenset({204, 304, *range(100, 200)})
"""Statuses that never carry a body, nor a Content-Length (RFC 9110 8.6, 15.3.5)."""
_CONTENT_TYPES: dict[str, bytes] = {}
_NO_HEADERS: Sequence[tuple[str, str]] = ()
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Request:
    """One parsed HTTP request. Header names are lower-case; a header sent more than once
    holds its values joined by `, ` (RFC 9110 5.3), so `X-Forwarded-For` lines added by
    successive proxies read as one chain. Trailers of a chunked body are not headers: they
    are dropped."""

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
    """An HTTP response; `headers` are extra headers beyond length, type and connection.
    The server leaves out the body of a response to HEAD (keeping its Content-Length) and
    of 1xx, 204 and 304 responses (which carry no Content-Length either)."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or _NO_HEADERS


class Output(Protocol):
    """The connection a response other than `Response` sends itself through."""

    def write(self, data: bytes) -> bool:
        """Writes `data`; False once the connection is gone."""
        ...

    async def drained(self) -> bool:
        """Waits while the client is not reading; False once the connection is gone."""
        ...

    def reset(self) -> None:
        """Closes with a TCP RST."""
        ...


class StreamResponse:
    """A response whose body, `length` bytes in all, is written piece by piece as `pieces`
    yields them (a slow body). Should the pieces not add up to `length`, the connection is
    closed: the client then sees a truncated response, as it would from a failing peer."""

    __slots__ = ("status", "length", "pieces", "content_type", "headers")

    def __init__(
        self,
        status: int,
        length: int,
        pieces: AsyncIterable[bytes],
        content_type: str = "application/json",
        headers: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.length = length
        self.pieces = pieces
        self.content_type = content_type
        self.headers = headers or _NO_HEADERS

    async def send(self, out: Output, keep_alive: bool, head_only: bool, http10: bool) -> bool:
        """Writes the head, then each piece as it comes; whether the connection goes on."""
        head = encode_head(
            self.status, self.content_type, self.headers, self.length, keep_alive, http10
        )
        if not out.write(head):
            return False
        if head_only:
            return keep_alive
        sent = 0
        async for piece in self.pieces:
            if not await out.drained() or not out.write(piece):
                return False
            sent += len(piece)
        return keep_alive and sent == self.length


class RawResponse:
    """Bytes written as they are, whatever they are (a test double's broken reply); the
    connection is closed after them unless `keep_alive`."""

    __slots__ = ("data", "keep_alive")

    def __init__(self, data: bytes, *, keep_alive: bool = False) -> None:
        self.data = data
        self.keep_alive = keep_alive

    async def send(self, out: Output, keep_alive: bool, head_only: bool, http10: bool) -> bool:
        return out.write(self.data) and self.keep_alive and keep_alive


class ResetConnection:
    """No answer: the connection is reset (TCP RST), as by a peer that crashed."""

    __slots__ = ()

    async def send(self, out: Output, keep_alive: bool, head_only: bool, http10: bool) -> bool:
        out.reset()
        return False


def encode_head(
    status: int,
    content_type: str,
    headers: Sequence[tuple[str, str]],
    length: int,
    keep_alive: bool,
    http10: bool,
) -> bytes:
    """The status line and headers of a response, for a body of `length` bytes. Raises
    `ValueError` for a header that would split the response (CR, LF, NUL) or that HTTP/1.1
    cannot carry (beyond latin-1)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"status {status} is not a three-digit HTTP status")
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    head = [line]
    if status not in _NO_BODY:
        head.append(b"content-length: %d\r\n" % length)
        type_line = _CONTENT_TYPES.get(content_type)
        if type_line is None:
            type_line = _content_type_line(content_type)
        head.append(type_line)
    for name, value in headers:
        text = f"{name}: {value}"
        if "\r" in text or "\n" in text or "\0" in text:
            raise ValueError(f"header {name!r} holds a line break or NUL")
        head.append(text.encode("latin-1") + b"\r\n")  # UnicodeEncodeError is a ValueError
    if not keep_alive:
        head.append(b"connection: close\r\n")
    elif http10:  # HTTP/1.0 closes unless told otherwise
        head.append(b"connection: keep-alive\r\n")
    head.append(b"\r\n")
    return b"".join(head)


def _content_type_line(content_type: str) -> bytes:
    if "\r" in content_type or "\n" in content_type or "\0" in content_type:
        raise ValueError("content type holds a line break or NUL")
    line = b"content-type: %s\r\n" % content_type.encode("latin-1")
    if len(_CONTENT_TYPES) < 64:  # handlers use a handful: never a cache to grow
        _CONTENT_TYPES[content_type] = line
    return line


def encode_response(response: Response, keep_alive: bool, head_only: bool, http10: bool) -> bytes:
    """A whole response as written: head, then the body unless none may be sent."""
    body = response.body
    status = response.status
    if status in _NO_BODY:
        body = b""
    head = encode_head(
        status, response.content_type, response.headers, len(body), keep_alive, http10
    )
    if head_only or not body:
        return head
    return head + body
