"""The settle stage: what the auction's results become. Losers' loss notices fire; each
winner gets its macros substituted, its markup (fetched from its `nurl` when it came
without, but only once the impression is ours: see below), our tracker URLs and its win
notice, at once or when our caller decides.

| the auction decides the impression | bid has markup | DSP's `nurl` |
| --- | --- | --- |
| yes (`final`: an ad tag we render) | yes | fired now |
| yes | no | fetched now: its answer is the markup (that fetch is the win notice) |
| no (an OpenRTB caller runs its own auction) | yes | fired when the caller hits our signed `/t/win` |
| no | no | fetched when the caller hits our signed `/t/win`, which answers the markup |
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from openbid.campaigns.house import HOUSE_DSP
from openbid.creative import AuctionMacros, TrackerSigner, substitute_macros
from openbid.exchange import metrics
from openbid.exchange.auction import BidCandidate, ImpResult
from openbid.exchange.metrics import dsp_metrics
from openbid.exchange.notices import NoticeSender
from openbid.exchange.state import AuctionState, DspCall, Winner, media_of
from openbid.openrtb.response import Bid

_CONTENT_TYPES = {
    "banner": "text/html; charset=utf-8",
    "native": "application/json",
    "video": "application/xml",
    "audio": "application/xml",
}


class Settler:
    """Settles auctions for one exchange: numbers our bids, signs our trackers, fires and
    fetches notices."""

    __slots__ = ("signer", "notices", "public_url", "_bid_seq")

    def __init__(self, signer: TrackerSigner, notices: NoticeSender, public_url: str) -> None:
        self.signer = signer
        self.notices = notices
        self.public_url = public_url
        self._bid_seq = 0

    async def settle(self, state: AuctionState) -> None:
        """Loss notices for every beaten or refused bid with an `lurl`; `state.winners` for
        every impression won whose markup we have (or can have, `final=False`)."""
        results = state.results
        if not results:
            return
        bids = state.bids
        media_by_imp = {imp.id: media_of(imp) for imp in state.request.imp}
        for result in results:
            for loss in result.losses:
                lost = loss.bid
                _, bid = bids[(lost.dsp, lost.bid_id)]
                if bid.lurl:
                    self._fire_loss(bid.lurl, state.auction_id, lost, int(loss.reason))
            won = result.winner
            if won is None:
                continue
            call, bid = bids[(won.dsp, won.bid_id)]
            winner = await self._winner(state, result, call, bid, media_by_imp[result.imp_id])
            if winner is not None:
                state.winners.append(winner)

    async def _winner(
        self, state: AuctionState, result: ImpResult, call: DspCall | None, bid: Bid, media: str
    ) -> Winner | None:
        """Macros, markup, trackers and the win notice of one won impression; None when its
        markup cannot be had (counted as a render failure)."""
        winner = result.winner
        assert winner is not None
        auction_id = state.auction_id
        self._bid_seq += 1
        our_bid_id = f"{auction_id}-{self._bid_seq}"
        price = result.clearing_price_micros
        macros = AuctionMacros(
            auction_id,
            winner.bid_id,
            result.imp_id,
            seat_id=winner.seat,
            ad_id=bid.adid or "",
            price_micros=price,
        )
        adm = bid.adm or ""
        nurl = bid.nurl or ""
        if nurl:
            nurl = substitute_macros(nurl, macros)
        our_nurl = ""
        if state.final:
            if not adm and nurl:
                loop = asyncio.get_running_loop()
                adm = await self.notices.fetch_markup(
                    nurl,
                    timeout_s=max(state.deadline - loop.time(), 0.005),
                    auction_id=auction_id,
                    bid_id=our_bid_id,
                    dsp=winner.dsp,
                    price_micros=price,
                )
                if not adm:
                    metrics.RENDER_FAILURES.labels(media).inc()
                    return None
            elif nurl:
                self.notices.fire(
                    "win",
                    nurl,
                    auction_id=auction_id,
                    bid_id=our_bid_id,
                    dsp=winner.dsp,
                    price_micros=price,
                )
        elif nurl:
            # The caller runs its own auction: the DSP's win notice (and, for a bid without
            # markup, the fetch whose answer is the markup) waits until it hits our nurl.
            signed = {
                "auc": auction_id,
                "bid": our_bid_id,
                "dsp": winner.dsp,
                "price": str(price),
                "nurl": nurl,
            }
            if not adm:
                signed.update(
                    mk=media,
                    dbid=winner.bid_id,
                    imp=result.imp_id,
                    seat=winner.seat,
                    adid=bid.adid or "",
                )
            our_nurl = f"{self.public_url}/t/win?{self.signer.sign('win', signed)}"
        if adm:
            adm = substitute_macros(adm, macros)
        dsp_burl = bid.burl or ""
        signed = {
            "auc": auction_id,
            "bid": our_bid_id,
            "dsp": winner.dsp,
            "imp": result.imp_id,
            "crid": bid.crid or "",
            "price": str(price),
            "rev": str(result.revenue_micros),
            "burl": substitute_macros(dsp_burl, macros) if dsp_burl else "",
        }
        if winner.dsp == HOUSE_DSP:
            # What the billing of a house bid needs, at whichever worker the pixel reaches.
            house = next(h for h in state.house_bids if h.bid_id == winner.bid_id)
            signed.update(
                hbid=house.bid_id,
                cmp=house.campaign.id,
                li=house.line_item_id,
                fu=house.user_key or "",
            )
        tracker = self.signer.sign("imp", signed)
        dsp_metrics(winner.dsp).wins.inc()
        metrics.WON_REVENUE_MICROS.inc(result.revenue_micros / 1000)  # prices are CPM
        return Winner(
            result,
            auction_id,
            our_bid_id,
            winner.dsp,
            adm,
            media,
            f"{self.public_url}/t/imp?{tracker}",
            bid.crid or "",
            winner.w,
            winner.h,
            our_nurl,
        )

    async def win_notice(self, params: Mapping[str, str]) -> tuple[str, str] | None:
        """Our caller's first hit on a winner's signed `nurl` (`params`, verified): fires
        the DSP's win notice and returns None; for a bid that came without markup, fetches
        it from the DSP's `nurl` (that fetch is its win notice) and returns it, macros
        substituted, with its content type (None, and a render failure counted, when the
        DSP gives none)."""
        price = int(params["price"])
        media = params.get("mk")
        if not media:
            self.notices.fire(
                "win",
                params["nurl"],
                auction_id=params["auc"],
                bid_id=params["bid"],
                dsp=params["dsp"],
                price_micros=price,
            )
            return None
        markup = await self.notices.fetch_markup(
            params["nurl"],
            timeout_s=self.notices.timeout_s,
            auction_id=params["auc"],
            bid_id=params["bid"],
            dsp=params["dsp"],
            price_micros=price,
        )
        if not markup:
            metrics.RENDER_FAILURES.labels(media).inc()
            return None
        macros = AuctionMacros(
            params["auc"],
            params["dbid"],
            params["imp"],
            seat_id=params["seat"],
            ad_id=params["adid"],
            price_micros=price,
        )
        return substitute_macros(markup, macros), _CONTENT_TYPES.get(media, "text/plain")

    def _fire_loss(
        self, lurl: str, auction_id: str, candidate: BidCandidate, loss_reason: int
    ) -> None:
        macros = AuctionMacros(
            auction_id,
            candidate.bid_id,
            candidate.imp_id,
            seat_id=candidate.seat,
            loss_reason=loss_reason,
        )
        self.notices.fire(
            "loss",
            substitute_macros(lurl, macros),
            auction_id=auction_id,
            bid_id=candidate.bid_id,
            dsp=candidate.dsp,
            loss_reason=loss_reason,
        )
