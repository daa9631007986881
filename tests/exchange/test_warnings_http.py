"""Repaired requests over HTTP: 200 with `ext.warnings` (also for a no-bid), repairs and DSP
response faults counted in the metrics; the floor-currency error quotes JSON-style."""

from __future__ import annotations

import asyncio
import json

import pytest

from openbid.config import ExchangeConfig
from openbid.exchange.auction import build_imp_rules
from openbid.http.server import Request, Response
from openbid.obs import metrics_payload
from openbid.openrtb import InvalidBidRequest, decode_bid_request
from tests.exchange.test_e2e import ScriptedDsp, bid_request, start, stop


def run(coro):
    return asyncio.run(coro)


def test_a_repaired_request_that_wins_carries_its_warnings(tmp_path):
    async def main():
        h = await start(tmp_path, [ScriptedDsp("alpha", 2.0)])
        try:
            body = bid_request(test=2)
            body["device"]["ip"] = "111.222.333.444"
            return await h.auction(body)
        finally:
            await stop(h)

    status, body = run(main())
    assert status == 200
    response = json.loads(body)
    assert response["seatbid"][0]["bid"][0]["price"] > 0
    assert response["ext"]["warnings"] == [
        {"field": "request.test", "reason": "must be 0 or 1, got 2", "action": "set to 1"},
        {
            "field": "request.device.ip",
            "reason": 'must be an IPv4 address, got "111.222.333.444"',
            "action": "dropped",
        },
    ]
    metrics = metrics_payload().decode()
    assert 'openbid_request_repairs_total{endpoint="auction",kind="device.ip"}' in metrics


def test_a_repaired_request_without_a_bid_answers_200_with_warnings_not_204(tmp_path):
    async def main():
        h = await start(tmp_path, [ScriptedDsp("quiet", None)])
        try:
            repaired = await h.auction(bid_request(tmax=-1))
            clean = await h.auction(bid_request())
            return repaired, clean
        finally:
            await stop(h)

    (status, body), (clean_status, _) = run(main())
    assert clean_status == 204
    assert status == 200
    response = json.loads(body)
    assert "seatbid" not in response and response["id"] == "req-1"
    assert [w["field"] for w in response["ext"]["warnings"]] == ["request.tmax"]


class DuplicateBidDsp(ScriptedDsp):
    """Answers two bids with one id and a lower-case currency."""

    async def _bid(self, request: Request) -> Response:
        body = json.loads(request.body)
        bid = {"id": "same", "impid": body["imp"][0]["id"], "price": 3.0, "adm": "<b>x</b>"}
        reply = {"id": body["id"], "cur": "usd", "seatbid": [{"bid": [bid, dict(bid, price=1.0)]}]}
        return Response(200, json.dumps(reply).encode())


def test_dsp_response_faults_are_repaired_and_counted_per_dsp(tmp_path):
    async def main():
        h = await start(tmp_path, [DuplicateBidDsp("sloppy")])
        try:
            return await h.auction(bid_request())
        finally:
            await stop(h)

    status, body = run(main())
    assert status == 200
    assert json.loads(body)["seatbid"][0]["bid"][0]["price"] > 0  # the first bid kept
    metrics = metrics_payload().decode()
    assert 'openbid_dsp_response_faults_total{dsp="sloppy",kind="bid_duplicate_id"}' in metrics
    assert 'openbid_dsp_response_faults_total{dsp="sloppy",kind="currency"}' in metrics


def test_the_floor_currency_error_quotes_the_code_as_json():
    request = decode_bid_request(
        b'{"id":"r","imp":[{"id":"1","banner":{},"bidfloor":1,"bidfloorcur":"AUD"}]}'
    )
    with pytest.raises(InvalidBidRequest) as caught:
        build_imp_rules(request, None, ExchangeConfig(currency_rates={"USD": 1.0}))
    assert str(caught.value) == (
        "request.imp[0].bidfloorcur must be one of the currencies this exchange converts "
        '(USD), got "AUD"'
    )
