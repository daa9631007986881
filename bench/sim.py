"""Benchmark of the simulated market: is it ever the bottleneck of another benchmark?

Measures, on this machine:
- traffic generation (draw + build + encode OpenRTB JSON), requests/s on one core, against
  `json.dumps` of the same request dicts (serialisation alone, a floor for any generator);
- offline DSP outcomes (truth, draws, prices, latencies, faults), (request, DSP) pairs/s;
- a simulated DSP server answering no-bid (204), requests/s on one core (the server runs
  in its own process), against a bare asyncio + httptools server that answers 204 to
  everything (the ceiling of this stack); both are driven by openbid.sim.traffic's client
  (asyncio + httptools, keep-alive) from this process.

Prints a table, then one JSON line. `--quick` runs a shorter version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from openbid.sim import Market  # noqa: E402
from openbid.sim.config import load_market_config, parse_market  # noqa: E402
from openbid.sim.traffic import send_traffic  # noqa: E402


def silent_market() -> Market:
    """The default market with its first DSP renamed `silent`: never bids, never faults."""
    import msgspec

    data = msgspec.to_builtins(load_market_config("default"))
    dsp = data["dsps"][0]
    dsp["name"] = "silent"
    dsp["bid_model"]["base_logit"] = -60.0
    dsp["faults"] = {}
    return Market(parse_market(data, "bench"))


async def _serve_dsp() -> None:
    from openbid.sim.server import DspServers

    servers = await DspServers(silent_market(), simulate_latency=False).start()
    print(servers.ports["silent"], flush=True)
    await asyncio.Event().wait()


class _NoContent(asyncio.Protocol):
    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")


async def _serve_baseline() -> None:
    server = await asyncio.get_running_loop().create_server(_NoContent, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


def _serve(kind: str) -> None:
    import uvloop

    uvloop.run(_serve_dsp() if kind == "dsp" else _serve_baseline())


def _drive(kind: str, bodies: list[bytes], concurrency: int) -> float:
    """Starts a server process, sends every body as fast as it answers; returns answers/s."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(child.stdout.readline())
        url = f"http://127.0.0.1:{port}/openrtb2"

        async def run():
            warmup = await send_traffic(url, bodies[:500], 1e9, concurrency=concurrency)
            assert warmup.statuses.get("204") == 500, warmup.statuses
            return await send_traffic(url, bodies, 1e9, concurrency=concurrency)

        import uvloop

        report = uvloop.run(run())
        answered = report.statuses.get("204", 0)
        if answered != len(bodies):
            raise SystemExit(
                f"{kind}: only {answered} of {len(bodies)} answered 204: {report.statuses}"
            )
        return answered / report.elapsed_s
    finally:
        child.terminate()
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--serve", choices=["dsp", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve)
        return
    generate_count = 20_000 if args.quick else 100_000
    http_count = 10_000 if args.quick else 40_000

    market = Market.load("default")
    warm_up = market.generate(1000, seed=99)
    assert len(warm_up.bodies) == 1000
    started = time.perf_counter()
    batch = market.generate(generate_count, seed=1)
    bodies = batch.bodies
    generated_per_s = generate_count / (time.perf_counter() - started)
    dicts = [batch.request(row) for row in range(generate_count)]
    started = time.perf_counter()
    for request in dicts:
        json.dumps(request)
    json_dumps_per_s = generate_count / (time.perf_counter() - started)

    started = time.perf_counter()
    outcomes = market.dsp_outcomes(batch)
    outcome_pairs_per_s = outcomes.bid.size / (time.perf_counter() - started)

    http_bodies = bodies[:http_count]
    baseline_per_s = _drive("baseline", http_bodies, concurrency=32)
    dsp_per_s = _drive("dsp", http_bodies, concurrency=32)

    rows = [
        (
            "generate OpenRTB requests (req/s)",
            "json.dumps of same dicts",
            json_dumps_per_s,
            generated_per_s,
        ),
        (
            "DSP server no-bid answers (req/s, 1 core)",
            "bare asyncio+httptools 204",
            baseline_per_s,
            dsp_per_s,
        ),
    ]
    print(f"{'work':<44} {'baseline':<28} {'baseline/s':>12} {'ours/s':>12} {'ratio':>7}")
    for work, baseline_name, baseline, ours in rows:
        print(
            f"{work:<44} {baseline_name:<28} {baseline:>12,.0f} {ours:>12,.0f} {ours / baseline:>7.2f}"
        )
    print(
        f"{'offline DSP outcomes ((request, DSP)/s)':<44} {'-':<28} {'-':>12} {outcome_pairs_per_s:>12,.0f} {'-':>7}"
    )
    print(
        "driver: openbid.sim.traffic client (asyncio + httptools, 32 keep-alive connections), "
        f"{http_count:,} requests; servers in their own process with uvloop"
    )
    print(
        json.dumps(
            {
                "bench": "sim",
                "generated_per_s": round(generated_per_s),
                "baseline_json_dumps_per_s": round(json_dumps_per_s),
                "dsp_nobid_per_s": round(dsp_per_s),
                "baseline_204_per_s": round(baseline_per_s),
                "dsp_vs_baseline_ratio": round(dsp_per_s / baseline_per_s, 3),
                "outcome_pairs_per_s": round(outcome_pairs_per_s),
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
