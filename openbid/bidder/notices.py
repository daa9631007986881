"""The bidder's notice URLs: signed win (`nurl`), billing (`burl`) and loss (`lurl`) URLs
that carry what the spend and the win curves need, with the exchange's price macros left
unsigned at the end for the exchange to fill in; and the decoding of those prices.

| parameter | signed | what |
| --- | --- | --- |
| `bid` | yes | our bid id (spend is recorded once per bid id) |
| `cmp`, `li` | yes | the campaign and line item that bid |
| `bp` | yes | our bid, CPM micros: no notice charges more |
| `seg`, `fu` | yes | the shading segment; the frequency-cap user key ("" without one) |
| `price` | no | `${AUCTION_PRICE}`: the clearing price, CPM in the currency units of the response |
| `mtw` | no (`lurl`) | `${AUCTION_MIN_TO_WIN}`: the price that would have won |
| `reason` | no (`lurl`) | `${AUCTION_LOSS}`: the loss reason code |

An exchange that substitutes nothing leaves `${AUCTION_PRICE}` as it is: such a price
(or any that is not a finite number >= 0) is charged at our bid (`bp`), the most a
first-price auction could have charged; a price above our bid is charged at our bid.
Encrypted prices are not supported (they read as invalid, hence charged at the bid).

>>> decode_price_micros("1.25", bid_micros=2_000_000), decode_price_micros("${AUCTION_PRICE}", 2_000_000)
((1250000, 'ok'), (2000000, 'missing'))
>>> decode_price_micros("9", bid_micros=2_000_000)
(2000000, 'above_bid')
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from openbid.creative import TrackerSigner

UNSIGNED = ("price", "mtw", "reason")
"""Query parameters the exchange fills in: never part of the signature."""
KINDS = {"win": "bwin", "bill": "bbill", "loss": "bloss"}
"""Notice route -> the signer's kind (a win URL cannot be replayed as a billing one)."""


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
