"""Our exchange behind uvicorn with httptools (ASGI): a peer of `bench/exchange.py`.

Issue 13, section 3: the hand-written HTTP server stays only if it earns its place, so
`bench/exchange.py` measures the SAME exchange (the platform `openbid up` builds: `Exchange`,
`ExchangeServer` routes, the fan-out client, the event log, the catalog, the config from the
same `OPENBID_*` environment) with only the HTTP front door swapped. granian is measured as
the product runs it (`openbid up` with `server.engine = "granian"`,
`openbid/http/granian_server.py`); uvicorn, a peer only, through the ASGI adapter below,
which translates its request into our `Request` and our `Response` back, and nothing more:
the header list becomes a mapping (ASGI gives bytes pairs), the body is read from
`receive()` messages, and the response takes the two `send()` messages ASGI demands.

It gets what `Platform.serve` gives ours: the garbage collector's settings, and the catalog
refresh task; one worker, uvloop, httptools, no websockets, no access log, without its
proxy-headers middleware (ours reads X-Forwarded-For itself), server and date headers.

    python bench/maintained_adapter.py uvicorn --port P   (OPENBID_* as for `openbid up`)
"""

from __future__ import annotations

import argparse
import asyncio
import gc

from openbid.config import load_config
from openbid.http.server import Request, Response
from openbid.obs import setup_logging
from openbid.platform import Platform

_NO_BODY = frozenset({204, 304})


def open_platform() -> Platform:
    """The platform `openbid up` builds, opened (stores, event log, exchange, routes), with
    the collector set as `Platform.serve` sets it for ours (blocking: call before serving)."""
    config = load_config()
    setup_logging(config.logging.level, config.logging.format)
    platform = Platform(config)
    platform.open()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)
    return platform


def start_refresh(platform: Platform, loop: asyncio.AbstractEventLoop) -> asyncio.Task:
    """The catalog refresh task ours runs while serving (`Platform.serve`)."""
    assert platform.exchange_server is not None
    interval_s = platform.config.exchange.demand_refresh_s
    return loop.create_task(platform.exchange_server.refresh_forever(interval_s))


async def close_platform(platform: Platform, refresh: asyncio.Task | None) -> None:
    if refresh is not None:
        refresh.cancel()
        await asyncio.gather(refresh, return_exceptions=True)
    await platform.close()


class AsgiApp:
    """Our router as an ASGI 3 application (uvicorn with httptools, its fastest setup)."""

    def __init__(self) -> None:
        self.platform: Platform | None = None
        self.router = None
        self._refresh: asyncio.Task | None = None
        self._types: dict[str, bytes] = {}

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:  # type: ignore[no-untyped-def]
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.platform = await asyncio.to_thread(open_platform)
                self.router = self.platform.router
                self._refresh = start_refresh(self.platform, asyncio.get_running_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.platform is not None:
                    await close_platform(self.platform, self._refresh)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        message = await receive()
        body = message.get("body", b"")
        if message.get("more_body"):
            parts = [body]
            while message.get("more_body"):
                message = await receive()
                parts.append(message.get("body", b""))
            body = b"".join(parts)
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        client = scope.get("client")
        request = Request(
            scope["method"],
            scope["path"],
            scope["query_string"].decode("latin-1"),
            headers,
            body,
            client[0] if client else "",
        )
        response = await self.router(request)  # type: ignore[misc]
        if type(response) is not Response:  # streams, raw bytes: test doubles' only
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        status = response.status
        extra = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in response.headers]
        if status in _NO_BODY:
            await send({"type": "http.response.start", "status": status, "headers": extra})
            await send({"type": "http.response.body", "body": b""})
            return
        content_type = self._types.get(response.content_type)
        if content_type is None:
            content_type = self._types[response.content_type] = response.content_type.encode()
        body = response.body
        head = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *extra]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})


asgi_app = AsgiApp()


def serve_uvicorn(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        asgi_app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="on",
        workers=1,
        backlog=2048,
        access_log=False,
        log_level="warning",
        # ours reads X-Forwarded-For itself (client_address): no middleware in front
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=75,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=["uvicorn"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve_uvicorn(args.host, args.port)


if __name__ == "__main__":
    main()
