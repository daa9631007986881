"""Runs one case of the raw-bytes conformance table (`conformance.json`) against a server.

Shared by `test_conformance.py` (ours, and granian as `server.engine = "granian"` runs it)
and `bench/conformance_peers.py` (ours, granian and uvicorn side by side). A server is
started by a `Start`: given the app every case talks to and the case's `server` options, it
returns the port, a coroutine function that stops it, and (ours only) a count of requests
parsed ahead. Each case writes its bytes on a fresh connection, reads what comes back while
it writes (a server that refuses early may close before the client is done), and checks the
statuses in order, whether the connection closed (an open one must answer a follow-up
request), what the handler was given, and the response headers. `run_case` returns what was
answered and the checks that failed (none: the case passes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from openbid.http.server import Response, Router

TABLE = json.loads((Path(__file__).parent / "conformance.json").read_text())
CASES = TABLE["cases"]
FOLLOW_UP = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
DEADLINE_S = 5.0

Stop = Callable[[], Awaitable[None]]
Start = Callable[["App", dict], Awaitable[tuple[int, Stop, Callable[[], int] | None]]]

SECURITY_COVERS = ("smuggling", "1: header", "1: trailers", "1: duplicate Host")
SECURITY_NAMES = frozenset(
    {
        "connect_is_refused",
        "slowloris_head_gets_408",
        "unfinished_head_gets_408",
        "silent_connection_gets_408_after_header_timeout",
        "body_trickled_past_request_timeout_gets_408",
        "chunked_body_trickled_past_request_timeout_gets_408",
        "oversize_chunked_body_refused_as_it_passes",
        "announced_oversize_body_refused_at_once",
        "missing_host_is_refused",
        "http09_is_refused",
        "pipelining_bound_holds_within_one_write",
        "del_in_header_value",
        "space_in_target",
        "target_too_long",
        "transfer_coding_other_than_chunked",
    }
)


def is_security_case(case: dict) -> bool:
    """Request smuggling, resource bounds (header, body, time, pipelining), and the framing
    rules a proxy in front could read another way: what an attacker probes."""
    return case["name"] in SECURITY_NAMES or case["covers"].startswith(SECURITY_COVERS)


def payload(part: object) -> bytes:
    if isinstance(part, str):
        return part.encode("latin-1")
    if isinstance(part, list):
        return b"".join(payload(p) for p in part)
    assert isinstance(part, dict)
    return payload(part["repeat"]) * part["times"]


class App:
    """The handler every case talks to; records what it was given."""

    def __init__(self) -> None:
        self.handled: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.router = Router()
        self.router.add("GET", "/healthz", self._healthz, safe=True)
        self.router.add("GET", "/echo", self._echo)
        self.router.add("POST", "/echo", self._echo)
        self.router.add("GET", "/nocontent", self._no_content)
        self.router.add("GET", "/slow", self._slow)

    async def __call__(self, request):
        self.handled.append(f"{request.method} {request.path} {request.body.decode('latin-1')}")
        self.headers.append(dict(request.headers.items()))
        if request.path == "/raw":  # answers any method with a body, as a bare handler may
            return Response(200, b"raw body", "text/plain")
        return await self.router(request)

    async def _healthz(self, request):
        return Response(200, b'{"status":"ok"}')

    async def _echo(self, request):
        return Response(200, f"{request.method} {request.path} ".encode() + request.body)

    async def _no_content(self, request):
        return Response(204)

    async def _slow(self, request):
        await asyncio.sleep(0.2)
        return Response(200, b"slow")


def parse(data: bytes, no_body_at: list[int]) -> tuple[list[dict], bytes]:
    """Complete responses at the start of `data`, and the bytes after them."""
    responses: list[dict] = []
    position = 0
    while True:
        end = data.find(b"\r\n\r\n", position)
        if end < 0:
            break
        lines = data[position:end].decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ")[1])
        except (IndexError, ValueError):
            break
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        index = len(responses)
        no_body = status < 200 or status in (204, 304) or index in no_body_at
        length = 0 if no_body else int(headers.get("content-length", "0"))
        if end + 4 + length > len(data):
            break
        body = data[end + 4 : end + 4 + length].decode("latin-1")
        responses.append({"status": status, "headers": headers, "body": body})
        position = end + 4 + length
    return responses, data[position:]


async def _wait_for(condition, what: str, deadline_s: float = DEADLINE_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def run_case(case: dict, start: Start, close_wait_s: float = DEADLINE_S) -> dict:
    """Runs `case` on a server `start` starts; returns `statuses` (what was answered, in
    order), `closed` (whether the server closed the connection) and `failures` (the checks
    that failed, empty when the case passes). A connection the case expects closed is
    waited for `close_wait_s` (a server that keeps it open costs that much)."""
    app = App()
    port, stop, queued = await start(app, case.get("server", {}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    closed = asyncio.Event()
    failures: list[str] = []

    async def read() -> None:
        try:
            while chunk := await reader.read(65536):
                received.extend(chunk)
        except ConnectionError:
            pass
        closed.set()

    reading = asyncio.create_task(read())
    no_body_at = case.get("no_body_at", [])
    try:
        try:
            await _steps(case, writer, received, closed, queued)
            responses = await _replies(case, writer, received, closed, no_body_at, close_wait_s)
            _check(case, app, responses)
        except AssertionError as error:
            failures.append(str(error) or "assertion failed")
        except (TimeoutError, ConnectionError, OSError) as error:
            failures.append(f"{type(error).__name__}: {error}")
    finally:
        writer.transport.abort()
        reading.cancel()
        await stop()
    responses, _ = parse(bytes(received), no_body_at)
    return {
        "statuses": [r["status"] for r in responses],
        "closed": closed.is_set(),
        "failures": failures,
        "received": bytes(received[:200]),
    }


async def _steps(case, writer, received, closed, queued) -> None:
    for step in case["steps"]:
        if "send" in step:
            data = payload(step["send"])
            for _ in range(step.get("times", 1)):
                if "pause_s" in step:
                    await asyncio.sleep(step["pause_s"])
                if closed.is_set() or writer.is_closing():
                    break
                try:
                    writer.write(data)
                    await writer.drain()
                except ConnectionError:
                    break
        elif "expect_bytes" in step:
            wanted = payload(step["expect_bytes"])
            await _wait_for(lambda w=wanted: w in received, f"{wanted!r}")
        elif "shutdown_write" in step:
            writer.write_eof()
        elif "max_queued" in step:
            if queued is not None:  # ours only: the others do not say
                assert queued() <= step["max_queued"], f"{queued()} requests parsed ahead"
        else:
            await asyncio.sleep(step["pause_s"])


async def _replies(
    case, writer, received, closed, no_body_at, close_wait_s
) -> list[dict[str, Any]]:
    def answered() -> list[dict]:
        return parse(bytes(received), no_body_at)[0]

    if "first_statuses" in case:
        count = len(case["first_statuses"])
        await _wait_for(lambda: len(answered()) >= count, "replies")
        statuses = [r["status"] for r in answered()[:count]]
        assert statuses == case["first_statuses"], f"answered {statuses}"
        return []
    expected = case["statuses"]
    if case["closed"]:
        try:
            await asyncio.wait_for(closed.wait(), close_wait_s)
        except TimeoutError:
            statuses = [r["status"] for r in answered()]
            raise AssertionError(f"answered {statuses} and kept the connection open") from None
    else:
        try:
            await _wait_for(lambda: len(answered()) >= len(expected), "replies")
        except AssertionError:
            statuses = [r["status"] for r in answered()]
            how = "closed" if closed.is_set() else "no more replies"
            raise AssertionError(f"answered {statuses} then {how}") from None
    responses, rest = parse(bytes(received), no_body_at)
    statuses = [r["status"] for r in responses]
    assert statuses == expected, f"answered {statuses}: {bytes(received[:120])!r}"
    assert rest == b"", f"bytes after the responses: {rest[:100]!r}"
    if not case["closed"]:
        assert not closed.is_set(), "the server closed a connection it should keep"
        writer.write(FOLLOW_UP)
        await _wait_for(lambda: len(answered()) > len(expected), "follow-up")
        assert answered()[len(expected)]["status"] == 200, "follow-up not answered 200"
    return responses


def _check(case: dict, app: App, responses: list[dict]) -> None:
    for response, check in zip(responses, case.get("responses", []), strict=False):
        for name, value in check.get("headers", {}).items():
            got = response["headers"].get(name)
            assert got == value, f"header {name}: {got!r}, wanted {value!r}"
        for name in check.get("absent", []):
            assert name not in response["headers"], f"header {name} sent"
        if "body" in check:
            assert response["body"] == check["body"], f"body {response['body']!r}"
    if "handled" in case:
        assert app.handled == case["handled"], f"handler ran {app.handled}"
    for name, value in case.get("request_headers", {}).items():
        got = app.headers[0].get(name) if app.headers else None
        assert got == value, f"handler saw {name}: {got!r}, wanted {value!r}"
