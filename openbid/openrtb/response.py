"""OpenRTB 2.6 bid response objects (spec section 4.2), field names exactly as the spec.

>>> bid = Bid(id="b1", impid="1", price=1.25, adm="<div>ad</div>")
>>> BidResponse(id="r1", seatbid=[SeatBid(bid=[bid], seat="dsp-7")]).seatbid[0].bid[0].price
1.25
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from openbid.openrtb.base import (
    NO_EXT,
    Currency,
    Flag,
    Int32,
    NonNegFloat,
    NonNegInt,
    OpenRTBObject,
    RequiredStr,
    SlotInPod,
)


class Bid(OpenRTBObject):
    """4.2.3: an offer to buy one impression; `price` is CPM in `BidResponse.cur`."""

    id: RequiredStr
    impid: RequiredStr
    price: NonNegFloat
    nurl: str | None = None
    burl: str | None = None
    lurl: str | None = None
    adm: str | None = None
    adid: str | None = None
    adomain: list[str] | None = None
    bundle: str | None = None
    iurl: str | None = None
    cid: str | None = None
    crid: str | None = None
    tactic: str | None = None
    cattax: Int32 | None = None
    cat: list[str] | None = None
    attr: list[Int32] | None = None
    apis: list[Int32] | None = None
    api: Int32 | None = None
    protocol: Int32 | None = None
    qagmediarating: Int32 | None = None
    language: str | None = None
    langb: str | None = None
    dealid: str | None = None
    w: NonNegInt | None = None
    h: NonNegInt | None = None
    wratio: NonNegInt | None = None
    hratio: NonNegInt | None = None
    exp: NonNegInt | None = None
    dur: NonNegInt | None = None
    mtype: Int32 | None = None
    slotinpod: SlotInPod | None = None
    ext: msgspec.Raw = NO_EXT


class SeatBid(OpenRTBObject):
    """4.2.2: the bids of one buyer seat."""

    bid: Annotated[list[Bid], Meta(min_length=1)]
    seat: str | None = None
    group: Flag | None = None
    ext: msgspec.Raw = NO_EXT


class BidResponse(OpenRTBObject):
    """4.2.1: the top-level bid response; no `seatbid` means no bid."""

    id: RequiredStr
    seatbid: Annotated[list[SeatBid], Meta(min_length=1)] | None = None
    bidid: str | None = None
    cur: Currency | None = None
    customdata: str | None = None
    nbr: Int32 | None = None
    ext: msgspec.Raw = NO_EXT
