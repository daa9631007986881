"""Only failures a DSP caused count towards its circuit breaker, and the breaker's state is
exported and logged on every change.

Found by a load probe: 8 concurrent requests with `"tmax": 12` opened all 8 breakers (the
caller's own short deadline counted as each DSP's timeout), and the next normal requests
from anyone got 204 with no DSP asked; `openbid_dsp_circuit_state` kept reading "open"
while the DSP answered again, and nothing was logged when breakers opened.
"""

from __future__ import annotations

import asyncio
import logging
import re

from openbid.demand.breaker import CircuitState
from openbid.demand.registry import CIRCUIT_STATE
from openbid.domain import DemandPartner
from openbid.http.server import Response

from .test_e2e import ScriptedDsp, bid_request, run, start, stop
from .test_hostile_dsps import Dsp, bid_response, make_exchange, request


def _metric(metrics_text: str, name: str, **labels: str) -> dict[str, float]:
    """`name`'s value per dsp among the samples with these other `labels` (the registry is
    the process's: other tests' partners are there too)."""
    found = {}
    for line in metrics_text.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if match:
            sample = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if all(sample.get(k) == v for k, v in labels.items()):
                found[sample["dsp"]] = float(match.group(2))
    return found


def test_short_tmax_requests_leave_breakers_closed_and_later_requests_reach_the_dsps(tmp_path):
    async def main():
        # The DSPs answer in 50 ms, well within their own 250 ms timeout, and far past what a
        # 12 ms tmax leaves. own_budget_ms 1 makes sure the short calls do leave (the
        # default 10 ms leaves 2 ms, which a busy machine can spend before the fan-out).
        names = ("tmax12_a", "tmax12_b", "tmax12_c")  # the metrics are the process's
        dsps = [ScriptedDsp(name, 1.0, delay_s=0.05) for name in names]
        h = await start(tmp_path, dsps, own_budget_ms=1)
        try:
            short = await asyncio.gather(*(h.auction(bid_request(tmax=12)) for _ in range(8)))
            assert [status for status, _ in short] == [204] * 8
            _, _, metrics = await h.get(f"{h.base}/metrics")
            text = metrics.decode()
            # The calls did leave and time out: under the old rule the 5th opened each breaker.
            timeouts = _metric(text, "openbid_dsp_calls_total", outcome="timeout")
            assert min(timeouts.get(name, 0.0) for name in names) >= 5, timeouts
            exchange = h.platform.exchange_server.exchange
            states = {s.partner.id: s.breaker.state for s in exchange.registry.states}
            assert states == dict.fromkeys(names, CircuitState.CLOSED)
            circuits = _metric(text, "openbid_dsp_circuit_state")
            assert [circuits[name] for name in names] == [0.0] * 3
            before = _metric(text, "openbid_dsp_calls_total", outcome="bid")
            for _ in range(3):
                status, _ = await h.auction(bid_request())
                assert status == 200
            _, _, metrics = await h.get(f"{h.base}/metrics")
            after = _metric(metrics.decode(), "openbid_dsp_calls_total", outcome="bid")
            asked = [after.get(name, 0.0) - before.get(name, 0.0) for name in names]
            assert asked == [3.0] * 3  # every DSP bid on every normal request
        finally:
            await stop(h)

    run(main())


def test_a_dsp_slower_than_its_own_timeout_opens_its_breaker_and_a_good_probe_closes_it(
    caplog,
):
    async def main():
        slow = True

        async def answer(body):
            if slow:
                await asyncio.sleep(0.2)
            return bid_response(body)

        dsp = await Dsp(answer).start()
        exchange = make_exchange(
            [DemandPartner("slowpoke", dsp.url, timeout_ms=30)],
            breaker_failures=2,
            breaker_cooldown_s=0.2,
        )
        breaker = exchange.registry.by_id["slowpoke"].breaker
        gauge = CIRCUIT_STATE.labels("slowpoke")
        loop = asyncio.get_running_loop()
        for _ in range(2):  # tmax 300 leaves the partner its full 30 ms: its own timeouts
            outcome = await exchange.auction(request(), None, started=loop.time())
            assert [c.outcome for c in outcome.calls] == ["timeout"]
        opened = (breaker.state, gauge.value)
        slow = False
        deadline = loop.time() + 5
        while not outcome.winners:
            assert loop.time() < deadline, "the breaker never let a probe through"
            await asyncio.sleep(0.05)
            outcome = await exchange.auction(request(), None, started=loop.time())
        closed = (breaker.state, gauge.value)
        await dsp.server.stop()
        return opened, closed

    with caplog.at_level(logging.INFO, logger="openbid.demand.registry"):
        opened, closed = asyncio.run(main())
    assert opened == (CircuitState.OPEN, 2)
    assert closed == (CircuitState.CLOSED, 0)  # the gauge read "open" here before
    records = [r for r in caplog.records if r.name == "openbid.demand.registry"]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].dsp == "slowpoke"
    assert warnings[0].reason == "2 failures in a row, the last: timeout"
    infos = [r for r in records if r.levelno == logging.INFO]
    assert [(r.getMessage(), r.dsp) for r in infos] == [
        ("circuit breaker closed again", "slowpoke")
    ]


def test_a_dsp_refusing_a_callers_requests_with_400_keeps_its_breaker_closed():
    # A 4xx is the DSP's answer to this request (whose content is the caller's): it is up.
    async def main():
        async def answer(body):
            return Response(400, b'{"error": "unsupported field"}')

        dsp = await Dsp(answer).start()
        exchange = make_exchange([DemandPartner("picky", dsp.url)], breaker_failures=2)
        loop = asyncio.get_running_loop()
        for _ in range(4):
            outcome = await exchange.auction(request(), None, started=loop.time())
        await dsp.server.stop()
        return outcome, exchange.registry.by_id["picky"].breaker.state, dsp.calls

    outcome, state, calls = asyncio.run(main())
    assert [c.outcome for c in outcome.calls] == ["http_status"]
    assert (state, calls) == (CircuitState.CLOSED, 4)


def test_a_dsp_answering_5xx_opens_its_breaker():
    async def main():
        async def answer(body):
            return Response(503, b"")

        dsp = await Dsp(answer).start()
        exchange = make_exchange([DemandPartner("down", dsp.url)], breaker_failures=2)
        loop = asyncio.get_running_loop()
        for _ in range(4):
            await exchange.auction(request(), None, started=loop.time())
        await dsp.server.stop()
        return exchange.registry.by_id["down"].breaker.state, dsp.calls

    assert asyncio.run(main()) == (CircuitState.OPEN, 2)
