"""Fan-out client candidates: calls/s on one core, 8 upstreams, every auction calling all 8.

Compares aiohttp, pyreqwest and openbid's asyncio + httptools client on the same requests,
same upstreams (nginx when installed), in one run; the client runs pinned to cpu 0 and the
upstreams to cpu 1, so the client is the bottleneck.

    python bench/fanout.py [--quick] [--seconds S] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import uvloop
from upstreams import start_upstreams

from openbid.http.client import FanoutClient

REQUEST = json.dumps(
    {
        "id": "auction-1",
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 0.5}],
        "site": {"domain": "news.example", "page": "https://news.example/a"},
        "device": {"ua": "Mozilla/5.0", "ip": "203.0.113.7", "geo": {"country": "DEU"}},
        "user": {"id": "u-123"},
        "tmax": 150,
    }
).encode()
RESPONSE = json.dumps(
    {
        "id": "auction-1",
        "seatbid": [
            {
                "seat": "s1",
                "bid": [
                    {
                        "id": "b1",
                        "impid": "1",
                        "price": 1.23,
                        "adm": "<div>ad</div>",
                        "crid": "c1",
                        "adomain": ["brand.example"],
                    }
                ],
            }
        ],
    }
).encode()


async def run_candidate(name: str, urls: list[str], seconds: float, concurrency: int) -> dict:
    timeout_s = 1.0
    if name == "openbid":
        client = FanoutClient()

        async def call(url: str) -> None:
            response = await client.post(url, REQUEST, timeout_s=timeout_s)
            assert response.status == 200

        close = client.close
    elif name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )

        async def call(url: str) -> None:
            async with session.post(
                url, data=REQUEST, headers={"content-type": "application/json"}
            ) as response:
                await response.read()
                assert response.status == 200

        async def close_session() -> None:
            await session.close()

        close = close_session
    else:
        from pyreqwest.client import ClientBuilder

        client_rq = (
            ClientBuilder().timeout(__import__("datetime").timedelta(seconds=timeout_s)).build()
        )

        async def call(url: str) -> None:
            response = (
                await client_rq.post(url)
                .body_bytes(REQUEST)
                .header("content-type", "application/json")
                .build()
                .send()
            )
            await response.bytes()
            assert response.status == 200

        async def close_rq() -> None:
            await client_rq.close()

        close = close_rq

    calls = 0
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal calls, errors
        while time.perf_counter() < stop_at:
            results = await asyncio.gather(*(call(u) for u in urls), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    errors += 1
                else:
                    calls += 1

    # warm-up: open the connections
    await asyncio.gather(*(call(u) for u in urls))
    started = time.perf_counter()
    cpu_started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    result = close()
    if asyncio.iscoroutine(result):
        await result
    return {"calls_per_s": calls / elapsed, "errors": errors, "cpu_util": cpu / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=0)
    parser.add_argument("--concurrency", type=int, default=32, help="auctions in flight")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    urls, upstream, stop = start_upstreams(8, RESPONSE, cpu=1)
    results = {}
    try:
        for name in ("aiohttp", "pyreqwest", "openbid"):
            try:
                results[name] = uvloop.run(run_candidate(name, urls, seconds, args.concurrency))
            except ImportError as exc:
                results[name] = {
                    "calls_per_s": 0.0,
                    "errors": -1,
                    "cpu_util": 0.0,
                    "missing": str(exc),
                }
    finally:
        stop()
    base = results["aiohttp"]["calls_per_s"] or 1.0
    print(
        f"fan-out clients: 8 upstreams ({upstream}), every auction calls all 8, "
        f"{args.concurrency} auctions in flight, client on cpu 0, {seconds:.0f} s each"
    )
    print(f"{'client':<12} {'calls/s':>10} {'errors':>7} {'cpu':>5} {'vs aiohttp':>11}")
    for name, r in results.items():
        print(
            f"{name:<12} {r['calls_per_s']:>10,.0f} {r['errors']:>7} "
            f"{r['cpu_util']:>5.2f} {r['calls_per_s'] / base:>10.2f}x"
        )
    print(
        json.dumps(
            {
                "bench": "fanout",
                "upstream": upstream,
                "aiohttp_calls_per_s": round(results["aiohttp"]["calls_per_s"]),
                "pyreqwest_calls_per_s": round(results["pyreqwest"]["calls_per_s"]),
                "openbid_calls_per_s": round(results["openbid"]["calls_per_s"]),
                "ratio_vs_aiohttp": round(results["openbid"]["calls_per_s"] / base, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
