"""The state one auction carries through its stages (`openbid.exchange.stages`), and the
records of its partner calls and winners.

One `AuctionState` per auction: each stage reads the fields earlier stages wrote
and writes its own (the table in `stages`), so a stage can be run alone on a state built
by hand. It is also what `Exchange.auction()` returns (`AuctionOutcome`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from openbid.campaigns.house import HouseBid
from openbid.demand import DemandState
from openbid.domain import Publisher
from openbid.enrich.context import AuctionContext
from openbid.exchange.auction import ImpResult, ImpRules
from openbid.http.client import Call
from openbid.openrtb import BidRequest, BidResponse
from openbid.openrtb.request import Imp
from openbid.openrtb.response import Bid
from openbid.privacy.consent import Redaction
from openbid.shaping.base import ShapingDecision

NOT_SENT = frozenset({"filtered", "qps_capped", "consent_blocked", "no_time", "circuit_open"})
"""`DspCall.outcome`s of calls the exchange decided not to make (the rest left for the DSP)."""

SENDING = "sending"
"""The outcome of a call the gate let through, until its reply (or failure) is read."""


class DspCall:
    """One partner in one auction: what we decided, what came back.

    The defaults live on the class and a call is made with its partner and decision only:
    the stages set the rest as they go (eight calls an auction: a slotted dataclass setting
    all eleven fields cost a quarter of a microsecond more per call)."""

    outcome: str = "filtered"
    latency_ms: float = 0.0
    error: str = ""
    response: BidResponse | None = None
    timeout_s: float = 0.0
    """The deadline the gate gave the call: the partner's `timeout_ms`, or less when the
    auction's `tmax` leaves less (then a timeout is not the partner's fault)."""
    redaction: Redaction | None = None
    """What the partner may see of the request (set by the gate for calls that go)."""
    pending: Call | None = None
    """The call in flight (fan-out), settled by its reply or its deadline."""
    sent_at: float = 0.0
    """`time.perf_counter()` when the request left."""
    status: int = 0
    """The HTTP status of the reply, 0 when none came."""

    def __init__(self, state: DemandState, decision: ShapingDecision) -> None:
        self.state = state
        self.decision = decision

    def __repr__(self) -> str:
        return f"DspCall({self.state.partner.id!r}, {self.outcome!r})"


@dataclass(slots=True)
class Winner:
    """A won impression, ready to be returned or rendered."""

    result: ImpResult
    auction_id: str
    bid_id: str
    dsp: str
    adm: str
    """The markup, macros substituted; empty when it comes from our `nurl` (below)."""
    media: str
    burl: str
    crid: str
    w: int
    h: int
    nurl: str = ""
    """Our signed win-notice URL, when the DSP's win notice waits for the caller's decision
    (`auction(final=False)`); empty when it was fired at once. For a bid that came without
    markup, hitting it fetches the markup from the DSP (its win notice) and answers it."""


class AuctionState:
    """Everything one auction knows, filled in stage by stage (see `stages`).

    What every auction sets is set at construction; what a stage produces starts as the
    class's empty default (one auction allocates only what it uses)."""

    context: AuctionContext | None = None
    features: Mapping[str, str] = MappingProxyType({})
    rules: Sequence[ImpRules] = ()
    calls: Sequence[DspCall] = ()
    outgoing: BidRequest | None = None
    """The request as every partner sees it before its redaction (fan-out)."""
    results: Sequence[ImpResult] = ()
    house_bids: Sequence[HouseBid] = ()
    """House demand's bids (`openbid.campaigns.house`), at most one per impression."""

    def __init__(
        self,
        request: BidRequest,
        publisher: Publisher | None,
        auction_id: str,
        deadline: float,
        measured_from: float,
        final: bool = True,
    ) -> None:
        self.request = request
        self.publisher = publisher
        self.auction_id = auction_id
        self.deadline = deadline
        """Loop time by which the auction answers (arrival plus `tmax`)."""
        self.measured_from = measured_from
        """`time.perf_counter()` at arrival, for the latency logged."""
        self.final = final
        """Our auction decides the impression (an ad tag): win notices fire at once."""
        self.bids: dict[tuple[str, str], tuple[DspCall | None, Bid]] = {}
        """Every bid that took part, by (dsp, bid id): where its notices and markup are
        (no call for a house bid)."""
        self.winners: list[Winner] = []


AuctionOutcome = AuctionState
"""What callers of `Exchange.auction()` read: `auction_id`, `winners`, `calls`."""


def media_of(imp: Imp) -> str:
    if imp.video is not None:
        return "video"
    if imp.native is not None:
        return "native"
    if imp.audio is not None:
        return "audio"
    return "banner"
