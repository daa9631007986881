"""The auction's I/O with its partners: `fan_out` sends every call the gate let through,
`collect` reads each reply once they settled (`read_reply`, the one place a DSP's answer
is decoded), and `breaker_verdict` decides which outcomes are the partner's fault.

Which outcomes count towards a partner's circuit breaker (`breaker_verdict`):

| outcome | verdict |
| --- | --- |
| `bid`, `no_bid` (204, an empty 200, `"seatbid": []`) | success: closes a half-open breaker |
| `timeout` of a call that had the partner's full `timeout_ms` | failure |
| `timeout` of a call cut short by the caller's `tmax`, or past our own auction deadline | neutral |
| `connect`, `reset`, `malformed`, `too_large`, `invalid_response` | failure |
| `http_status` 5xx, 429 and 1xx/3xx | failure |
| `http_status` other 4xx (the DSP refused this request: its content is the caller's) | neutral |
| `busy` (our own connection cap), `forbidden`, `internal` (our decoder) | neutral |

A neutral outcome counts neither way (a half-open breaker's probe slot is freed), so no
caller can open a partner's breaker for everyone with requests of its own making.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import msgspec

from openbid.exchange.auction import ImpRules, with_floors
from openbid.exchange.metrics import DSP_RESPONSE_FAULTS, dsp_metrics
from openbid.exchange.redact import apply_redaction
from openbid.exchange.state import SENDING, AuctionState, DspCall
from openbid.http.client import Call, FanoutClient, UpstreamError
from openbid.openrtb import BidRequest, InvalidBidResponse, encode
from openbid.openrtb.repair import decode_bid_response_lenient
from openbid.privacy.consent import Redaction
from openbid.shaping.base import Shaper

log = logging.getLogger(__name__)

_EMPTY_BID_FIELDS = frozenset({"response.seatbid", "response.seatbid[0].bid"})
_ANSWERED = frozenset({"bid", "no_bid"})
_PARTNER_FAULTS = frozenset({"connect", "reset", "malformed", "too_large", "invalid_response"})
_LATE = "no reply by the auction deadline"

SUCCESS, NEUTRAL, FAILURE = 1, 0, -1


def breaker_verdict(outcome: str, status: int = 0, full_timeout: bool = True) -> int:
    """`SUCCESS`, `FAILURE` or `NEUTRAL` for a call's breaker (the table above). `status`:
    the reply's HTTP status; `full_timeout`: the call had the partner's whole timeout.

    >>> breaker_verdict("timeout", full_timeout=False), breaker_verdict("timeout")
    (0, -1)
    >>> breaker_verdict("http_status", 503), breaker_verdict("http_status", 400)
    (-1, 0)
    """
    if outcome in _ANSWERED:
        return SUCCESS
    if outcome == "timeout":
        return FAILURE if full_timeout else NEUTRAL
    if outcome in _PARTNER_FAULTS:
        return FAILURE
    if outcome == "http_status":
        return NEUTRAL if 400 <= status < 500 and status != 429 else FAILURE
    return NEUTRAL


def partner_request(
    request: BidRequest, auction_id: str, rules: Sequence[ImpRules], tmax_ms: int
) -> BidRequest:
    """The request as every partner sees it before its redaction: our id, the time left,
    floors (deal floors too) in USD as the auction applies them, merged blocks."""
    first = rules[0]
    return msgspec.structs.replace(
        with_floors(request, rules, 1.0),
        id=auction_id,
        tmax=tmax_ms,
        cur=["USD"],
        bcat=sorted(first.blocked_categories) or None,
        badv=sorted(first.blocked_adomains) or None,
    )


class ReplyWaiter:
    """Counts an auction's DSP calls out and wakes the auction when the last one settles,
    or at its deadline: one counter, one future, one timer for all the calls (each call
    reports by a plain callback, `openbid.http.client.Call`, not a future of its own)."""

    __slots__ = ("pending", "_waiter")

    def __init__(self) -> None:
        self.pending = 0
        self._waiter: asyncio.Future[None] | None = None

    def one_done(self, _: object) -> None:
        self.pending -= 1
        waiter = self._waiter
        if self.pending <= 0 and waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Returns when every call counted in has settled or the loop's clock reaches
        `deadline`, whichever comes first."""
        if self.pending <= 0:
            return
        waiter = self._waiter = loop.create_future()
        timer = loop.call_at(deadline, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def read_reply(call: DspCall, reply_call: Call, request: BidRequest) -> None:
    """Classifies one partner's reply (or failure) into the call's `outcome`, `error`,
    `status`, `latency_ms` and `response` (its bids, decoded against `request`)."""
    error = reply_call.error
    if error is not None:
        call.outcome = call.error = error.kind
        call.latency_ms = (time.perf_counter() - call.sent_at) * 1000.0
        return
    reply = reply_call.response
    assert reply is not None
    call.latency_ms = (reply.received_at - call.sent_at) * 1000.0
    status = call.status = reply.status
    if status == 204 or (status == 200 and not reply.body.strip()):
        call.outcome = "no_bid"
        return
    if status != 200:
        call.outcome = call.error = "http_status"
        return
    try:
        response, faults = decode_bid_response_lenient(reply.body, request)
    except InvalidBidResponse as exc:
        if exc.field in _EMPTY_BID_FIELDS:
            # `"seatbid": []` breaks the spec's letter, but many DSPs mean "no bid" by it.
            call.outcome = "no_bid"
            return
        call.outcome = call.error = "invalid_response"
        log.debug("invalid bid response", extra={"dsp": call.state.partner.id, "error": str(exc)})
        return
    except Exception:  # a decoder bug on one partner's bytes must not fail the auction
        log.exception("decoding a bid response failed", extra={"dsp": call.state.partner.id})
        call.outcome = call.error = "internal"
        return
    for fault in faults:  # repaired, the bids that are safe kept: counted per partner
        DSP_RESPONSE_FAULTS.labels(call.state.partner.id, fault.kind).inc()
    if not response.seatbid:
        call.outcome = "no_bid"
        return
    call.outcome = "bid"
    call.response = response


def record_health(call: DspCall, full_timeout: bool = True) -> None:
    """Tells the call's breaker what its outcome says about the partner (`breaker_verdict`).
    `full_timeout=False` when the call's deadline was not the partner's own."""
    breaker = call.state.breaker
    outcome = call.outcome
    if outcome in _ANSWERED:
        breaker.record_success()
        return
    full = full_timeout and call.timeout_s >= call.state.partner.timeout_ms / 1000.0
    verdict = breaker_verdict(outcome, call.status, full)
    if verdict == FAILURE:
        reason = f"HTTP {call.status}" if outcome == "http_status" else outcome
        breaker.record_failure(time.monotonic(), reason)
    elif verdict == SUCCESS:
        breaker.record_success()
    else:
        breaker.record_neutral()


class FanOut:
    """Sends an auction's calls and collects their replies, with one exchange's client."""

    __slots__ = ("client",)

    def __init__(self, client: FanoutClient) -> None:
        self.client = client

    def send(
        self, state: AuctionState, tmax_ms: int, loop: asyncio.AbstractEventLoop
    ) -> ReplyWaiter:
        """Sends every call the gate let through: the request is built once (`tmax_ms` is
        the time the partners are told they have) and encoded once per distinct (redaction,
        bid adjustment). A call that cannot start (a malformed endpoint) fails at once."""
        outgoing = state.outgoing = partner_request(
            state.request, state.auction_id, state.rules, tmax_ms
        )
        encoded: dict[tuple[Redaction | None, float], bytes] = {}
        waiter = ReplyWaiter()
        on_done = waiter.one_done
        start_call = self.client.start_call
        for call in state.calls:
            if call.outcome is not SENDING:
                continue
            partner = call.state.partner
            adjustment = partner.bid_adjustment
            key = (call.redaction, adjustment)
            body = encoded.get(key)
            if body is None:
                shown = outgoing
                if adjustment != 1.0:
                    shown = with_floors(outgoing, state.rules, adjustment)
                if call.redaction is not None:
                    shown = apply_redaction(shown, call.redaction)
                body = encoded[key] = encode(shown)
            # Every request leaves now; the calls settle as replies arrive (no task each).
            waiter.pending += 1
            call.sent_at = time.perf_counter()
            try:
                call.pending = start_call(
                    partner.endpoint,
                    body,
                    on_done,
                    timeout_s=call.timeout_s,
                    gzip_body=partner.gzip,
                    loop=loop,
                )
            except UpstreamError as error:  # e.g. a malformed endpoint: that partner's loss
                waiter.pending -= 1
                call.outcome = call.error = error.kind
                dsp_metrics(partner.id).calls[error.kind].inc()
                record_health(call)
                log.debug(
                    "demand partner call failed", extra={"dsp": partner.id, "error": str(error)}
                )
        return waiter

    def collect(self, state: AuctionState, shaper: Shaper) -> None:
        """Once every call sent has settled, or the auction's deadline passed (`send`'s
        waiter; a second line of defence: each call has its own, earlier deadline), reads
        each reply, updates the partner's metrics and breaker, and tells the shaper whether
        it bid. A call still pending is failed as a timeout that is not the partner's."""
        request = state.outgoing
        assert request is not None
        observe = shaper.observe
        for call in state.calls:
            pending = call.pending
            if pending is None:
                continue
            settled = pending.done()
            if not settled:
                pending.set_exception(UpstreamError("timeout", _LATE))
            read_reply(call, pending, request)
            counters = dsp_metrics(call.state.partner.id)
            outcome = call.outcome
            counters.calls[outcome].inc()
            if call.status:
                counters.latency.observe(call.latency_ms / 1000.0)
            if outcome in _ANSWERED:
                call.state.breaker.record_success()
            else:
                # Unsettled at the auction's deadline: our lateness, not the partner's.
                record_health(call, full_timeout=settled)
                log.debug(
                    "demand partner call failed",
                    extra={"dsp": call.state.partner.id, "error": call.error},
                )
            observe(call.decision, outcome == "bid")
