"""End to end: the real exchange (platform, HTTP, catalog, event log) against scripted DSPs
on loopback ports. Each DSP is a real HTTP server whose answers the test controls."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.parse
from pathlib import Path

import pytest

from openbid.config import load_config
from openbid.domain import DemandPartner, Placement
from openbid.events import EventReader
from openbid.http.client import FanoutClient
from openbid.http.granian_server import GranianServer
from openbid.http.server import HttpServer, Request, Response, Router
from openbid.platform import Platform
from openbid.privacy.tcf import TCString
from openbid.privacy.tcf import encode as encode_tc

API_KEY = "publisher-key-1"


class ScriptedDsp:
    """A DSP answering with `price` (or no bid), after `delay_s`, recording what it saw."""

    def __init__(
        self,
        name: str,
        price: float | None = None,
        *,
        delay_s: float = 0.0,
        deal_id: str = "",
        adomain: str = "brand.example",
    ) -> None:
        self.name = name
        self.price = price
        self.delay_s = delay_s
        self.deal_id = deal_id
        self.adomain = adomain
        self.requests: list[dict] = []
        self.hold: asyncio.Event | None = None  # when set: answer only once it is set
        self.answered = 0
        self.notices: dict[str, list[str]] = {"win": [], "bill": [], "loss": []}
        self.server: HttpServer | None = None
        self.port = 0

    async def start(self) -> None:
        router = Router()
        router.add("POST", "/bid", self._bid)
        for kind in self.notices:
            router.add("GET", f"/{kind}", self._notice(kind))
        self.server = HttpServer(router)
        self.port = await self.server.start()

    def _notice(self, kind):
        async def handle(request: Request) -> Response:
            self.notices[kind].append(request.query_string)
            return Response(200, b"")

        return handle

    async def _bid(self, request: Request) -> Response:
        body = json.loads(request.body)
        self.requests.append(body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.hold is not None:
            await self.hold.wait()
        self.answered += 1
        if self.price is None:
            if self.name.endswith("empty"):  # the common off-spec way of saying "no bid"
                return Response(200, json.dumps({"id": body["id"], "seatbid": []}).encode())
            return Response(204)
        base = f"http://127.0.0.1:{self.port}"
        bid = {
            "id": f"{self.name}-b1",
            "impid": body["imp"][0]["id"],
            "price": self.price,
            "adm": f"<div class='ad'>{self.name} paid ${{AUCTION_PRICE}}</div>",
            "nurl": f"{base}/win?p=${{AUCTION_PRICE}}",
            "burl": f"{base}/bill?p=${{AUCTION_PRICE}}",
            "lurl": f"{base}/loss?r=${{AUCTION_LOSS}}",
            "adomain": [self.adomain],
            "crid": f"cr-{self.name}",
            "w": 300,
            "h": 250,
        }
        if self.deal_id:
            bid["dealid"] = self.deal_id
        return Response(
            200,
            json.dumps({"id": body["id"], "seatbid": [{"seat": self.name, "bid": [bid]}]}).encode(),
        )

    async def stop(self) -> None:
        if self.server:
            await self.server.stop(grace_s=0.1)


def bid_request(**overrides) -> dict:
    request = {
        "id": "req-1",
        "imp": [{"id": "1", "banner": {"format": [{"w": 300, "h": 250}]}, "bidfloor": 0.5}],
        "site": {
            "id": "site-1",
            "domain": "news.example",
            "page": "https://news.example/a",
            "publisher": {"id": "pub-1"},
        },
        "device": {
            "ua": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/120.0 Safari/537.36",
            "ip": "203.0.113.7",
            "ifa": "device-ifa-1",
            "geo": {"country": "DEU", "lat": 52.52437, "lon": 13.41053},
        },
        "user": {"id": "user-1", "buyeruid": "buyer-1"},
        "at": 2,
        "tmax": 300,
    }
    request.update(overrides)
    return request


class Harness:
    def __init__(self, platform: Platform, dsps: dict[str, ScriptedDsp], tmp_path: Path):
        self.platform = platform
        self.dsps = dsps
        self.tmp_path = tmp_path
        self.client = FanoutClient()
        self.base = f"http://127.0.0.1:{platform.port}"

    async def auction(self, body: dict | bytes, key: str = API_KEY):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self._post("/openrtb2/auction", raw, key)

    async def _post(self, path: str, raw: bytes, key: str):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.platform.port)
        head = (
            f"POST {path} HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\n"
            f"content-length: {len(raw)}\r\nconnection: close\r\n\r\n"
        ).encode()
        writer.write(head + raw)
        data = await reader.read()
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        return status, body

    async def get(self, url: str):
        response = await self.client.get(url, timeout_s=5)
        return response.status, response.headers, response.body


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


ENGINES = ["builtin", "granian"]
"""`server.engine`: the round trips below run on both (docs/operations.md)."""


async def start(
    tmp_path: Path, dsps: list[ScriptedDsp], *, vendor_ids=None, engine="builtin", **exchange
):
    for dsp in dsps:
        await dsp.start()
    port = _free_port()
    env = {
        "OPENBID_SERVER__ENGINE": engine,
        "OPENBID_SERVER__PORT": str(port),
        "OPENBID_EXCHANGE__PUBLIC_URL": f"http://127.0.0.1:{port}",
        "OPENBID_EVENTS__DIR": str(tmp_path / "events"),
        "OPENBID_EVENTS__FLUSH_INTERVAL_S": "0.05",
        "OPENBID_STORES__CATALOG_URL": f"sqlite:///{tmp_path}/catalog.db",
        "OPENBID_EXCHANGE__TRACKER_SECRET": "test-secret-0123456789abcdef",
        "OPENBID_EXCHANGE__NOTICE_PRIVATE_HOSTS": "true",  # the test DSPs are on loopback
    }
    for key, value in exchange.items():
        env[f"OPENBID_EXCHANGE__{key.upper()}"] = str(value)
    config = load_config(environ=env)
    platform = Platform(config)
    platform.open()
    catalog = platform.catalog
    catalog.add_publisher("pub-1", "News", api_key=API_KEY, floor_micros=100_000)
    catalog.add_placement(Placement("pl-1", "pub-1", "top", sizes=((300, 250),)))
    for dsp in dsps:
        catalog.upsert_demand_partner(
            DemandPartner(
                dsp.name,
                f"http://127.0.0.1:{dsp.port}/bid",
                seat=dsp.name,
                vendor_id=(vendor_ids or {}).get(dsp.name),
                timeout_ms=250,
            )
        )
    platform.exchange_server.refresh()
    await platform.serve()
    return Harness(platform, {d.name: d for d in dsps}, tmp_path)


async def stop(harness: Harness) -> None:
    harness.client.close()
    await harness.platform.close()
    for dsp in harness.dsps.values():
        await dsp.stop()


async def poll(condition, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("engine", ENGINES)
def test_winning_auction_second_price_notices_and_events(tmp_path, engine):
    async def main():
        dsps = [
            ScriptedDsp("alpha", 2.0),
            ScriptedDsp("beta", 1.5),
            ScriptedDsp("gamma"),
            ScriptedDsp("delta_empty"),
        ]
        h = await start(tmp_path, dsps, engine=engine)
        try:
            engine_class = GranianServer if engine == "granian" else HttpServer
            assert type(h.platform.server) is engine_class
            status, body = await h.auction(bid_request())
            assert status == 200, body
            response = json.loads(body)
            bid = response["seatbid"][0]["bid"][0]
            assert response["id"] == "req-1" and response["cur"] == "USD"
            assert bid["price"] == pytest.approx(1.51)  # second price + 1 cent
            assert "alpha paid 1.51" in bid["adm"]  # ${AUCTION_PRICE} substituted
            await poll(lambda: h.dsps["beta"].notices["loss"])
            # We answered an OpenRTB caller with its own auction: alpha's win notice waits
            # until the caller tells us we won (our signed nurl), once however often.
            assert h.dsps["alpha"].notices["win"] == []
            for _ in range(2):
                status, _, _ = await h.get(bid["nurl"])
                assert status == 204
            await poll(lambda: h.dsps["alpha"].notices["win"])
            tampered = bid["nurl"].replace("price=", "price=9")
            assert (await h.get(tampered))[0] == 403
            await asyncio.sleep(0.1)
            assert h.dsps["alpha"].notices["win"] == ["p=1.51"]
            assert h.dsps["beta"].notices["loss"] == ["r=102"]
            seen = h.dsps["alpha"].requests[0]
            assert seen["imp"][0]["bidfloor"] == pytest.approx(0.5)
            assert seen["tmax"] < 300
            # the impression tracker bills the winner once, however often it fires
            for _ in range(3):
                status, _, _ = await h.get(bid["burl"])
                assert status == 200
            await poll(lambda: h.dsps["alpha"].notices["bill"])
            await asyncio.sleep(0.2)
            assert h.dsps["alpha"].notices["bill"] == ["p=1.51"]
        finally:
            await stop(h)
        reader = EventReader(tmp_path / "events")
        auctions = reader.read_table("auction").to_pylist()
        assert len(auctions) == 1 and auctions[0]["outcome"] == "won"
        features = dict(auctions[0]["features"])
        assert features["country"] == "DEU" and features["size"] == "300x250"
        bids = reader.read_table("bid").to_pylist()
        assert sorted((b["dsp"], b["bid"], b["won"], b["error"]) for b in bids) == [
            ("alpha", True, True, ""),
            ("beta", True, False, ""),
            ("delta_empty", False, False, ""),
            ("gamma", False, False, ""),
        ]
        by_dsp = {b["dsp"]: b for b in bids}
        alpha, gamma = by_dsp["alpha"], by_dsp["gamma"]
        assert (alpha["price_micros"], alpha["imp_id"], alpha["decision"]) == (
            2_000_000,
            "1",
            "called",
        )
        assert alpha["bid_id"] and alpha["deal_id"] == "" and alpha["send_probability"] == 1.0
        assert alpha["latency_ms"] > 0 and gamma["latency_ms"] > 0
        assert (gamma["price_micros"], gamma["bid_id"], gamma["shaping_score"]) == (0, "", -1.0)
        assert {b["auction_id"] for b in bids} == {auctions[0]["auction_id"]}
        assert reader.read_table("impression").num_rows == 1
        notices = reader.read_table("notice").to_pylist()
        assert sorted(n["notice"] for n in notices) == ["billing", "loss", "win"]

    run(main())


def test_deal_beats_open_bids(tmp_path):
    async def main():
        dsps = [ScriptedDsp("open", 9.0), ScriptedDsp("dealer", 3.0, deal_id="deal-7")]
        h = await start(tmp_path, dsps)
        try:
            request = bid_request()
            request["imp"][0]["pmp"] = {"deals": [{"id": "deal-7", "bidfloor": 2.0}]}
            status, body = await h.auction(request)
            bid = json.loads(body)["seatbid"][0]["bid"][0]
            assert status == 200 and "dealer" in bid["adm"] and bid["dealid"] == "deal-7"
            await poll(lambda: h.dsps["open"].notices["loss"])
            assert h.dsps["open"].notices["loss"] == ["r=103"]
        finally:
            await stop(h)

    run(main())


def test_floor_rejects_low_bids(tmp_path):
    async def main():
        h = await start(tmp_path, [ScriptedDsp("cheap", 0.4), ScriptedDsp("cheaper", 0.3)])
        try:
            status, _ = await h.auction(bid_request())
            assert status == 204
            await poll(lambda: h.dsps["cheap"].notices["loss"])
            assert h.dsps["cheap"].notices["loss"] == ["r=100"]
        finally:
            await stop(h)

    run(main())


def test_consent_strips_user_ids_for_a_dsp_without_consent(tmp_path):
    async def main():
        dsps = [
            ScriptedDsp("consented", 1.0),
            ScriptedDsp("interest_only", 1.0),
            ScriptedDsp("unknown_vendor", 1.0),
        ]
        vendor_ids = {"consented": 10, "interest_only": 20, "unknown_vendor": 30}
        h = await start(tmp_path, dsps, vendor_ids=vendor_ids)
        try:
            # Vendor 10 has consent; vendor 20 only a legitimate interest in basic ads
            # (purpose 2), no consent to store or read ids; vendor 30 has neither.
            tc_string = encode_tc(
                TCString(
                    cmp_id=7,
                    vendor_list_version=100,
                    purpose_consents=frozenset({1, 2, 3, 4}),
                    purpose_legitimate_interests=frozenset({2}),
                    max_vendor_consent_id=30,
                    vendor_consents=frozenset({10}),
                    max_vendor_legitimate_interest_id=30,
                    vendor_legitimate_interests=frozenset({20}),
                    special_feature_opt_ins=frozenset({1}),
                )
            )
            request = bid_request(
                regs={"gdpr": 1}, user={"id": "user-1", "buyeruid": "b-1", "consent": tc_string}
            )
            status, _ = await h.auction(request)
            assert status == 200
            consented = h.dsps["consented"].requests[0]
            assert consented["user"]["id"] == "user-1"
            assert consented["device"]["ifa"] == "device-ifa-1"
            stripped = h.dsps["interest_only"].requests[0]
            assert "id" not in stripped.get("user", {})
            assert "buyeruid" not in stripped.get("user", {})
            assert "ifa" not in stripped["device"]
            assert stripped["user"]["consent"] == tc_string
            assert h.dsps["unknown_vendor"].requests == []  # not called at all
        finally:
            await stop(h)

    run(main())


def test_a_dsp_that_never_answers_is_cut_at_its_deadline_and_logged_as_timed_out(tmp_path):
    """The slow DSP answers only when the test lets it, after the auction: the auction can
    only have answered because the exchange stopped waiting at the deadline it gave the DSP."""

    async def main():
        slow = ScriptedDsp("slow", 5.0)
        slow.hold = asyncio.Event()
        h = await start(tmp_path, [ScriptedDsp("fast", 1.0), slow])
        try:
            status, body = await h.auction(bid_request(tmax=150))
            answered_before_reply = slow.answered
            slow.hold.set()
        finally:
            await stop(h)
        return status, body, answered_before_reply, slow.requests

    status, body, answered_before_reply, seen = run(main())
    assert status == 200 and "fast" in json.loads(body)["seatbid"][0]["bid"][0]["adm"]
    assert answered_before_reply == 0 and len(seen) == 1
    given_tmax_ms = seen[0]["tmax"]
    # The DSP was told what is left of 150 ms once our own budget (10 ms) is kept back.
    assert 0 < given_tmax_ms <= 150 - 10
    reader = EventReader(tmp_path / "events")
    (auction,) = reader.read_table("auction").to_pylist()
    assert auction["tmax_ms"] == 150 and auction["dsps_called"] == 2
    assert auction["outcome"] == "won" and auction["winner_dsp"] == "fast"
    slow_event = next(b for b in reader.read_table("bid").to_pylist() if b["dsp"] == "slow")
    assert slow_event["error"] == "timeout" and not slow_event["bid"]
    # Not given up early: it was waited for the whole of its deadline (1 ms: the whole
    # milliseconds of its tmax against the exact timer).
    assert slow_event["latency_ms"] >= given_tmax_ms - 1


@pytest.mark.parametrize("engine", ENGINES)
def test_tampered_click_and_impression_links_are_rejected(tmp_path, engine):
    async def main():
        h = await start(tmp_path, [ScriptedDsp("alpha", 2.0)], engine=engine)
        try:
            signer = h.platform.exchange.signer
            click = f"{h.base}/t/click?" + signer.sign(
                "click", {"auc": "a1", "bid": "b1", "url": "https://shop.example/p"}
            )
            status, headers, _ = await h.get(click)
            # our click id rides along, as gclid does (tests/exchange/test_clicks_http.py)
            assert status == 302 and headers["location"].startswith(
                "https://shop.example/p?obclid="
            )
            evil = click.replace("shop.example", "evil.example")
            status, _, body = await h.get(evil)
            assert status == 403 and b"signature does not match" in body
            status, body = await h.auction(bid_request())
            burl = json.loads(body)["seatbid"][0]["bid"][0]["burl"]
            tampered = burl.replace("price=", "price=9")
            status, _, _ = await h.get(tampered)
            assert status == 403
        finally:
            await stop(h)

    run(main())


def test_click_redirects_carry_no_line_breaks_and_encode_iris(tmp_path):
    async def main():
        h = await start(tmp_path, [ScriptedDsp("alpha", 2.0)])
        try:
            signer = h.platform.exchange.signer
            got = []
            for url in (
                "https://shop.example/\r\nset-cookie: s=1",
                "https://shop.example/caf\u00e9",
            ):
                link = f"{h.base}/t/click?" + signer.sign("click", {"bid": "b1", "url": url})
                status, headers, _ = await h.get(link)
                location = headers.get("location", "").partition("?obclid=")[0]
                got.append((status, location, headers.get("set-cookie")))
            return got
        finally:
            await stop(h)

    assert run(main()) == [
        (302, "https://shop.example/%0D%0Aset-cookie:%20s=1", None),
        (302, "https://shop.example/caf%C3%A9", None),
    ]


@pytest.mark.parametrize(
    ("body", "key", "status", "field"),
    [
        (
            b'{"id":"r","imp":[{"id":"1","video":{"w":640,"h":360}}]}',
            API_KEY,
            400,
            "request.imp[0].video.mimes",
        ),
        (b"not json", API_KEY, 400, ""),
        (json.dumps(bid_request()).encode(), "wrong-key", 401, ""),
        (b"{" + b" " * 70_000 + b"}", API_KEY, 413, ""),
        (
            b'{"id":"r","imp":[{"id":"1","banner":{"w":300,"h":250},'
            b'"bidfloor":5.0,"bidfloorcur":"CHF"}]}',
            API_KEY,
            400,
            "request.imp[0].bidfloorcur",
        ),
        (
            b'{"id":"r","imp":[{"id":"1","banner":{"w":300,"h":250},"pmp":{"deals":'
            b'[{"id":"d1","bidfloor":8.0,"bidfloorcur":"CHF"}]}}]}',
            API_KEY,
            400,
            "request.imp[0].pmp.deals[0].bidfloorcur",
        ),
    ],
    ids=["bad field", "not json", "unknown key", "oversize", "floor currency", "deal currency"],
)
@pytest.mark.parametrize("engine", ENGINES)
def test_bad_requests_get_4xx_with_the_field(tmp_path, body, key, status, field, engine):
    async def main():
        h = await start(tmp_path, [ScriptedDsp("alpha", 2.0)], engine=engine)
        try:
            return await h.auction(body, key=key)
        finally:
            await stop(h)

    got_status, got_body = run(main())
    assert got_status == status
    if field:
        assert json.loads(got_body)["field"] == field


@pytest.mark.parametrize("engine", ENGINES)
def test_ad_tag_renders_html_with_our_impression_pixel(tmp_path, engine):
    async def main():
        h = await start(tmp_path, [ScriptedDsp("alpha", 2.0)], engine=engine)
        try:
            query = urllib.parse.urlencode({"placement": "pl-1", "page": "https://news.example/x"})
            status, headers, body = await h.get(f"{h.base}/ad?{query}")
            assert status == 200 and headers["content-type"].startswith("text/html")
            assert b"alpha paid 2" in body  # first price for ad tags
            assert b"/t/imp?" in body
            status, _, _ = await h.get(f"{h.base}/ad?placement=nope")
            assert status == 404
        finally:
            await stop(h)

    run(main())


def test_a_missing_shaping_model_fails_open(tmp_path):
    async def main():
        dsps = [ScriptedDsp("alpha", 2.0), ScriptedDsp("beta")]
        h = await start(tmp_path, dsps, shaping_model=str(tmp_path / "no-such-model"))
        try:
            assert h.platform.exchange.shaper.failing_open
            status, _ = await h.auction(bid_request())
            assert status == 200
            assert len(h.dsps["beta"].requests) == 1  # every partner still called
        finally:
            await stop(h)
        decisions = {
            b["decision"] for b in EventReader(tmp_path / "events").read_table("bid").to_pylist()
        }
        assert decisions == {"called"}

    run(main())


def test_billing_stays_idempotent_per_worker_when_the_counter_store_is_down(tmp_path):
    async def main():
        h = await start(tmp_path, [ScriptedDsp("alpha", 2.0)])
        try:
            from openbid.stores import RedisCounterStore

            h.platform.exchange_server.counters = RedisCounterStore("redis://127.0.0.1:1/0")
            status, body = await h.auction(bid_request())
            burl = json.loads(body)["seatbid"][0]["bid"][0]["burl"]
            for _ in range(3):
                status, _, _ = await h.get(burl)
                assert status == 200
            await poll(lambda: h.dsps["alpha"].notices["bill"])
            await asyncio.sleep(0.2)
            assert len(h.dsps["alpha"].notices["bill"]) == 1
        finally:
            await stop(h)

    run(main())
