"""The naive baseline exchange: Starlette + aiohttp, the stack a first version would use.

It does the same essential work as ours (parse the request, call every DSP with a deadline,
keep the highest valid bid, answer) with the usual libraries and no care for speed.

    python bench/baseline_exchange.py --port P --dsps URL,URL,... [--key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def build_app(dsp_urls: list[str], api_key: str) -> Starlette:
    state: dict[str, aiohttp.ClientSession] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        state["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0)
        )
        yield
        await state["session"].close()

    async def call(url: str, payload: dict, timeout_s: float) -> dict | None:
        try:
            async with state["session"].post(
                url,
                data=json.dumps(payload, separators=(",", ":")),
                headers={"content-type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as reply:
                if reply.status != 200:
                    return None
                return await reply.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None

    async def auction(request: Request) -> Response:
        if request.headers.get("x-api-key") != api_key:
            return JSONResponse({"error": "unknown key"}, status_code=401)
        try:
            payload = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "invalid JSON"}, status_code=400)
        if not isinstance(payload, dict) or not payload.get("imp"):
            return JSONResponse({"error": "imp missing"}, status_code=400)
        timeout_s = (payload.get("tmax") or 200) / 1000.0 * 0.9
        replies = await asyncio.gather(*(call(u, payload, timeout_s) for u in dsp_urls))
        best = None
        for reply in replies:
            if not reply or reply.get("id") != payload.get("id"):
                continue
            for seatbid in reply.get("seatbid") or []:
                for bid in seatbid.get("bid") or []:
                    if best is None or bid.get("price", 0) > best.get("price", 0):
                        best = bid
        if best is None:
            return Response(status_code=204)
        return JSONResponse({"id": payload["id"], "seatbid": [{"bid": [best]}], "cur": "USD"})

    return Starlette(
        routes=[Route("/openrtb2/auction", auction, methods=["POST"])], lifespan=lifespan
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsps", required=True)
    parser.add_argument("--key", default="bench-key")
    args = parser.parse_args()
    app = build_app(args.dsps.split(","), args.key)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


if __name__ == "__main__":
    main()
