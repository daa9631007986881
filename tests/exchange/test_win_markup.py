"""A DSP bid without markup, answered to an OpenRTB caller: its `nurl` (the DSP's win notice,
whose answer is the markup) is fetched only when the caller says it won, by hitting our
signed `nurl`, which then answers the markup.

Found in a review: the markup was fetched at once even with `final=False`, which fired the
DSP's win notice before our caller had run its own auction.
"""

from __future__ import annotations

import asyncio
import json

from openbid.http.server import Request, Response

from .test_e2e import ScriptedDsp, bid_request, poll, run, start, stop


class NoMarkupDsp(ScriptedDsp):
    """Bids without `adm`; its win notice answers the markup."""

    async def _bid(self, request: Request) -> Response:
        response = await super()._bid(request)
        body = json.loads(response.body)
        for seatbid in body["seatbid"]:
            for bid in seatbid["bid"]:
                del bid["adm"]
        return Response(200, json.dumps(body).encode())

    def _notice(self, kind):
        async def handle(request: Request) -> Response:
            self.notices[kind].append(request.query_string)
            if kind == "win":
                return Response(200, b"<div>served at ${AUCTION_PRICE}</div>", "text/html")
            return Response(200, b"")

        return handle


def test_a_bid_without_markup_fires_its_win_notice_only_when_the_caller_wins(tmp_path):
    async def main():
        h = await start(tmp_path, [NoMarkupDsp("nomarkup", 2.0), ScriptedDsp("second", 1.5)])
        try:
            status, body = await h.auction(bid_request())
            assert status == 200, body
            bid = json.loads(body)["seatbid"][0]["bid"][0]
            assert "adm" not in bid  # no markup yet: the caller gets it from our nurl
            await poll(lambda: h.dsps["second"].notices["loss"])
            await asyncio.sleep(0.1)
            assert h.dsps["nomarkup"].notices["win"] == []  # the caller has not decided
            status, headers, markup = await h.get(bid["nurl"])
            assert status == 200
            assert markup == b"<div>served at 1.51</div>"  # the DSP's price, not ours
            assert headers["content-type"].startswith("text/html")
            assert h.dsps["nomarkup"].notices["win"] == ["p=1.51"]
            status, _, _ = await h.get(bid["nurl"])  # once per bid, however often
            assert status == 204
            await asyncio.sleep(0.1)
            assert h.dsps["nomarkup"].notices["win"] == ["p=1.51"]
        finally:
            await stop(h)

    run(main())


def test_the_ad_tag_fetches_a_bid_without_markup_at_once(tmp_path):
    # Our own auction decides the impression: fetching the markup is the win notice, now.
    async def main():
        h = await start(tmp_path, [NoMarkupDsp("nomarkup", 2.0)])
        try:
            status, _, page = await h.get(f"{h.base}/ad?placement=pl-1&page=https://news.example/")
            return status, page, h.dsps["nomarkup"].notices["win"]
        finally:
            await stop(h)

    status, page, wins = run(main())
    assert status == 200 and b"<div>served at " in page
    assert len(wins) == 1


class LinkingNoMarkupDsp(NoMarkupDsp):
    """Its markup, served at the win, links to its advertiser's landing page."""

    def _notice(self, kind):
        async def handle(request: Request) -> Response:
            self.notices[kind].append(request.query_string)
            if kind == "win":
                markup = b'<a href="https://shop.example/landing?x=1">buy</a>'
                return Response(200, markup, "text/html")
            return Response(200, b"")

        return handle


def test_markup_served_at_the_win_has_our_click_tracker_in_front_of_its_landing_page(tmp_path):
    async def main():
        h = await start(tmp_path, [LinkingNoMarkupDsp("nomarkup", 2.0)])
        try:
            status, body = await h.auction(bid_request())
            assert status == 200, body
            nurl = json.loads(body)["seatbid"][0]["bid"][0]["nurl"]
            assert "&k=" in nurl
            tampered = nurl.replace("&k=", "&k=x", 1)
            forged_status, _, _ = await h.get(tampered)
            status, _, markup = await h.get(nurl)
            return forged_status, status, markup.decode()
        finally:
            await stop(h)

    forged_status, status, markup = run(main())
    assert forged_status == 403  # a token not ours is refused before anything fires
    assert status == 200
    assert "https://shop.example/landing" not in markup.split("/t/click?")[0]
    assert "/t/click?c=" in markup  # the landing page is behind our signed click tracker
