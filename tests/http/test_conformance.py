"""The server's raw-bytes conformance table (`conformance.json`), run against a real server.

Each case writes its bytes to a fresh `HttpServer` on a loopback port, reads what comes back
while it writes (a server that refuses early may close before the client is done), and
checks the statuses in order, whether the connection closed (an open one must answer a
follow-up request), what the handler was given, and the response headers.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import uvloop

from openbid.http.server import HttpServer, Response, Router

TABLE = json.loads((Path(__file__).parent / "conformance.json").read_text())
CASES = TABLE["cases"]
FOLLOW_UP = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
DEADLINE_S = 5.0


def _bytes(part: object) -> bytes:
    if isinstance(part, str):
        return part.encode("latin-1")
    if isinstance(part, list):
        return b"".join(_bytes(p) for p in part)
    assert isinstance(part, dict)
    return _bytes(part["repeat"]) * part["times"]


class _App:
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
        self.headers.append(dict(request.headers))
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


def _parse(data: bytes, no_body_at: list[int]) -> tuple[list[dict], bytes]:
    """Complete responses at the start of `data`, and the bytes after them."""
    responses: list[dict] = []
    position = 0
    while True:
        end = data.find(b"\r\n\r\n", position)
        if end < 0:
            break
        lines = data[position:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
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


async def _wait_for(condition, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def _queued(server: HttpServer) -> int:
    return sum(len(c._queue) for c in server._state.connections)


async def _run(case: dict) -> None:
    app = _App()
    server = HttpServer(app, **case.get("server", {}))
    port = await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    closed = asyncio.Event()

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
        for step in case["steps"]:
            if "send" in step:
                data = _bytes(step["send"])
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
                wanted = _bytes(step["expect_bytes"])
                await _wait_for(lambda w=wanted: w in received, f"{wanted!r}")
            elif "shutdown_write" in step:
                writer.write_eof()
            elif "max_queued" in step:
                queued = _queued(server)
                assert queued <= step["max_queued"], f"{queued} requests parsed ahead"
            else:
                await asyncio.sleep(step["pause_s"])

        if "first_statuses" in case:
            count = len(case["first_statuses"])
            await _wait_for(lambda: len(_parse(bytes(received), no_body_at)[0]) >= count, "replies")
            statuses = [r["status"] for r in _parse(bytes(received), no_body_at)[0][:count]]
            assert statuses == case["first_statuses"]
            return

        expected = case["statuses"]
        if case["closed"]:
            await asyncio.wait_for(closed.wait(), DEADLINE_S)
        else:
            await _wait_for(
                lambda: len(_parse(bytes(received), no_body_at)[0]) >= len(expected), "replies"
            )
        responses, rest = _parse(bytes(received), no_body_at)
        assert [r["status"] for r in responses] == expected, bytes(received[:300])
        assert rest == b"", f"bytes after the responses: {rest[:100]!r}"
        if not case["closed"]:
            assert not closed.is_set(), "the server closed a connection it should keep"
            writer.write(FOLLOW_UP)
            await _wait_for(
                lambda: len(_parse(bytes(received), no_body_at)[0]) > len(expected), "follow-up"
            )
            follow_up = _parse(bytes(received), no_body_at)[0][len(expected)]
            assert follow_up["status"] == 200
        for response, check in zip(responses, case.get("responses", []), strict=False):
            for name, value in check.get("headers", {}).items():
                assert response["headers"].get(name) == value, (name, response["headers"])
            for name in check.get("absent", []):
                assert name not in response["headers"], (name, response["headers"])
            if "body" in check:
                assert response["body"] == check["body"]
        if "handled" in case:
            assert app.handled == case["handled"]
        for name, value in case.get("request_headers", {}).items():
            assert app.headers[0].get(name) == value, (name, app.headers[0])
    finally:
        writer.transport.abort()
        reading.cancel()
        await server.stop(grace_s=0.5)


def test_the_table_is_large_and_names_are_unique():
    names = [case["name"] for case in CASES]
    assert len(names) >= 40 and len(set(names)) == len(names)
    assert all(case["covers"] for case in CASES)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # uvloop is what `openbid up` runs
@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_conformance(case, loop):
    (uvloop.run if loop == "uvloop" else asyncio.run)(_run(case))
