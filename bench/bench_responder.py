"""A fixed-response HTTP server on several ports (the fallback when nginx is missing)."""

import asyncio
import sys

import uvloop

from openbid.http.server import HttpServer, Response


async def main(ports: list[int], body: bytes) -> None:
    async def respond(request):
        return Response(200, body)

    for port in ports:
        await HttpServer(respond, max_in_flight=100_000).start("127.0.0.1", port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main([int(p) for p in sys.argv[1].split(",")], sys.argv[2].encode()))
