"""OpenRTB substitution macros (`${AUCTION_PRICE}` and friends) in markup and notice URLs."""

from __future__ import annotations

import re

import msgspec

_MACRO = re.compile(r"\$\{(AUCTION_[A-Z_]+)(?::B64)?\}")


class AuctionMacros(msgspec.Struct, frozen=True):
    """The values of an auction's macros. Prices are micros, rendered in currency units."""

    auction_id: str
    bid_id: str
    imp_id: str
    seat_id: str = ""
    ad_id: str = ""
    price_micros: int | None = None
    currency: str = "USD"
    min_to_win_micros: int | None = None
    loss_reason: int | None = None


def _units(micros: int | None) -> str:
    if micros is None:
        return ""
    return f"{micros / 1_000_000:.6f}".rstrip("0").rstrip(".")


def substitute_macros(text: str, macros: AuctionMacros) -> str:
    """Replaces the OpenRTB macros in `text`; unknown macros become empty, as the spec asks.

    >>> substitute_macros("https://dsp.example/win?p=${AUCTION_PRICE}&a=${AUCTION_ID}",
    ...                   AuctionMacros("auc-1", "bid-1", "1", price_micros=1_510_000))
    'https://dsp.example/win?p=1.51&a=auc-1'
    """
    if "${" not in text:
        return text
    values = {
        "AUCTION_ID": macros.auction_id,
        "AUCTION_BID_ID": macros.bid_id,
        "AUCTION_IMP_ID": macros.imp_id,
        "AUCTION_SEAT_ID": macros.seat_id,
        "AUCTION_AD_ID": macros.ad_id,
        "AUCTION_PRICE": _units(macros.price_micros),
        "AUCTION_CURRENCY": macros.currency,
        "AUCTION_MIN_TO_WIN": _units(macros.min_to_win_micros),
        "AUCTION_LOSS": "" if macros.loss_reason is None else str(macros.loss_reason),
    }
    return _MACRO.sub(lambda m: values.get(m.group(1), ""), text)
