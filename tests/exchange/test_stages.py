"""Each stage of the auction alone, on an `AuctionState` built by hand: its contract (what it
reads, what it writes, what it may do) as `openbid.exchange.stages` documents it."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qsl, urlsplit

import pytest

from openbid.config import ExchangeConfig
from openbid.creative import TrackerSigner
from openbid.demand import DemandState
from openbid.demand.breaker import CircuitBreaker, CircuitState
from openbid.domain import DemandPartner, Publisher
from openbid.events import EventLog, EventReader
from openbid.exchange import fanout, stages
from openbid.exchange.auction import LossReason
from openbid.exchange.fanout import FAILURE, NEUTRAL, SUCCESS, FanOut, breaker_verdict
from openbid.exchange.notices import NoticeSender
from openbid.exchange.settle import Settler
from openbid.exchange.state import SENDING, AuctionState, DspCall
from openbid.http.client import Call, FanoutClient, UpstreamError, UpstreamResponse
from openbid.http.server import HttpServer, Request, Response, Router
from openbid.openrtb import InvalidBidRequest, decode_bid_request, decode_bid_response
from openbid.privacy.consent import redaction_for
from openbid.shaping.base import PassThroughShaper, ShapingDecision

CONFIG = ExchangeConfig(notice_private_hosts=True)


def bid_request(**fields) -> bytes:
    body = {
        "id": "r1",
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 0.5}],
        "site": {"id": "s", "domain": "news.example", "page": "https://news.example/"},
        "device": {"ip": "203.0.113.7", "ua": "Mozilla/5.0"},
        "tmax": 300,
        "at": 2,
    }
    body.update(fields)
    return json.dumps(body).encode()


def new_state(final: bool = True, **fields) -> AuctionState:
    state = AuctionState(decode_bid_request(bid_request(**fields)), None, "auc1", 1e9, 0.0, final)
    stages.prepare(state, CONFIG)
    return state


def partner(name: str, **fields) -> DemandState:
    return DemandState(
        DemandPartner(name, f"http://127.0.0.1:9/{name}", seat=name, **fields),
        CircuitBreaker(failure_threshold=2, cooldown_s=10.0),
    )


def sent_call(name: str, timeout_ms: int = 150, timeout_s: float = 0.15) -> DspCall:
    call = DspCall(partner(name, timeout_ms=timeout_ms), ShapingDecision(name, True))
    call.outcome = SENDING
    call.timeout_s = timeout_s
    return call


def reply_of(call: DspCall, body: dict | None, price: float = 1.0, **bid) -> None:
    """Gives `call` the decoded response of a DSP bidding `price` on imp 1."""
    one = {"id": f"{call.state.partner.id}-b", "impid": "1", "price": price, "adm": "<b>x</b>"}
    one.update(bid)
    one = {k: v for k, v in one.items() if v is not None}
    payload = body or {"id": "auc1", "seatbid": [{"bid": [one]}]}
    call.response = decode_bid_response(json.dumps(payload).encode())
    call.outcome = "bid"


# --- prepare
def test_prepare_builds_context_features_and_the_rules_of_each_imp():
    state = AuctionState(
        decode_bid_request(bid_request()),
        Publisher("p1", "P", floor_micros=700_000),
        "auc1",
        1e9,
        0.0,
    )
    stages.prepare(state, CONFIG, extra_floor_micros=600_000)
    assert state.context is not None and not state.context.consent.gdpr_applies
    assert state.features["size"] == "300x250"
    assert [(r.imp_id, r.floor_micros) for r in state.rules] == [("1", 700_000)]


def test_prepare_refuses_a_floor_in_a_currency_it_cannot_convert_naming_the_field():
    state = AuctionState(
        decode_bid_request(
            bid_request(imp=[{"id": "1", "banner": {}, "bidfloor": 1, "bidfloorcur": "XYZ"}])
        ),
        None,
        "auc1",
        1e9,
        0.0,
    )
    with pytest.raises(InvalidBidRequest) as refused:
        stages.prepare(state, CONFIG)
    assert refused.value.field == "request.imp[0].bidfloorcur"


# --- select
def test_select_leaves_out_open_breakers_until_their_cooldown_and_takes_no_probe():
    closed, opened = partner("closed"), partner("opened")
    opened.breaker.record_failure(100.0, "reset")
    opened.breaker.record_failure(100.0, "reset")
    assert [p.partner.id for p in stages.select([closed, opened], 105.0)] == ["closed"]
    assert [p.partner.id for p in stages.select([closed, opened], 110.0)] == ["closed", "opened"]
    assert opened.breaker.state is CircuitState.OPEN  # looking is not probing


# --- shape
def test_shape_makes_one_call_per_selected_partner_with_the_shapers_decision():
    class OddOnes(PassThroughShaper):
        async def decide_async(self, features, dsps):
            await asyncio.sleep(0)  # a remote shaper is awaited
            return [ShapingDecision(d, i % 2 == 0, score=0.1 * i) for i, d in enumerate(dsps)]

    state = new_state()
    selected = [partner("a"), partner("b"), partner("c")]
    decisions = asyncio.run(OddOnes().decide_async(state.features, ["a", "b", "c"]))
    stages.shape(state, selected, decisions)
    assert [(c.state.partner.id, c.decision.send, c.outcome) for c in state.calls] == [
        ("a", True, "filtered"),
        ("b", False, "filtered"),
        ("c", True, "filtered"),
    ]
    assert state.calls[1].state is selected[1]


# --- gate
def _gated(call_partner: DemandState, *, send=True, budget_s=0.2, now=1000.0, **request):
    state = new_state(**request)
    state.calls = [DspCall(call_partner, ShapingDecision(call_partner.partner.id, send))]
    going = stages.gate(state, now, budget_s)
    return going, state.calls[0]


def test_gate_sends_with_the_partners_timeout_or_less_when_tmax_leaves_less():
    going, call = _gated(partner("d", timeout_ms=150), budget_s=0.2)
    assert (going, call.outcome, call.timeout_s) == (1, SENDING, 0.15)
    assert call.redaction is not None and not call.redaction.block
    going, call = _gated(partner("d", timeout_ms=150), budget_s=0.04)
    assert (going, call.outcome, call.timeout_s) == (1, SENDING, 0.04)


@pytest.mark.parametrize(
    ("case", "outcome"),
    [
        ("shaper says no", "filtered"),
        ("qps cap spent", "qps_capped"),
        ("no consent", "consent_blocked"),
        ("under 1 ms left", "no_time"),
        ("breaker open", "circuit_open"),
    ],
)
def test_gate_names_why_a_call_does_not_go(case, outcome):
    dsp = partner("d", vendor_id=10, qps_cap=1)
    kwargs: dict = {}
    if case == "shaper says no":
        kwargs["send"] = False
    elif case == "qps cap spent":
        assert dsp.limiter is not None and dsp.limiter.allow(1000.0)
    elif case == "no consent":
        kwargs["regs"] = {"gdpr": 1}  # GDPR applies, no TC string: no vendor has consent
    elif case == "under 1 ms left":
        kwargs["budget_s"] = 0.0005
    else:
        dsp.breaker.record_failure(999.0, "reset")
        dsp.breaker.record_failure(999.0, "reset")
    going, call = _gated(dsp, **kwargs)
    assert (going, call.outcome) == (0, outcome)


def test_gate_gives_a_half_open_breakers_probe_only_to_a_call_that_leaves():
    dsp = partner("d")
    dsp.breaker.record_failure(0.0, "reset")
    dsp.breaker.record_failure(0.0, "reset")
    going, call = _gated(dsp, send=False, now=20.0)  # filtered: the probe slot stays free
    assert (going, dsp.breaker.state) == (0, CircuitState.OPEN)
    going, call = _gated(dsp, now=20.0)
    assert (going, call.outcome, dsp.breaker.state) == (1, SENDING, CircuitState.HALF_OPEN)


# --- fan out and collect: reading replies, and which outcomes are the partner's fault
def _settled(response: UpstreamResponse | None = None, error: UpstreamError | None = None):
    settled = Call(lambda _: None)
    if error is not None:
        settled.set_exception(error)
    else:
        assert response is not None
        settled.set_result(response)
    return settled


@pytest.mark.parametrize(
    ("status", "body", "outcome", "bids"),
    [
        (204, b"", "no_bid", 0),
        (200, b"  ", "no_bid", 0),
        (200, b'{"id":"auc1","seatbid":[]}', "no_bid", 0),
        (200, b'{"id":"auc1"}', "no_bid", 0),
        (
            200,
            b'{"id":"auc1","seatbid":[{"bid":[{"id":"b","impid":"1","price":1.5,"adm":"x"}]}]}',
            "bid",
            1,
        ),
        (
            200,
            b'{"id":"other","seatbid":[{"bid":[{"id":"b","impid":"1","price":1.5,"adm":"x"}]}]}',
            "invalid_response",
            0,
        ),
        (200, b"{not json", "invalid_response", 0),
        (503, b"busy", "http_status", 0),
    ],
)
def test_read_reply_classifies_every_kind_of_answer(status, body, outcome, bids):
    request = new_state(id="auc1").request  # as partners see it: our auction id
    call = sent_call("d")
    fanout.read_reply(call, _settled(UpstreamResponse(status, [], body, 0.0)), request)
    assert call.outcome == outcome
    assert call.status == status
    found = call.response.seatbid[0].bid if call.response and call.response.seatbid else []
    assert len(found) == bids
    assert call.error == ("" if outcome in ("bid", "no_bid") else outcome)


def test_read_reply_takes_a_transport_failures_kind():
    call = sent_call("d")
    fanout.read_reply(call, _settled(error=UpstreamError("reset", "gone")), new_state().request)
    assert (call.outcome, call.error, call.status, call.response) == ("reset", "reset", 0, None)


@pytest.mark.parametrize(
    ("outcome", "status", "full_timeout", "verdict"),
    [
        ("bid", 200, True, SUCCESS),
        ("no_bid", 204, False, SUCCESS),
        ("timeout", 0, True, FAILURE),
        ("timeout", 0, False, NEUTRAL),  # the caller's tmax cut the call short
        ("connect", 0, True, FAILURE),
        ("reset", 0, True, FAILURE),
        ("malformed", 0, True, FAILURE),
        ("too_large", 0, True, FAILURE),
        ("invalid_response", 200, True, FAILURE),
        ("http_status", 500, True, FAILURE),
        ("http_status", 503, False, FAILURE),
        ("http_status", 429, True, FAILURE),
        ("http_status", 302, True, FAILURE),
        ("http_status", 400, True, NEUTRAL),  # the DSP refused this request: it is up
        ("http_status", 413, True, NEUTRAL),
        ("busy", 0, True, NEUTRAL),  # our own connection cap
        ("internal", 200, True, NEUTRAL),  # our decoder
        ("forbidden", 0, True, NEUTRAL),
    ],
)
def test_breaker_verdict_blames_a_partner_only_for_what_it_caused(
    outcome, status, full_timeout, verdict
):
    assert breaker_verdict(outcome, status, full_timeout) == verdict


def test_a_timeout_counts_against_the_breaker_only_with_the_partners_full_timeout():
    cut = sent_call("d", timeout_ms=150, timeout_s=0.002)
    full = sent_call("e", timeout_ms=150, timeout_s=0.15)
    for _ in range(3):
        for call in (cut, full):
            call.outcome = call.error = "timeout"
            fanout.record_health(call)
    assert cut.state.breaker.state is CircuitState.CLOSED
    assert full.state.breaker.state is CircuitState.OPEN


def test_a_neutral_outcome_frees_a_half_open_breakers_probe():
    call = sent_call("d", timeout_s=0.002)
    breaker = call.state.breaker
    breaker.record_failure(0.0, "reset")
    breaker.record_failure(0.0, "reset")
    assert breaker.allow(10.0) and not breaker.allow(10.0)  # the probe is out
    call.outcome = call.error = "timeout"
    fanout.record_health(call)
    assert breaker.state is CircuitState.HALF_OPEN and breaker.allow(10.0)


def test_collect_does_not_blame_a_partner_for_a_call_our_auction_deadline_cut():
    class Silent(FanoutClient):
        """Sends nothing; its calls never settle on their own."""

        def start_call(self, url, body, on_done, *, timeout_s, gzip_body=False, loop=None):
            return Call(on_done)

    async def main():
        loop = asyncio.get_running_loop()
        state = new_state()
        state.deadline = loop.time() + 0.02
        state.calls = [sent_call("d"), sent_call("e")]
        for call in state.calls:
            call.state.breaker.failure_threshold = 1
            call.redaction = redaction_for(state.context.consent, None)
        observed = []

        class Watcher(PassThroughShaper):
            def observe(self, decision, bid):
                observed.append((decision.dsp, bid))

        fan_out = FanOut(Silent())
        waiter = fan_out.send(state, 100, loop)
        await waiter.wait(loop, state.deadline)
        fan_out.collect(state, Watcher())
        return state, observed

    state, observed = asyncio.run(main())
    assert [(c.outcome, c.state.breaker.state) for c in state.calls] == [
        ("timeout", CircuitState.CLOSED),
        ("timeout", CircuitState.CLOSED),
    ]
    assert observed == [("d", False), ("e", False)]
    assert state.outgoing is not None and state.outgoing.id == "auc1"


# --- decide
def test_decide_runs_the_auction_on_the_bids_that_came_back():
    state = new_state()
    high, low, euro, silent = sent_call("a"), sent_call("b"), sent_call("c"), sent_call("d")
    reply_of(high, None, price=2.0)
    reply_of(low, None, price=1.0)
    reply_of(
        euro,
        {
            "id": "auc1",
            "cur": "XYZ",  # no rate: dropped, never competes
            "seatbid": [{"bid": [{"id": "c-b", "impid": "1", "price": 9.0, "adm": "x"}]}],
        },
    )
    silent.outcome = "timeout"
    state.calls = [high, low, euro, silent]
    stages.decide(state, CONFIG.currency_rates, seed=1)
    (result,) = state.results
    assert result.winner is not None and result.winner.dsp == "a"
    assert result.clearing_price_micros == 1_010_000  # second price plus the increment
    assert [(loss.bid.dsp, loss.reason) for loss in result.losses] == [
        ("b", LossReason.LOST_TO_HIGHER_BID)
    ]
    assert set(state.bids) == {("a", "a-b"), ("b", "b-b")}


def test_decide_with_no_bids_leaves_no_results():
    state = new_state()
    state.calls = [sent_call("a")]
    stages.decide(state, CONFIG.currency_rates, seed=1)
    assert not state.results and state.bids == {}


# --- settle: markup, notices, and the nurl of a bid without markup
class NoticeHost:
    """A loopback DSP notice host: `/win` answers `markup`, every GET is recorded."""

    def __init__(self, markup: str = "<div>ad at ${AUCTION_PRICE}</div>") -> None:
        self.markup = markup
        self.hits: list[str] = []

    async def start(self) -> str:
        async def handle(request: Request) -> Response:
            self.hits.append(request.path + "?" + request.query_string)
            return Response(200, self.markup.encode(), "text/html")

        router = Router()
        router.add("GET", "/win", handle)
        router.add("GET", "/loss", handle)
        self.server = HttpServer(router)
        return f"http://127.0.0.1:{await self.server.start()}"


async def _settle(final: bool, **bid):
    host = NoticeHost()
    base = await host.start()
    client = FanoutClient()
    notices = NoticeSender(client, None, public_only=False)
    settler = Settler(TrackerSigner(b"k" * 32), notices, "http://exchange.example")
    state = new_state(final=final)
    state.deadline = asyncio.get_running_loop().time() + 1.0
    winner, loser = sent_call("a"), sent_call("b")
    reply_of(winner, None, price=2.0, nurl=f"{base}/win?p=${{AUCTION_PRICE}}", **bid)
    reply_of(loser, None, price=1.0, lurl=f"{base}/loss?r=${{AUCTION_LOSS}}")
    state.calls = [winner, loser]
    stages.decide(state, CONFIG.currency_rates, seed=1)
    await settler.settle(state)
    await notices.drain()
    return state, host, settler, client


def test_settle_final_fires_the_win_notice_and_the_losers_loss_notice():
    async def main():
        state, host, _, client = await _settle(final=True)
        client.close()
        await host.server.stop()
        return state, host

    state, host = asyncio.run(main())
    (winner,) = state.winners
    assert (winner.dsp, winner.adm, winner.nurl) == ("a", "<b>x</b>", "")
    assert sorted(host.hits) == ["/loss?r=102", "/win?p=1.01"]


def test_settle_final_fetches_the_markup_of_a_bid_without_from_its_nurl():
    async def main():
        state, host, _, client = await _settle(final=True, adm=None)
        client.close()
        await host.server.stop()
        return state, host

    state, host = asyncio.run(main())
    (winner,) = state.winners
    assert winner.adm == "<div>ad at 1.01</div>"
    assert host.hits.count("/win?p=1.01") == 1


def test_settle_for_a_caller_fires_no_win_notice_until_the_caller_says_it_won():
    async def main():
        state, host, settler, client = await _settle(final=False)
        hits_before = list(host.hits)
        (winner,) = state.winners
        params = settler.signer.verify("win", _query(winner.nurl))
        served = await settler.win_notice(params)
        await settler.notices.drain()
        client.close()
        await host.server.stop()
        return winner, hits_before, served, host.hits

    winner, hits_before, served, hits = asyncio.run(main())
    assert winner.adm == "<b>x</b>" and winner.nurl.startswith("http://exchange.example/t/win?")
    assert hits_before == ["/loss?r=102"]
    assert served is None  # the bid had its markup: the notice is only passed on
    assert sorted(hits) == ["/loss?r=102", "/win?p=1.01"]


def test_settle_for_a_caller_leaves_a_bid_without_markup_to_fetch_when_the_caller_wins():
    # The bug: the markup of a bid without `adm` was fetched from its nurl at once, which is
    # the DSP's win notice, before our caller had decided anything.
    async def main():
        state, host, settler, client = await _settle(final=False, adm=None)
        hits_before = list(host.hits)
        (winner,) = state.winners
        params = settler.signer.verify("win", _query(winner.nurl))
        served = await settler.win_notice(params)
        client.close()
        await host.server.stop()
        return winner, hits_before, served, host.hits

    winner, hits_before, served, hits = asyncio.run(main())
    assert hits_before == ["/loss?r=102"]  # no win notice while the caller decides
    assert winner.adm == "" and winner.nurl
    assert served == ("<div>ad at 1.01</div>", "text/html; charset=utf-8")
    assert sorted(hits) == ["/loss?r=102", "/win?p=1.01"]


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


# --- log
def test_log_writes_the_auction_and_one_bid_event_per_partner(tmp_path):
    async def main():
        state, host, _, client = await _settle(final=True)
        client.close()
        await host.server.stop()
        return state

    state = asyncio.run(main())
    filtered = DspCall(partner("c"), ShapingDecision("c", False, score=0.01))
    state.calls.append(filtered)
    state.measured_from = time.perf_counter()
    with EventLog(tmp_path) as event_log:
        stages.log(state, event_log, CONFIG.currency_rates, tmax_ms=300, shaping_model="m1")
    reader = EventReader(tmp_path)
    (auction,) = reader.read_table("auction").to_pylist()
    assert (auction["auction_id"], auction["outcome"], auction["winner_dsp"]) == (
        "auc1",
        "won",
        "a",
    )
    assert (auction["dsps_eligible"], auction["dsps_called"], auction["shaping_model"]) == (
        3,
        2,
        "m1",
    )
    bids = {row["dsp"]: row for row in reader.read_table("bid").to_pylist()}
    assert (bids["a"]["won"], bids["a"]["price_micros"]) == (True, 2_000_000)
    assert (bids["b"]["won"], bids["b"]["price_micros"]) == (False, 1_000_000)
    assert (bids["c"]["decision"], bids["c"]["bid"], bids["c"]["shaping_score"]) == (
        "filtered",
        False,
        0.01,
    )
