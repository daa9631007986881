"""The event schema: the contract between serving (which writes) and learning (which reads).

Every event is a flat `msgspec.Struct` (encoded as an array on the log for speed, as a
Parquet row in segments). Money is integer micros, times are integer microseconds since the
epoch (UTC), and request features are the raw values as seen (`features`), never hashes.
Bump `SCHEMA_VERSION` on any change (it is written in every log batch and segment);
readers accept every version up to theirs.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec
import pyarrow as pa

from openbid import clock

SCHEMA_VERSION = 4


def now_micros() -> int:
    """The current time as integer microseconds since the epoch (UTC), on the one clock
    (`openbid.clock`: real time, or the demo's faster market time)."""
    return clock.now_micros()


class Event(msgspec.Struct, array_like=True, gc=False):
    """Fields every event carries. Fields are only ever appended, with defaults, so a log
    written by an older version still decodes (its missing trailing fields take defaults).
    Events hold only strings, numbers and a dict of strings, so they can never be part of a
    reference cycle: they are not tracked by the garbage collector (`gc=False`), and the
    thousands queued or decoded at once add no collection work."""

    kind: ClassVar[str] = ""
    ts_micros: int
    auction_id: str


class AuctionEvent(Event):
    """One auction: the request's features as seen, what happened, and who won."""

    kind: ClassVar[str] = "auction"
    request_id: str
    publisher_id: str = ""
    features: dict[str, str] = {}
    imp_count: int = 1
    tmax_ms: int = 0
    dsps_eligible: int = 0
    dsps_called: int = 0
    outcome: Literal["won", "no_bid", "rejected", "error"] = "no_bid"
    winner_dsp: str = ""
    winner_bid_id: str = ""
    winner_price_micros: int = 0
    clearing_price_micros: int = 0
    currency: str = "USD"
    latency_us: int = 0
    shaping_model: str = ""
    ab_arm: str = ""


class BidEvent(Event):
    """One demand partner in one auction: called, filtered or explored, and what came back."""

    kind: ClassVar[str] = "bid"
    dsp: str
    decision: Literal["called", "filtered", "explored"] = "called"
    send_probability: float = 1.0
    """The probability this call was sent: 1 when called, the exploration share when explored."""
    shaping_score: float = -1.0
    bid: bool = False
    bid_id: str = ""
    imp_id: str = ""
    price_micros: int = 0
    deal_id: str = ""
    latency_ms: float = 0.0
    error: str = ""
    won: bool = False
    campaign_id: str = ""
    """House demand's bids (`dsp` openbid): the campaign, line item and creative that bid
    (schema 4)."""
    line_item_id: str = ""
    creative_id: str = ""
    value_micros: int = 0
    """House bids: the CPM the impression was worth (goal x probability) before pacing and
    shading (schema 4)."""
    p_click: float = 0.0
    p_conversion: float = 0.0
    click_model: str = ""
    """House bids: the versions of the click and conversion models that priced the bid
    ("" without one), so spend traces to a model (schema 4)."""
    conversion_model: str = ""


class ImpressionEvent(Event):
    """A rendered ad: the impression tracker fired."""

    kind: ClassVar[str] = "impression"
    bid_id: str
    dsp: str = ""
    imp_id: str = ""
    creative_id: str = ""
    campaign_id: str = ""
    user_id: str = ""
    price_micros: int = 0
    advertiser: str = ""
    """The bid's first advertiser domain (`adomain`), lower-case (schema 2)."""
    propensity: float = 0.0
    """The probability the serving policy gave the creative it chose (0: not recorded, the
    creative was not chosen by a logged policy); offline evaluation weighs by it (schema 3)."""
    policy: str = ""
    """The policy that chose the creative, name and version (`ts-3f2a...`) (schema 3)."""
    segment: str = ""
    """The audience segment the policy chose for ("" for its default context) (schema 3)."""


class ClickEvent(Event):
    """A click through our signed click tracker."""

    kind: ClassVar[str] = "click"
    bid_id: str
    dsp: str = ""
    creative_id: str = ""
    campaign_id: str = ""
    user_id: str = ""
    click_id: str = ""
    """Unique per click; the landing URL carries it back (`obclid`) and so does a conversion
    attributed to it (schema 2)."""
    advertiser: str = ""
    """The bid's first advertiser domain, lower-case (schema 2)."""


class ConversionEvent(Event):
    """A conversion reported by an advertiser's pixel or postback."""

    kind: ClassVar[str] = "conversion"
    conversion_id: str
    bid_id: str = ""
    campaign_id: str = ""
    user_id: str = ""
    value_micros: int = 0
    advertiser: str = ""
    """The advertiser domain that reported it (whose key signed it), lower-case (schema 2)."""
    attribution: Literal["click", "view", "none"] = "none"
    """What the exchange attributed it to: a click (post-click window), an impression
    (post-view window) or nothing (no touch, a touch out of its window, another
    advertiser's touch): `reason` says which (schema 2)."""
    reason: str = ""
    """Why a conversion is unattributed: `no_touch`, `click_window`, `view_window`,
    `other_advertiser`, `invalid_click_id` (schema 2)."""
    click_id: str = ""
    """The click it follows (`ClickEvent.click_id`), kept when out of its window too."""
    dsp: str = ""
    touch_ts_micros: int = 0
    """When the click or impression it follows happened (0 without one)."""
    conversion_ts_micros: int = 0
    """When the conversion happened, as the advertiser says (else when it reached us:
    `ts_micros`, the time it was logged); windows are measured to it."""
    source: Literal["pixel", "postback"] = "pixel"


class NoticeEvent(Event):
    """A win, billing or loss notice we fired to a DSP (or received for our own demand)."""

    kind: ClassVar[str] = "notice"
    bid_id: str
    notice: Literal["win", "billing", "loss"]
    dsp: str = ""
    price_micros: int = 0
    loss_reason: int = 0
    http_status: int = 0
    attempts: int = 0
    duplicate: bool = False


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (AuctionEvent, BidEvent, ImpressionEvent, ClickEvent, ConversionEvent, NoticeEvent)
}


def field_names(event_type: type[Event]) -> tuple[str, ...]:
    """The fields of an event type in log (array) order."""
    return event_type.__struct_fields__


def arrow_schema(event_type: type[Event]) -> pa.Schema:
    """The Parquet schema of an event type, derived from its Struct fields.

    >>> arrow_schema(ClickEvent).names[:4]
    ['ts_micros', 'auction_id', 'bid_id', 'dsp']
    """
    info = msgspec.inspect.type_info(event_type)
    fields = []
    for field in info.fields:
        fields.append(pa.field(field.name, _arrow_type(field.type), nullable=False))
    return pa.schema(fields, metadata={"openbid.schema_version": str(SCHEMA_VERSION)})


def _arrow_type(type_info: msgspec.inspect.Type) -> pa.DataType:
    if isinstance(type_info, msgspec.inspect.IntType):
        return pa.int64()
    if isinstance(type_info, msgspec.inspect.FloatType):
        return pa.float64()
    if isinstance(type_info, msgspec.inspect.BoolType):
        return pa.bool_()
    if isinstance(type_info, msgspec.inspect.StrType | msgspec.inspect.LiteralType):
        return pa.string()
    if isinstance(type_info, msgspec.inspect.DictType):
        return pa.map_(pa.string(), pa.string())
    raise TypeError(f"no Parquet type for event field type {type_info!r}")
