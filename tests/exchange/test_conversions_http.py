"""Conversions over HTTP on a real exchange: `GET /conv` (pixel) and `POST /conv`
(postback), signed with the advertiser's key, counted once per conversion id (also when
requests race, and across workers sharing Redis), attributed post-click (the click id the
landing URL carried) and post-view (our view cookie), and, after the window, logged as
unattributed: the windows run on the market clock, moved forward, never slept through."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner

from openbid import clock
from openbid.cli import main
from openbid.events import EventReader
from openbid.stores.redis import RedisCounterStore

from .test_clicks_http import BANNER, MarkupDsp, _hrefs, _won_bid
from .test_e2e import bid_request, run, start, stop

ADVERTISER = "shop.example"


def _sign(key: str, message: bytes) -> str:
    # Written from docs/exchange.md, not taken from the exchange: what an advertiser does.
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


class Advertiser:
    """Reports conversions to one exchange as an advertiser with its key would."""

    def __init__(self, h, domain: str = ADVERTISER, key: str | None = None) -> None:
        self.h = h
        self.domain = domain
        self.key = key or h.platform.exchange_server.conversion_key(domain)

    def pixel_url(self, conversion_id: str, **extra: str) -> str:
        query = urlencode({"adv": self.domain, "cid": conversion_id, **extra})
        return f"{self.h.base}/conv?{query}&sig={_sign(self.key, query.encode())}"

    async def pixel(self, conversion_id: str, cookie: str = "", **extra: str):
        headers = f"cookie: {cookie}\r\n".encode() if cookie else b""
        reply = await self.h.client.get(
            self.pixel_url(conversion_id, **extra), timeout_s=5, headers=headers
        )
        outcome = reply.headers.get("x-openbid-conversion") or reply.body.decode("latin-1")
        return reply.status, outcome

    async def postback(self, conversion_id: str, signature: str | None = None, **fields):
        body = json.dumps(
            {"advertiser": self.domain, "conversion_id": conversion_id, **fields}
        ).encode()
        sig = _sign(self.key, body) if signature is None else signature
        reply = await self.h.client.post(
            f"{self.h.base}/conv",
            body,
            timeout_s=5,
            headers=f"x-openbid-signature: sha256={sig}\r\n".encode(),
        )
        return reply.status, json.loads(reply.body)


async def _clicked(h, request: dict | None = None) -> tuple[dict, str, str]:
    """An auction won, its ad seen (impression tracker) and clicked: the bid, the click id
    the landing page got, the view cookie the browser got."""
    status, body = await h.auction(request or bid_request())
    assert status == 200
    bid = _won_bid(body)
    impression = await h.client.get(bid["burl"], timeout_s=5)
    cookie = impression.headers["set-cookie"].split(";", 1)[0]
    (link,) = _hrefs(bid["adm"])
    status, headers, _ = await h.get(link)
    assert status == 302
    return bid, headers["location"].partition("&obclid=")[2], cookie


def _conversions(tmp_path) -> list[dict]:
    return EventReader(tmp_path / "events").read_table("conversion").to_pylist()


def test_pixel_and_postback_are_attributed_to_the_click_they_carry_back(tmp_path):
    async def main():
        h = await start(tmp_path, [MarkupDsp("alpha", 2.0, BANNER)])
        try:
            bid, obclid, _ = await _clicked(h)
            advertiser = Advertiser(h)
            pixel = await advertiser.pixel("order-1", obclid=obclid, value="12.50")
            postback = await advertiser.postback("order-2", obclid=obclid, value=30, currency="EUR")
            return bid, pixel, postback
        finally:
            await stop(h)

    bid, pixel, postback = run(main())
    assert pixel == (200, "click") and postback == (200, {"status": "click"})
    events = sorted(_conversions(tmp_path), key=lambda e: e["conversion_id"])
    (click,) = EventReader(tmp_path / "events").read_table("click").to_pylist()
    assert [(e["conversion_id"], e["source"], e["value_micros"]) for e in events] == [
        ("order-1", "pixel", 12_500_000),
        ("order-2", "postback", 32_400_000),  # EUR at the configured 1.08
    ]
    for event in events:
        assert event["attribution"] == "click" and event["reason"] == ""
        assert (event["bid_id"], event["auction_id"]) == (bid["id"], click["auction_id"])
        assert event["click_id"] == click["click_id"] and event["dsp"] == "alpha"
        assert event["user_id"] == "user-1" and event["advertiser"] == ADVERTISER
        assert event["touch_ts_micros"] == click["ts_micros"]
        assert event["conversion_ts_micros"] == event["ts_micros"] >= click["ts_micros"]


def test_a_wrong_signature_is_refused_and_nothing_is_logged(tmp_path):
    async def main():
        h = await start(tmp_path, [MarkupDsp("alpha", 2.0, BANNER)])
        try:
            advertiser = Advertiser(h)
            other = Advertiser(h, key=Advertiser(h, "other.example").key)  # another's key
            url = advertiser.pixel_url("order-1", value="10")
            got = [
                (await other.pixel("order-1"))[0],
                (await h.get(url.replace("value=10", "value=99")))[0],
                (await h.get(url.replace("&sig=", "&sig=0")))[0],
                (await h.get(url.split("&sig=")[0]))[0],
                (await h.get(url + "&extra=1"))[0],
                (await other.postback("order-1"))[0],
                (await advertiser.postback("order-1", signature="0" * 64))[0],
                (await advertiser.postback("order-1", signature=""))[0],
            ]
            # The genuine report still counts after all of that: nothing burnt its id.
            got.append(await advertiser.pixel("order-1", value="10"))
            return got
        finally:
            await stop(h)

    assert run(main()) == [403] * 8 + [(200, "unattributed")]
    (event,) = _conversions(tmp_path)
    assert (event["attribution"], event["reason"]) == ("none", "no_touch")


def test_a_conversion_id_is_counted_once_even_when_requests_race(tmp_path):
    async def main():
        h = await start(tmp_path, [MarkupDsp("alpha", 2.0, BANNER)])
        try:
            _, obclid, _ = await _clicked(h)
            advertiser = Advertiser(h)
            sequential = [
                await advertiser.pixel("order-1", obclid=obclid),
                await advertiser.pixel("order-1", obclid=obclid),
                await advertiser.postback("order-1", obclid=obclid),
            ]
            racing = await asyncio.gather(
                *(advertiser.pixel("order-2", obclid=obclid) for _ in range(10)),
                *(advertiser.postback("order-2", obclid=obclid) for _ in range(10)),
            )
            return sequential, racing
        finally:
            await stop(h)

    sequential, racing = run(main())
    assert sequential == [(200, "click"), (200, "duplicate"), (200, {"status": "duplicate"})]
    outcomes = [r[1] if isinstance(r[1], str) else r[1]["status"] for r in racing]
    assert sorted(outcomes) == ["click"] + ["duplicate"] * 19
    assert sorted(e["conversion_id"] for e in _conversions(tmp_path)) == ["order-1", "order-2"]


@pytest.mark.services
def test_conversion_ids_are_counted_once_across_workers_sharing_redis(tmp_path, redis_url):
    async def main():
        first = await start(tmp_path / "one", [MarkupDsp("alpha", 2.0, BANNER)])
        second = await start(tmp_path / "two", [MarkupDsp("beta", 2.0, BANNER)])
        store = RedisCounterStore(redis_url, prefix=f"test:{secrets.token_hex(4)}:", timeout_s=1.0)
        try:
            for worker in (first, second):  # the two workers' dedup goes through one Redis
                worker.platform.exchange_server.conversions.dedup.counters = store
            _, obclid, _ = await _clicked(first)
            one, two = Advertiser(first), Advertiser(second)
            outcomes = []
            for number in range(10):
                pair = await asyncio.gather(
                    one.pixel(f"order-{number}", obclid=obclid),
                    two.postback(f"order-{number}", obclid=obclid),
                )
                outcomes.append(sorted([pair[0][1], pair[1][1]["status"]]))
            return outcomes
        finally:
            await stop(first)
            await stop(second)
            await store.aclose()

    assert run(main()) == [["click", "duplicate"]] * 10
    logged = _conversions(tmp_path / "one") + _conversions(tmp_path / "two")
    assert sorted(e["conversion_id"] for e in logged) == sorted(f"order-{n}" for n in range(10))


def test_post_view_a_conversion_follows_the_impression_its_browser_saw(tmp_path):
    async def main():
        h = await start(tmp_path, [MarkupDsp("alpha", 2.0, BANNER)])
        try:
            status, body = await h.auction(bid_request())
            bid = _won_bid(body)
            impression = await h.client.get(bid["burl"], timeout_s=5)
            cookie = impression.headers["set-cookie"]
            assert "HttpOnly" in cookie and "Max-Age=86401" in cookie
            cookie = cookie.split(";", 1)[0]
            advertiser = Advertiser(h)
            return bid, [
                await advertiser.pixel("order-1", cookie=cookie),
                await advertiser.pixel("order-2"),  # a browser without our cookie
                await advertiser.postback("order-3"),  # a server has no cookie
                await Advertiser(h, "other.example").pixel("order-4", cookie=cookie),
                await advertiser.pixel("order-5", cookie=cookie.replace("=", "=x", 1)),
            ]
        finally:
            await stop(h)

    bid, got = run(main())
    assert got == [
        (200, "view"),
        (200, "unattributed"),
        (200, {"status": "unattributed"}),
        (200, "unattributed"),
        (200, "unattributed"),
    ]
    events = {e["conversion_id"]: e for e in _conversions(tmp_path)}
    (impression,) = EventReader(tmp_path / "events").read_table("impression").to_pylist()
    view = events["order-1"]
    assert (view["attribution"], view["bid_id"], view["click_id"]) == ("view", bid["id"], "")
    assert view["touch_ts_micros"] == impression["ts_micros"] and view["user_id"] == "user-1"
    assert [events[c]["reason"] for c in ("order-2", "order-3", "order-4", "order-5")] == [
        "no_touch"
    ] * 4


def test_a_conversion_arriving_after_its_window_is_logged_unattributed(tmp_path):
    """The market clock is moved past each window (no sleeping): a click of an hour ago is
    out of a one-hour post-click window, an impression of 11 minutes ago out of a
    ten-minute post-view window; a late report stating a time inside the window counts."""
    start_s = 1_900_000_000.0
    previous = clock.set_clock(clock.MarketClock(speed=1.0, start_s=start_s))

    async def main():
        h = await start(
            tmp_path,
            [MarkupDsp("alpha", 2.0, BANNER)],
            conversion_window_s=3600,
            view_conversion_window_s=600,
        )
        try:
            _, obclid, cookie = await _clicked(h)
            advertiser = Advertiser(h)
            inside = await advertiser.pixel("in-window", obclid=obclid)
            clock.set_clock(clock.MarketClock(speed=1.0, start_s=start_s + 660))
            view_late = await advertiser.pixel("view-late", cookie=cookie)
            click_still = await advertiser.pixel("click-still", obclid=obclid, cookie=cookie)
            clock.set_clock(clock.MarketClock(speed=1.0, start_s=start_s + 3_700))
            click_late = await advertiser.postback("click-late", obclid=obclid)
            stated = await advertiser.postback("stated", obclid=obclid, ts=start_s + 1_800)
            return [inside, view_late, click_still, click_late, stated]
        finally:
            await stop(h)

    try:
        got = run(main())
    finally:
        clock.set_clock(previous)
    assert got == [
        (200, "click"),
        (200, "unattributed"),
        (200, "click"),
        (200, {"status": "unattributed"}),
        (200, {"status": "click"}),
    ]
    events = {e["conversion_id"]: e for e in _conversions(tmp_path)}
    (click,) = EventReader(tmp_path / "events").read_table("click").to_pylist()
    late = events["click-late"]
    assert (late["attribution"], late["reason"]) == ("none", "click_window")
    assert late["click_id"] == click["click_id"] and late["touch_ts_micros"] == click["ts_micros"]
    assert late["conversion_ts_micros"] - click["ts_micros"] > 3_600_000_000
    assert (events["view-late"]["attribution"], events["view-late"]["reason"]) == (
        "none",
        "view_window",
    )
    assert events["stated"]["conversion_ts_micros"] == int((start_s + 1_800) * 1e6)
    assert events["stated"]["ts_micros"] > events["stated"]["conversion_ts_micros"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cid": ""}, "cid"),
        ({"value": "abc"}, "value"),
        ({"value": "-1"}, "value"),
        ({"value": "nan"}, "value"),
        ({"cur": "XYZ"}, "cur"),
        ({"ts": "99999999999"}, "ts"),
        ({"adv": "not a domain!"}, "adv"),
    ],
)
def test_a_bad_pixel_gets_400_naming_the_field(tmp_path, fields, field):
    async def main():
        h = await start(tmp_path, [])
        try:
            advertiser = Advertiser(h)
            params = {"adv": ADVERTISER, "cid": "order-1", **fields}
            query = urlencode(params)
            reply = await h.client.get(
                f"{h.base}/conv?{query}&sig={_sign(advertiser.key, query.encode())}", timeout_s=5
            )
            return reply.status, json.loads(reply.body)
        finally:
            await stop(h)

    status, body = run(main())
    assert status == 400 and body["field"] == field, body


def test_a_bad_postback_gets_400_naming_the_field(tmp_path):
    async def main():
        h = await start(tmp_path, [])
        try:
            advertiser = Advertiser(h)
            got = []
            for body in (b"not json", b'{"advertiser": "shop.example"}', b'{"advertiser": 5}'):
                reply = await h.client.post(f"{h.base}/conv", body, timeout_s=5)
                got.append((reply.status, json.loads(reply.body)["field"]))
            got.append(await advertiser.postback("order-1", value=[1]))
            return got
        finally:
            await stop(h)

    got = run(main())
    assert got[:3] == [(400, "body"), (400, "conversion_id"), (400, "advertiser")]
    assert got[3][0] == 400 and got[3][1]["field"] == "value"


def test_the_key_openbid_conversion_key_prints_is_the_one_the_exchange_checks(tmp_path):
    runner = CliRunner()
    printed = runner.invoke(
        main,
        ["conversion-key", "Shop.Example"],
        env={"OPENBID_EXCHANGE__TRACKER_SECRET": "test-secret-0123456789abcdef"},
    )
    assert printed.exit_code == 0, printed.output
    refused = runner.invoke(main, ["conversion-key", "shop.example"], env={"OPENBID_CONFIG": ""})
    assert refused.exit_code != 0 and "tracker_secret" in refused.output

    async def main_():
        h = await start(tmp_path, [])  # the same secret as above
        try:
            return await Advertiser(h, key=printed.output.strip()).pixel("order-1")
        finally:
            await stop(h)

    assert run(main_()) == (200, "unattributed")
