"""The bidder's notice URLs: signed win (`nurl`), billing (`burl`) and loss (`lurl`) URLs
that carry what the spend and the win curves need, with the exchange's price macros left
unsigned at the end for the exchange to fill in; and the decoding of those prices.

| parameter | signed | what |
| --- | --- | --- |
| `bid` | yes | our bid id (spend is recorded once per bid id) |
| `cmp`, `li` | yes | the campaign and line item that bid |
| `bp` | yes | our bid, CPM micros: no notice charges more |
| `seg`, `fu` | yes | the shading segment; the frequency-cap user key ("" without one) |
| `at`, `fl` | yes | the auction type of the request (1 first price, 2 second); the floor our bid met, CPM micros |
| `price` | no | `${AUCTION_PRICE}`: the clearing price, CPM in the currency units of the response |
| `mtw` | no (`lurl`) | `${AUCTION_MIN_TO_WIN}`: the price that would have won |
| `reason` | no (`lurl`) | `${AUCTION_LOSS}`: the loss reason code |

An exchange that substitutes nothing leaves `${AUCTION_PRICE}` as it is: such a price
(or any that is not a finite number >= 0) is charged at our bid (`bp`), the most a
first-price auction could have charged; a price above our bid is charged at our bid.
Encrypted prices are not supported (they read as invalid, hence charged at the bid).

The price macro is not signed: whoever holds a win or billing URL can fire it first with
any price, and the real notice is then a duplicate. So what a notice charges
(`charged_price_micros`) never rests on that price alone: in a first-price auction the
clearing price is our bid, so a first-price notice is charged at our bid whatever it says
(a lower price reads `first_price_below_bid`); in a second-price auction the price can be
far below our bid but never below the floor we met, nor, by our rule, below
`min_price_share` of our bid (`below_least`: charged at that least price).

>>> charged_price_micros("0", bid_micros=2_000_000, floor_micros=500_000, at=1)
(2000000, 'first_price_below_bid')
>>> charged_price_micros("0", bid_micros=2_000_000, floor_micros=500_000, at=2)
(500000, 'below_least')
>>> charged_price_micros("0.9", bid_micros=2_000_000, floor_micros=500_000, at=2)
(900000, 'ok')

A loss notice's prices (`mtw`, else `price`) feed the win curves only when they are finite,
above 0 and at most `LOSS_PRICE_MAX_RATIO` times our bid (`decode_loss_price_micros`).

>>> decode_price_micros("1.25", bid_micros=2_000_000), decode_price_micros("${AUCTION_PRICE}", 2_000_000)
((1250000, 'ok'), (2000000, 'missing'))
>>> decode_price_micros("9", bid_micros=2_000_000)
(2000000, 'above_bid')
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from openbid.creative import TrackerSigner
from openbid.pricing.shading import FIRST_PRICE

UNSIGNED = ("price", "mtw", "reason")
"""Query parameters the exchange fills in: never part of the signature."""
KINDS = {"win": "bwin", "bill": "bbill", "loss": "bloss"}
"""Notice route -> the signer's kind (a win URL cannot be replayed as a billing one)."""
LOSS_PRICE_MAX_RATIO = 20
"""A loss notice's price above this many times our bid is not believed (ignored, counted):
it would teach the win curves that nothing near our bid can win."""


def decode_price_micros(text: str, bid_micros: int) -> tuple[int, str]:
    """A price macro's value as CPM micros, and how it read: `ok`, `missing` (empty or
    not substituted), `invalid`, `above_bid` (charged at the bid)."""
    text = text.strip()
    if not text or text.startswith("${"):
        return bid_micros, "missing"
    try:
        price = float(text)
    except ValueError:
        return bid_micros, "invalid"
    if not math.isfinite(price) or price < 0:
        return bid_micros, "invalid"
    micros = round(price * 1_000_000)
    if micros > bid_micros:
        return bid_micros, "above_bid"
    return micros, "ok"


def charged_price_micros(
    text: str, bid_micros: int, floor_micros: int, at: int, min_price_share: float = 0.05
) -> tuple[int, str]:
    """What a win or billing notice charges (CPM micros) and how its price read: first
    price, our bid (`ok` when the price says so, `first_price_below_bid` when it says less);
    second price, the price but at least the floor we met and `min_price_share` of our bid
    (`below_least` when less was said), never above our bid; the readings of
    `decode_price_micros` otherwise."""
    price, reading = decode_price_micros(text, bid_micros)
    if at == FIRST_PRICE:
        if reading == "ok" and price < bid_micros:
            reading = "first_price_below_bid"
        return bid_micros, reading
    least = min(max(floor_micros, math.ceil(min_price_share * bid_micros)), bid_micros)
    if reading == "ok" and price < least:
        return least, "below_least"
    return price, reading


def decode_loss_price_micros(text: str, bid_micros: int) -> tuple[int, str]:
    """A loss notice's price as CPM micros, and how it read: `ok`, `missing` (empty, not
    substituted, or 0: censored), `invalid` (not a finite number >= 0), `implausible` (more
    than `LOSS_PRICE_MAX_RATIO` times our bid); anything but `ok` gives 0 (censored).

    >>> decode_loss_price_micros("2.5", 2_000_000), decode_loss_price_micros("1e9", 2_000_000)
    ((2500000, 'ok'), (0, 'implausible'))
    """
    text = text.strip()
    if not text or text.startswith("${"):
        return 0, "missing"
    try:
        price = float(text)
    except ValueError:
        return 0, "invalid"
    if not math.isfinite(price) or price < 0:
        return 0, "invalid"
    if price > LOSS_PRICE_MAX_RATIO * max(bid_micros, 1) / 1_000_000:
        return 0, "implausible"
    micros = round(price * 1_000_000)
    return (micros, "ok") if micros > 0 else (0, "missing")


def notice_urls(
    signer: TrackerSigner, public_url: str, params: Mapping[str, str]
) -> dict[str, str]:
    """The `nurl`, `burl` and `lurl` of one bid."""
    base = f"{public_url}/bidder"
    return {
        "nurl": f"{base}/win?{signer.sign(KINDS['win'], params)}&price=${{AUCTION_PRICE}}",
        "burl": f"{base}/bill?{signer.sign(KINDS['bill'], params)}&price=${{AUCTION_PRICE}}",
        "lurl": (
            f"{base}/loss?{signer.sign(KINDS['loss'], params)}&price=${{AUCTION_PRICE}}"
            "&mtw=${AUCTION_MIN_TO_WIN}&reason=${AUCTION_LOSS}"
        ),
    }


def verify_notice(
    signer: TrackerSigner, kind: str, query: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(signed parameters, the exchange's unsigned ones); `InvalidTracker` if tampered."""
    signed = {k: v for k, v in query.items() if k not in UNSIGNED}
    unsigned = {k: query[k] for k in UNSIGNED if k in query}
    return signer.verify(KINDS[kind], signed), unsigned
