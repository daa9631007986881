"""A DSP's faults and its URLs cost at most that DSP's bid: never the auction, never a hang.

Found by a second reader: a half-open probe slot taken by a partner that was then filtered
wedged its circuit forever, and a winner's `nurl` with a bad port, non-ASCII characters or an
unencodable host turned the auction into a 500 or a hang.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from openbid.config import ExchangeConfig
from openbid.creative import TrackerSigner
from openbid.demand import DemandRegistry
from openbid.demand.breaker import CircuitState
from openbid.domain import DemandPartner
from openbid.exchange.orchestrator import Exchange
from openbid.http.client import FanoutClient, UpstreamError
from openbid.http.server import HttpServer, Request, Response, Router
from openbid.openrtb import decode_bid_request
from openbid.shaping.base import PassThroughShaper, ShapingDecision


class Dsp:
    """A loopback DSP whose `answer(request_dict)` decides each response."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls = 0

    async def start(self) -> Dsp:
        async def handle(request: Request) -> Response:
            self.calls += 1
            return await self.answer(json.loads(request.body))

        router = Router()
        router.add("POST", "/bid", handle)
        self.server = HttpServer(router)
        self.url = f"http://127.0.0.1:{await self.server.start()}/bid"
        return self


def make_exchange(partners, shaper=None, **config) -> Exchange:
    cfg = ExchangeConfig(**{"notice_private_hosts": True, **config})
    registry = DemandRegistry(
        partners, failure_threshold=cfg.breaker_failures, cooldown_s=cfg.breaker_cooldown_s
    )
    return Exchange(
        cfg,
        registry=registry,
        client=FanoutClient(),
        signer=TrackerSigner(b"k" * 32),
        shaper=shaper,
    )


def request(**fields):
    body = {
        "id": "r1",
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}],
        "site": {"id": "s", "domain": "news.example", "page": "https://news.example/"},
        "device": {"ip": "203.0.113.7", "ua": "Mozilla/5.0"},
        "tmax": 300,
        "at": 1,
    }
    body.update(fields)
    return decode_bid_request(json.dumps(body).encode())


def bid_response(body, price=1.0, **bid) -> Response:
    one = {"id": "b1", "impid": body["imp"][0]["id"], "price": price, "adm": "<b>ad</b>"}
    one.update(bid)
    one = {k: v for k, v in one.items() if v is not None}
    payload = {"id": body["id"], "seatbid": [{"seat": "s", "bid": [one]}]}
    return Response(200, json.dumps(payload).encode())


class FilterNext(PassThroughShaper):
    """A shaper that sends everything except in the auction after `filter_next` is set."""

    model_version = "test"

    def __init__(self) -> None:
        self.filter_next = False

    def decide(self, features, dsps):
        send, self.filter_next = not self.filter_next, False
        return [ShapingDecision(dsp, send) for dsp in dsps]


def test_a_partner_filtered_after_the_cooldown_is_probed_by_the_next_auction():
    async def main():
        healthy = False

        async def answer(body):
            return bid_response(body) if healthy else Response(500, b"")

        dsp = await Dsp(answer).start()
        shaper = FilterNext()
        exchange = make_exchange(
            [DemandPartner("d1", dsp.url)], shaper, breaker_failures=2, breaker_cooldown_s=0.2
        )
        loop = asyncio.get_running_loop()
        for _ in range(2):
            await exchange.auction(request(), None, started=loop.time())
        breaker = exchange.registry.by_id["d1"].breaker
        assert breaker.state is CircuitState.OPEN
        healthy = True
        deadline = loop.time() + 5
        while not breaker.available(time.monotonic()):
            assert loop.time() < deadline
            await asyncio.sleep(0.02)
        shaper.filter_next = True  # the first auction after the cooldown does not call it
        await exchange.auction(request(), None, started=loop.time())
        calls = dsp.calls
        outcome = await exchange.auction(request(), None, started=loop.time())
        await dsp.server.stop()
        return dsp.calls - calls, bool(outcome.winners), breaker.state

    calls, won, state = asyncio.run(main())
    assert (calls, won, state) == (1, True, CircuitState.CLOSED)


@pytest.mark.parametrize(
    "nurl",
    [
        "http://dsp.example:99999/win",  # port out of range
        "http://dsp.example/win?x=\u00e9\u4e2d",  # not latin-1
        "http://" + "a" * 64 + ".example/win",  # a host label IDNA cannot encode
        "ftp://dsp.example/win",
    ],
)
def test_a_hostile_nurl_costs_only_that_bid(nurl):
    async def main():
        async def answer(body):
            return bid_response(body, adm=None, nurl=nurl)

        dsp = await Dsp(answer).start()
        exchange = make_exchange([DemandPartner("d1", dsp.url)])
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await asyncio.wait_for(
            exchange.auction(request(tmax=300), None, started=started), 5.0
        )
        elapsed = loop.time() - started
        await dsp.server.stop()
        return outcome, elapsed

    outcome, elapsed = asyncio.run(main())
    assert outcome.winners == []  # no markup: the bid is lost, the auction answers
    assert elapsed < 0.3 + 0.1


@pytest.mark.parametrize(
    "url",
    ["http://h:99999/x", "http://" + "a" * 64 + ".example/", "mailto:x@example.com", "http:///x"],
)
def test_the_client_turns_any_bad_url_into_an_upstream_error(url):
    async def main():
        client = FanoutClient()
        try:
            await client.get(url, timeout_s=0.5)
        finally:
            client.close()

    with pytest.raises(UpstreamError):
        asyncio.run(main())


def test_non_ascii_url_characters_are_percent_encoded_on_the_wire():
    seen = []

    async def main():
        async def handle(reader, writer):
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = FanoutClient()
        reply = await client.get(f"http://127.0.0.1:{port}/win?x=\u00e9&p=1", timeout_s=1.0)
        client.close()
        server.close()
        return reply.status

    assert asyncio.run(main()) == 204
    assert seen[0].startswith(b"GET /win?x=%C3%A9&p=1 HTTP/1.1\r\n")


def test_a_partner_with_a_bid_adjustment_is_shown_the_floor_it_must_bid():
    # Floors are compared with price * adjustment: a partner with adjustment 0.8 shown the
    # raw floor of 1.00 would bid 1.00 and always lose (0.80 < 1.00).
    seen = []

    async def main():
        async def answer(body):
            floor = body["imp"][0]["bidfloor"]
            seen.append((floor, body["imp"][0]["bidfloorcur"]))
            return bid_response(body, price=floor)

        dsp = await Dsp(answer).start()
        partner = DemandPartner("d1", dsp.url, bid_adjustment=0.8)
        exchange = make_exchange([partner])
        loop = asyncio.get_running_loop()
        outcome = await exchange.auction(
            request(imp=[{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 1.0}]),
            None,
            started=loop.time(),
        )
        await dsp.server.stop()
        return outcome

    outcome = asyncio.run(main())
    assert seen == [(1.25, "USD")]
    (winner,) = outcome.winners
    assert winner.result.revenue_micros >= 1_000_000  # the publisher's floor holds


def test_a_partner_with_a_malformed_endpoint_costs_only_its_own_bid():
    async def main():
        async def answer(body):
            return bid_response(body, price=2.0)

        good = await Dsp(answer).start()
        exchange = make_exchange(
            [DemandPartner("good", good.url), DemandPartner("typo", "http://dsp.example:70000/b")]
        )
        outcome = await exchange.auction(request(), None, started=asyncio.get_running_loop().time())
        await good.server.stop()
        return outcome

    outcome = asyncio.run(main())
    assert [winner.dsp for winner in outcome.winners] == ["good"]
    assert {call.state.partner.id: call.outcome for call in outcome.calls}["typo"] == "connect"


def test_catalog_refresh_survives_any_error_and_retries():
    from openbid.exchange import metrics
    from openbid.exchange.server import ExchangeServer

    class FlakyServer:
        refresh_forever = ExchangeServer.refresh_forever

        def __init__(self):
            self.calls = 0

        def refresh(self):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("the database went away")  # not a StoreUnavailable
            metrics.CATALOG_REFRESHED.set(123.0)

    async def main():
        server = FlakyServer()
        task = asyncio.create_task(server.refresh_forever(0.01))
        deadline = asyncio.get_running_loop().time() + 5
        while server.calls < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        return server.calls

    assert asyncio.run(main()) >= 3
