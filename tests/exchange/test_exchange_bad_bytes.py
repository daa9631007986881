"""Bytes that are not UTF-8, from a publisher or a DSP: a 400, or that DSP's error, never a 500.

Found by a reviewer: the OpenRTB decoder let `UnicodeDecodeError` out, so a latin-1 byte in a
bid request was a 500, and one in a single DSP's `adm` aborted the whole auction.
"""

from __future__ import annotations

import asyncio
import json

from openbid.domain import DemandPartner
from openbid.exchange import fanout
from openbid.http.server import Response

from .test_e2e import API_KEY, ScriptedDsp, bid_request, run, start, stop
from .test_hostile_dsps import Dsp, bid_response, make_exchange, request


def _latin1_bid(body: dict, price: float) -> Response:
    """A bid whose markup is latin-1 ("Caf\xe9"), as a careless DSP would send it."""
    bid = {"id": "b1", "impid": body["imp"][0]["id"], "price": price, "adm": "<b>Caf\u00e9</b>"}
    payload = {"id": body["id"], "seatbid": [{"seat": "s", "bid": [bid]}]}
    return Response(200, json.dumps(payload, ensure_ascii=False).encode("latin-1"))


async def _auction_against(answers: dict):
    """One auction against loopback DSPs answering with `answers[name](body)`."""
    dsps = {}
    for name, answer in answers.items():
        dsps[name] = await Dsp(answer).start()
    exchange = make_exchange([DemandPartner(name, dsp.url) for name, dsp in dsps.items()])
    loop = asyncio.get_running_loop()
    try:
        outcome = await asyncio.wait_for(
            exchange.auction(request(), None, started=loop.time()), 5.0
        )
    finally:
        for dsp in dsps.values():
            await dsp.server.stop()
    return outcome


def test_a_latin1_byte_in_one_dsps_markup_costs_only_that_dsps_bid():
    async def latin(body):
        return _latin1_bid(body, price=9.0)  # the highest bid, had it been valid

    async def clean(body):
        return bid_response(body, price=1.0)

    outcome = run(_auction_against({"latin": latin, "clean": clean}))
    assert [winner.dsp for winner in outcome.winners] == ["clean"]
    assert {call.state.partner.id: call.outcome for call in outcome.calls} == {
        "latin": "invalid_response",
        "clean": "bid",
    }


def test_a_decoder_failure_on_one_reply_costs_only_that_dsps_bid(monkeypatch):
    # Whatever a DSP's bytes make our decoder do, the other partners' bids still compete.
    decode = fanout.decode_bid_response_lenient

    def broken_on_price_9(data, request=None):
        if b'"price": 9.0' in data:
            raise RuntimeError("a decoder bug")
        return decode(data, request)

    monkeypatch.setattr(fanout, "decode_bid_response_lenient", broken_on_price_9)

    async def odd(body):
        return bid_response(body, price=9.0)

    async def clean(body):
        return bid_response(body, price=1.0)

    outcome = run(_auction_against({"odd": odd, "clean": clean}))
    assert [winner.dsp for winner in outcome.winners] == ["clean"]
    assert {call.state.partner.id: call.outcome for call in outcome.calls} == {
        "odd": "internal",
        "clean": "bid",
    }


def test_the_front_door_answers_400_naming_the_field_for_bytes_that_are_not_utf8(tmp_path):
    body = json.dumps(bid_request(), ensure_ascii=False).encode()
    body = body.replace(b'"https://news.example/a"', b'"https://news.example/caf\xe9"')

    async def main():
        h = await start(tmp_path, [ScriptedDsp("alpha", 2.0)])
        try:
            return await h.auction(body, key=API_KEY)
        finally:
            await stop(h)

    status, answer = run(main())
    assert status == 400
    assert json.loads(answer)["field"] == "request.site.page"
