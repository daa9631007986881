"""What a simulated DSP answers to one bid request: the decision and the bytes, without I/O.

`DspBehaviour.answer(body)` decodes the request, draws each impression's decision with the
same functions as the oracle (`truth.decide`), and returns an `Answer`: when to reply, with
which status and body, and which fault to play. The HTTP server only carries it out.
"""

from __future__ import annotations

import html

import msgspec

from openbid.sim.draws import STREAM_FAULT_DETAIL, draw_key, uniform
from openbid.sim.features import COLUMN
from openbid.sim.market import Market
from openbid.sim.model import CompiledDsp
from openbid.sim.reading import FeatureReader, decode_request
from openbid.sim.truth import DspDecision, decide

_MTYPE = {"banner": 1, "video": 2, "native": 4}
_encoder = msgspec.json.Encoder()


class Answer(msgspec.Struct):
    """A DSP's reply to one request, before it is sent."""

    status: int
    body: bytes
    delay_ms: float
    fault: str
    bids: int = 0


class DspBehaviour:
    """The bidding behaviour of one DSP of a market; `base_url` is where its notices go."""

    def __init__(self, market: Market, dsp: str, base_url: str = "http://127.0.0.1") -> None:
        self.market = market
        self.dsp: CompiledDsp = market.dsp(dsp)
        self.base_url = base_url.rstrip("/")
        self._reader = FeatureReader(market)
        vocab = market.vocab
        self._advertisers = {
            vocab["advertiser"].code(a.domain): (i, a)
            for i, a in enumerate(self.dsp.config.advertisers)
        }

    def answer(self, body: bytes, now_s: float | None = None) -> Answer:
        """The reply to a bid request body (400 for a body that is not a bid request)."""
        try:
            request = decode_request(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            error = _encoder.encode({"error": f"not an OpenRTB bid request: {exc}"})
            return Answer(400, error, 0.0, "none")
        if not request.imp:
            return Answer(400, b'{"error":"imp: expected at least one impression"}', 0.0, "none")
        seed = self.market.seed
        bids = []
        first = None
        for imp in request.imp:
            codes = self._reader.codes(request, imp, now_s)
            key = draw_key(seed, request.id, imp.id)
            decision = decide(self.dsp, codes, imp.bidfloor, key)
            if first is None:
                first = (decision, key)
            if decision.bid:
                bids.append(self._bid(request.id, imp.id, codes, decision))
        decision, key = first
        faults = self.dsp.config.faults
        delay_ms = decision.latency_ms
        if decision.fault == "timeout":
            delay_ms = faults.timeout_ms
        if decision.fault == "http_5xx":
            status = (500, 502, 503)[int(uniform(key, self.dsp.salt, STREAM_FAULT_DETAIL) * 3)]
            return Answer(status, b'{"error":"simulated server error"}', delay_ms, "http_5xx")
        if bids:
            response = {
                "id": request.id,
                "bidid": f"{self.dsp.name}-{request.id}",
                "cur": "USD",
                "seatbid": [{"seat": self.dsp.name, "bid": bids}],
            }
            answer = Answer(200, _encoder.encode(response), delay_ms, decision.fault, len(bids))
        elif decision.fault in ("malformed_json", "slow_body"):
            answer = Answer(
                200, _encoder.encode({"id": request.id, "seatbid": []}), delay_ms, decision.fault
            )
        else:
            answer = Answer(204, b"", delay_ms, decision.fault)
        if decision.fault == "malformed_json":
            answer.body = answer.body[: max(1, len(answer.body) // 2)]
        return answer

    def _bid(self, request_id: str, imp_id: str, codes: list[int], decision: DspDecision) -> dict:
        vocab = self.market.vocab
        format_name = vocab["format"].values[codes[COLUMN["format"]]]
        width, height = self.market.size_wh[codes[COLUMN["size"]]]
        number, advertiser = self._advertisers[decision.advertiser]
        creative_id = f"{self.dsp.name}-{number}-{format_name}"
        bid_id = f"{request_id}-{imp_id}"
        notice = f"{self.base_url}/%s?bid={bid_id}&imp={imp_id}"
        price_cpm = round(decision.price_cpm * 1e6) / 1e6
        bid = {
            "id": bid_id,
            "impid": imp_id,
            "price": price_cpm,
            "adm": _markup(format_name, advertiser.domain, creative_id, width, height),
            "nurl": notice % "win" + "&price=${AUCTION_PRICE}",
            "burl": notice % "bill" + "&price=${AUCTION_PRICE}",
            "lurl": notice % "loss" + "&reason=${AUCTION_LOSS}",
            "adomain": [advertiser.domain],
            "cid": f"{self.dsp.name}-{number}",
            "crid": creative_id,
            "cat": [advertiser.category],
            "mtype": _MTYPE.get(format_name, 1),
        }
        if width and height:
            bid["w"], bid["h"] = width, height
        return bid


def landing_url(domain: str, creative_id: str) -> str:
    """Where an ad of the advertiser `domain` leads: a page of its own site."""
    return f"https://www.{domain}/offer?crid={creative_id}&utm_source=openbid"


def _markup(format_name: str, domain: str, creative_id: str, width: int, height: int) -> str:
    # Banners ask the exchange for its click tracker with Google Ad Manager's macro, as DSPs
    # do; native links and VAST click-throughs state the landing page, which it wraps.
    landing = landing_url(domain, creative_id)
    image = f"https://cdn.{domain}/{creative_id}.png"
    if format_name == "video":
        return (
            f'<VAST version="4.0"><Ad id="{creative_id}"><InLine><AdSystem>openbid-sim</AdSystem>'
            f"<AdTitle>{creative_id}</AdTitle><Impression/><Creatives><Creative><Linear>"
            f"<Duration>00:00:15</Duration><VideoClicks><ClickThrough><![CDATA[{landing}]]>"
            '</ClickThrough></VideoClicks><MediaFiles><MediaFile delivery="progressive" '
            f'type="video/mp4" width="{width}" height="{height}"><![CDATA[https://cdn.{domain}/{creative_id}.mp4]]>'
            "</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad></VAST>"
        )
    if format_name == "native":
        return _encoder.encode(
            {
                "ver": "1.2",
                "assets": [
                    {"id": 1, "title": {"text": f"Offer from {domain}"}},
                    {"id": 2, "img": {"url": image, "w": 300, "h": 250}},
                    {"id": 3, "data": {"value": "Limited time"}},
                ],
                "link": {"url": landing},
            }
        ).decode()
    return (
        f'<a href="%%CLICK_URL_UNESC%%{html.escape(landing)}" target="_blank">'
        f'<img src="{image}" width="{width}" height="{height}" alt="{html.escape(domain)}"></a>'
    )
