"""A bound on every request body, before any route reads it: FastAPI parses a route's form or
file parameters before its dependencies run (so before the caller is known), and Starlette
spools an uploaded file to disk whatever its size; without this a caller that is not even
logged in could fill the console's disk with one request. A form (an upload) may be
`console.max_upload_bytes` plus room for its other fields; any other body (JSON) at most
`OTHER_BODY_BYTES`. A declared `Content-Length` over the bound is refused (413) before a
byte of the body is read; a body without one is counted as it arrives and refused when it
passes the bound. The refusal is raised where the route reads the body, so the app's own
handlers answer it (JSON for the API, the error page for a browser)."""

from __future__ import annotations

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FORM_SLACK_BYTES = 64 * 1024
"""A form's fields besides its file (names, URLs, sizes) and the multipart boundaries."""
OTHER_BODY_BYTES = 16 * 1024 * 1024
"""JSON bodies: the API's longest lists (10,000 targeting values of up to 200 characters)."""
FORM_TYPES = (b"multipart/form-data", b"application/x-www-form-urlencoded")


def body_limit(headers: dict[bytes, bytes], max_upload_bytes: int) -> int:
    """The largest body a request with `headers` may send.

    >>> body_limit({b"content-type": b"multipart/form-data; boundary=x"}, 1000)
    66536
    >>> body_limit({b"content-type": b"application/json"}, 1000) == OTHER_BODY_BYTES
    True
    """
    kind = headers.get(b"content-type", b"").lower()
    if kind.startswith(FORM_TYPES):
        return max_upload_bytes + FORM_SLACK_BYTES
    return OTHER_BODY_BYTES


def too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the request body is over {limit:,} bytes")


class BodyLimit:
    """ASGI middleware: refuses (413) a request whose body is over `body_limit`."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        limit = body_limit(headers, self.max_upload_bytes)
        declared = headers.get(b"content-length", b"")
        refused = declared.isdigit() and int(declared) > limit  # then not one byte is read
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            if refused:
                raise too_large(limit)  # FastAPI and Starlette answer it as a 413
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, counted, send)
