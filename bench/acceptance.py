"""Acceptance of real-world-shaped traffic: the share of a corpus of SSP and prebid requests
the exchange accepts over HTTP (200/204), against the strict decoder on the same requests.

The corpus (`tests/openrtb/corpus/real-world.jsonl`) holds requests shaped as public prebid
adapter fixtures and prebid.js ORTB converters send them (our own values), clean ones and
ones with the harmless faults real partners send; each line says whether the reference
exchange (Prebid Server) accepts it. Its mix of clean and faulty requests is ours, so the
share depends on it: read it with `refused_not_by_reference`, which should be 0 (every
request we refuse is one the reference refuses too, or one left with no usable imp).

    python bench/acceptance.py [--quick] [--url http://host:port --api-key KEY]

Without `--url` it starts an exchange on a loopback port (SQLite catalog, one publisher,
one DSP that bids) and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests/openrtb/corpus/real-world.jsonl"
API_KEY = "acceptance-bench-key"


def load_corpus() -> list[dict]:
    cases = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    for case in cases:
        if "request_body" in case:
            case["body"] = case["request_body"].encode()
        else:
            case["body"] = json.dumps(case["request"], separators=(",", ":")).encode()
    return cases


def strict_accepts(body: bytes) -> bool:
    from openbid.openrtb import InvalidBidRequest, decode_bid_request

    try:
        decode_bid_request(body)
    except InvalidBidRequest:
        return False
    return True


async def post(host: str, port: int, body: bytes, key: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST /openrtb2/auction HTTP/1.1\r\nhost: {host}\r\nx-api-key: {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode()
    writer.write(head + body)
    data = await reader.read()
    writer.close()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), payload


class _Dsp:
    """A DSP that bids on the first imp of every request."""

    async def start(self) -> int:
        from openbid.http.server import HttpServer, Request, Response, Router

        async def bid(request: Request) -> Response:
            body = json.loads(request.body)
            reply = {
                "id": body["id"],
                "seatbid": [
                    {
                        "bid": [
                            {
                                "id": "b1",
                                "impid": body["imp"][0]["id"],
                                "price": 50.0,
                                "adm": "<div>ad</div>",
                                "crid": "c1",
                                "adomain": ["brand.example"],
                            }
                        ]
                    }
                ],
            }
            return Response(200, json.dumps(reply).encode())

        router = Router()
        router.add("POST", "/bid", bid)
        self.server = HttpServer(router)
        return await self.server.start()


async def run_local(cases: list[dict]) -> list[tuple[int, bytes]]:
    from openbid.config import load_config
    from openbid.domain import DemandPartner
    from openbid.platform import Platform

    dsp = _Dsp()
    dsp_port = await dsp.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "OPENBID_SERVER__PORT": str(port),
            "OPENBID_EXCHANGE__PUBLIC_URL": f"http://127.0.0.1:{port}",
            "OPENBID_EVENTS__DIR": f"{tmp}/events",
            "OPENBID_STORES__CATALOG_URL": f"sqlite:///{tmp}/catalog.db",
            "OPENBID_EXCHANGE__TRACKER_SECRET": "acceptance-bench-secret-0123456789",
        }
        config = load_config(environ={**os.environ, **env})
        platform = Platform(config)
        platform.open()
        platform.catalog.add_publisher("pub-1", "Bench", api_key=API_KEY)
        platform.catalog.upsert_demand_partner(
            DemandPartner("dsp", f"http://127.0.0.1:{dsp_port}/bid", seat="dsp", timeout_ms=200)
        )
        platform.exchange_server.refresh()
        await platform.serve()
        try:
            return [await post("127.0.0.1", port, case["body"], API_KEY) for case in cases]
        finally:
            await platform.close()
            await dsp.server.stop(grace_s=0.1)


async def run_remote(cases: list[dict], url: str, key: str) -> list[tuple[int, bytes]]:
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    return [await post(host, int(port or 80), case["body"], key) for case in cases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="same run (the corpus is small)")
    parser.add_argument("--url", help="a running exchange (default: start one)")
    parser.add_argument("--api-key", default=API_KEY)
    args = parser.parse_args()

    cases = load_corpus()
    if args.url:
        answers = asyncio.run(run_remote(cases, args.url, args.api_key))
    else:
        answers = asyncio.run(run_local(cases))

    by_source: dict[str, Counter] = {}
    refused_by_reference = refused_not_by_reference = warned = 0
    for case, (status, payload) in zip(cases, answers, strict=True):
        accepted = status in (200, 204)
        strict = strict_accepts(case["body"])
        if strict:
            group = "clean (the strict decoder accepts)"
        elif case["reference"].startswith("refused"):
            group = "faulty, the reference refuses too"
        else:
            group = "faulty, the reference accepts"
        counts = by_source.setdefault(group, Counter())
        counts["sent"] += 1
        counts["strict"] += strict
        counts["ours"] += accepted
        if accepted and payload and b'"warnings"' in payload:
            warned += 1
        if not accepted:
            if case["reference"].startswith("refused"):
                refused_by_reference += 1
            else:
                refused_not_by_reference += 1
                print(
                    f"refused, reference accepts: {case['name']}: {payload[:200]!r}",
                    file=sys.stderr,
                )

    total = Counter()
    print(f"{'requests':<40}{'sent':>6}{'strict (baseline)':>19}{'ours':>6}{'ratio':>7}")
    for group, counts in sorted(by_source.items()):
        total.update(counts)
        ratio = f"{counts['ours'] / counts['strict']:.2f}" if counts["strict"] else "-"
        sent, strict, ours = counts["sent"], counts["strict"], counts["ours"]
        print(f"{group:<40}{sent:>6}{strict:>19}{ours:>6}{ratio:>7}")
    share = total["ours"] / total["sent"]
    baseline = total["strict"] / total["sent"]
    sent, strict, ours = total["sent"], total["strict"], total["ours"]
    print(f"{'all':<40}{sent:>6}{strict:>19}{ours:>6}{share / baseline:>7.2f}")
    print(
        json.dumps(
            {
                "bench": "acceptance",
                "requests": total["sent"],
                "accepted_share": round(share, 4),
                "baseline_strict_share": round(baseline, 4),
                "refused_by_reference": refused_by_reference,
                "refused_not_by_reference": refused_not_by_reference,
                "accepted_with_warnings": warned,
            }
        )
    )


if __name__ == "__main__":
    main()
