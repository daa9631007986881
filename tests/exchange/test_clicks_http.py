"""Clicks over HTTP on a real exchange: the markup we answer with puts our signed click
tracker in front of the DSP's landing pages (anchors, click macros, native links, VAST), the
click lands on the signed landing URL with our click id, and nothing else: a tampered link
or an appended URL off the bid's advertiser domains is refused (no open redirect). The user
rides along where consent allows."""

from __future__ import annotations

import base64
import html
import json
import re
from urllib.parse import parse_qs, quote, urlsplit

from openbid import clock
from openbid.events import EventReader
from openbid.exchange.trackers import CLICK_TOKEN, JOURNEY_TOKEN
from openbid.http.server import Request, Response
from openbid.privacy.tcf import TCString
from openbid.privacy.tcf import encode as encode_tc

from .test_e2e import ScriptedDsp, bid_request, run, start, stop

BANNER = (
    '<a href="%%CLICK_URL_UNESC%%https://www.shop.example/p?x=1&amp;y=2" target="_blank">'
    '<img src="https://cdn.shop.example/i.png"></a>'
    "<script>window.clickPrefix = '%%CLICK_URL_UNESC%%';</script>"
)


class MarkupDsp(ScriptedDsp):
    """A DSP that bids `price` with the markup and advertiser domains it is given."""

    def __init__(self, name: str, price: float, adm: str, adomain=("shop.example",)) -> None:
        super().__init__(name, price)
        self.adm = adm
        self.adomains = list(adomain)

    async def _bid(self, request: Request) -> Response:
        body = json.loads(request.body)
        self.requests.append(body)
        bid = {
            "id": f"{self.name}-b1",
            "impid": body["imp"][0]["id"],
            "price": self.price,
            "adm": self.adm,
            "adomain": self.adomains,
            "crid": "cr-1",
            "w": 300,
            "h": 250,
        }
        reply = {"id": body["id"], "seatbid": [{"seat": self.name, "bid": [bid]}]}
        return Response(200, json.dumps(reply).encode())


def _hrefs(markup: str) -> list[str]:
    return [html.unescape(h) for _, h in re.findall(r"""href=(["'])(.*?)\1""", markup)]


def _prefix(markup: str) -> str:
    return re.search(r"window.clickPrefix = '([^']*)'", markup).group(1)


def _won_bid(body: bytes) -> dict:
    return json.loads(body)["seatbid"][0]["bid"][0]


def test_click_through_the_tracker_lands_on_the_signed_landing_url_with_a_click_id(tmp_path):
    async def main():
        h = await start(tmp_path, [MarkupDsp("alpha", 2.0, BANNER)])
        try:
            status, body = await h.auction(bid_request())
            assert status == 200
            bid = _won_bid(body)
            (link,) = _hrefs(bid["adm"])
            assert link.startswith(f"{h.base}/t/click?")
            assert "%%CLICK_URL" not in bid["adm"]
            status, headers, _ = await h.get(link)
            assert status == 302
            landing, _, click_id = headers["location"].partition("&obclid=")
            assert landing == "https://www.shop.example/p?x=1&y=2"
            click = h.platform.exchange.signer.open_token(CLICK_TOKEN, click_id)
            status, _, _ = await h.get(bid["burl"])
            assert status == 200
            return bid, click
        finally:
            await stop(h)

    bid, click = run(main())
    reader = EventReader(tmp_path / "events")
    (event,) = reader.read_table("click").to_pylist()
    assert event["bid_id"] == bid["id"] and event["dsp"] == "alpha"
    assert event["user_id"] == "user-1" and event["advertiser"] == "shop.example"
    assert event["click_id"] and event["creative_id"] == "cr-1"
    # The click id carried back names that click, its bid, advertiser, user and time.
    assert click[:7] and click[0] == event["click_id"] and click[2] == bid["id"]
    assert click[4:6] == ["shop.example", "user-1"] and int(click[6]) == event["ts_micros"]
    (impression,) = reader.read_table("impression").to_pylist()
    assert impression["user_id"] == "user-1" and impression["advertiser"] == "shop.example"


def _retoken(link: str, change) -> str:
    """`link` with the values of its click token changed by `change`, the MAC kept."""
    base, _, token = link.partition("?c=")
    payload, mac = token.split(".")
    values = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    changed = base64.urlsafe_b64encode(json.dumps(change(values)).encode()).rstrip(b"=")
    return f"{base}?c={changed.decode()}.{mac}"


def test_a_tampered_click_link_is_refused(tmp_path):
    async def main():
        h = await start(tmp_path, [MarkupDsp("alpha", 2.0, BANNER)])
        try:
            _, body = await h.auction(bid_request())
            bid = _won_bid(body)
            (link,) = _hrefs(bid["adm"])
            statuses = []
            for tampered in (
                _retoken(link, lambda v: [*v[:7], "https://evil.example/", v[8]]),
                _retoken(link, lambda v: [v[0], v[1], "other-bid", *v[3:]]),
                _retoken(link, lambda v: [*v[:5], "someone", *v[6:]]),
                _retoken(link, lambda v: [str(int(v[0]) + 10**6), *v[1:]]),
                link[:-3],
                link.rpartition(".")[0],
                # a valid token of another kind: the journey token of the impression tracker
                link.split("?c=")[0] + "?c=" + bid["burl"].split("&j=")[1],
            ):
                assert tampered != link
                status, headers, _ = await h.get(tampered)
                statuses.append((status, "location" in headers))
            return statuses
        finally:
            await stop(h)

    assert run(main()) == [(403, False)] * 7
    assert EventReader(tmp_path / "events").read_table("click").num_rows == 0


def test_an_expired_click_link_and_a_foreign_journey_token_are_refused(tmp_path):
    start_s = 1_900_000_000.0
    previous = clock.set_clock(clock.MarketClock(speed=1.0, start_s=start_s))

    async def main():
        h = await start(tmp_path, [MarkupDsp("alpha", 2.0, BANNER)], tracker_ttl_s=600)
        try:
            _, body = await h.auction(bid_request(id="r1"))
            first = _won_bid(body)
            _, body = await h.auction(bid_request(id="r2"))
            second = _won_bid(body)
            swapped = first["burl"].split("&j=")[0] + "&j=" + second["burl"].split("&j=")[1]
            impression = (await h.get(swapped))[0]
            (link,) = _hrefs(first["adm"])
            clock.set_clock(clock.MarketClock(speed=1.0, start_s=start_s + 601))
            status, _, body = await h.get(link)
            return impression, status, body
        finally:
            await stop(h)

    try:
        impression, status, body = run(main())
    finally:
        clock.set_clock(previous)
    assert impression == 403
    assert status == 403 and b"expired" in body


def test_the_click_macro_prefix_redirects_only_to_the_bids_advertiser_domains(tmp_path):
    async def main():
        h = await start(tmp_path, [MarkupDsp("alpha", 2.0, BANNER, ("shop.example", "x.example"))])
        try:
            _, body = await h.auction(bid_request())
            prefix = _prefix(_won_bid(body)["adm"])
            assert prefix.startswith(f"{h.base}/t/click?") and prefix.endswith("&adurl=")
            got = {}
            for appended in (
                "https://www.shop.example/landing?a=1&b=2",  # unescaped, as GAM's macro is
                quote("https://x.example/deal?c=3", safe=""),  # passed through a redirect
                "https://evil.example/",
                "https://shop.example.evil.example/",
                "https://evil.example\\@shop.example/",
                "https://user@shop.example/",
                "javascript:alert(1)//shop.example",
                "",
            ):
                status, headers, _ = await h.get(prefix + appended)
                got[appended] = (status, headers.get("location", "").partition("obclid=")[0])
            tampered = prefix.replace("dom=", "dom=evil.example%2C")
            status, _, _ = await h.get(tampered + "https://evil.example/")
            got["tampered"] = (status, "")
            return got
        finally:
            await stop(h)

    got = run(main())
    assert got == {
        "https://www.shop.example/landing?a=1&b=2": (
            302,
            "https://www.shop.example/landing?a=1&b=2&",
        ),
        quote("https://x.example/deal?c=3", safe=""): (302, "https://x.example/deal?c=3&"),
        "https://evil.example/": (403, ""),
        "https://shop.example.evil.example/": (403, ""),
        "https://evil.example\\@shop.example/": (400, ""),
        "https://user@shop.example/": (400, ""),
        "javascript:alert(1)//shop.example": (400, ""),
        "": (400, ""),
        "tampered": (403, ""),
    }
    assert EventReader(tmp_path / "events").read_table("click").num_rows == 2


def test_native_links_and_vast_click_throughs_go_through_our_tracker(tmp_path):
    native_adm = json.dumps(
        {"ver": "1.2", "link": {"url": "https://shop.example/n"}, "assets": [{"id": 1}]}
    )
    vast = (
        '<VAST version="4.0"><Ad id="1"><InLine><AdSystem>x</AdSystem><Creatives><Creative>'
        "<Linear><VideoClicks><ClickThrough><![CDATA[https://shop.example/v]]></ClickThrough>"
        "</VideoClicks></Linear></Creative></Creatives></InLine></Ad></VAST>"
    )

    async def main():
        native_dsp = MarkupDsp("nat", 2.0, native_adm)
        h = await start(tmp_path, [native_dsp])
        try:
            request = json.dumps({"ver": "1.2", "assets": [{"id": 1, "title": {"len": 90}}]})
            native_imp = [{"id": "1", "native": {"request": request, "ver": "1.2"}}]
            _, body = await h.auction(bid_request(imp=native_imp))
            native_link = json.loads(_won_bid(body)["adm"])["link"]["url"]
            native_dsp.adm = vast
            video_imp = [{"id": "1", "video": {"mimes": ["video/mp4"], "w": 640, "h": 360}}]
            _, body = await h.auction(bid_request(imp=video_imp))
            adm = _won_bid(body)["adm"]
            video_link = re.search(r"<ClickThrough><!\[CDATA\[(.*?)\]\]>", adm).group(1)
            landings = []
            for link in (native_link, video_link):
                assert link.startswith(f"{h.base}/t/click?")
                status, headers, _ = await h.get(link)
                landings.append((status, headers["location"].partition("?obclid=")[0]))
            return landings
        finally:
            await stop(h)

    assert run(main()) == [(302, "https://shop.example/n"), (302, "https://shop.example/v")]


def test_the_ad_tag_wraps_banner_anchors_too(tmp_path):
    async def main():
        h = await start(tmp_path, [MarkupDsp("alpha", 2.0, BANNER)])
        try:
            status, _, page = await h.get(f"{h.base}/ad?placement=pl-1&uid=tag-user")
            assert status == 200
            (link,) = _hrefs(page.decode())
            status, headers, _ = await h.get(link)
            return status, headers["location"].partition("&obclid=")[0]
        finally:
            await stop(h)

    assert run(main()) == (302, "https://www.shop.example/p?x=1&y=2")
    (click,) = EventReader(tmp_path / "events").read_table("click").to_pylist()
    assert click["user_id"] == "tag-user"


def _tc(purposes: set[int]) -> str:
    return encode_tc(
        TCString(
            cmp_id=7,
            vendor_list_version=100,
            purpose_consents=frozenset(purposes),
            max_vendor_consent_id=10,
            vendor_consents=frozenset({10}),
        )
    )


def test_the_user_is_kept_only_where_consent_allows(tmp_path):
    """No storage consent under GDPR (or an LMT device): the impression and click carry no
    user, and no view cookie is set; with it, both carry the user and the cookie is set."""

    async def main():
        h = await start(tmp_path, [MarkupDsp("alpha", 2.0, BANNER)], vendor_ids={"alpha": 10})
        try:
            seen = {}
            cases = {
                "gdpr_storage": bid_request(
                    id="r1", regs={"gdpr": 1}, user={"id": "u-ok", "consent": _tc({1, 2, 3, 4})}
                ),
                "gdpr_no_storage": bid_request(
                    id="r2", regs={"gdpr": 1}, user={"id": "u-no", "consent": _tc({2, 3, 4})}
                ),
                "lmt": bid_request(
                    id="r3", user={"id": "u-lmt"}, device={**bid_request()["device"], "lmt": 1}
                ),
                "app_ifa_only": bid_request(id="r4", user=None),
            }
            for name, request in cases.items():
                if request.get("user") is None:
                    del request["user"]
                status, body = await h.auction(request)
                assert status == 200, (name, body)
                bid = _won_bid(body)
                journey = parse_qs(urlsplit(bid["burl"]).query)["j"][0]
                _, user_id, _, _ = h.platform.exchange.signer.open_token(JOURNEY_TOKEN, journey)
                status, headers, _ = await h.get(bid["burl"])
                (link,) = _hrefs(bid["adm"])
                await h.get(link)
                seen[name] = (user_id, "set-cookie" in headers)
            return seen
        finally:
            await stop(h)

    seen = run(main())
    assert seen == {
        "gdpr_storage": ("u-ok", True),
        "gdpr_no_storage": ("", False),
        "lmt": ("", False),
        "app_ifa_only": ("device-ifa-1", True),
    }
    reader = EventReader(tmp_path / "events")
    impressions = sorted(e["user_id"] for e in reader.read_table("impression").to_pylist())
    clicks = sorted(e["user_id"] for e in reader.read_table("click").to_pylist())
    assert impressions == clicks == ["", "", "device-ifa-1", "u-ok"]
