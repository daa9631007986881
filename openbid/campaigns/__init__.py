"""The buy side: advertisers, campaigns, line items, creatives, targeting, frequency caps.

| module | holds |
| --- | --- |
| `model.py` | the records (immutable msgspec Structs) |
| `validate.py` | checks of each record, errors naming the field |
| `categories.py`, `hours.py` | IAB categories; hour-of-week masks and their text |
| `targeting.py` | what matching reads of a request and an impression; the rules, plainly |
| `index.py`, `bitsets.py` | the compiled index: bitsets by targeting dimension, `match` |
| `matcher.py` | keeps the index current off the hot path |
| `caps.py` | frequency caps over the `CounterStore` |
| `records.py`, `bulk.py`, `cli.py` | files: YAML/CSV import and export, `openbid campaigns` |

This package's `__init__` imports only the records: `openbid.stores` imports them too.
"""

from openbid.campaigns.model import (
    Advertiser,
    Campaign,
    CampaignSet,
    Creative,
    FrequencyCap,
    LineItem,
    NativeAd,
    Targeting,
)

__all__ = [
    "Advertiser",
    "Campaign",
    "CampaignSet",
    "Creative",
    "FrequencyCap",
    "LineItem",
    "NativeAd",
    "Targeting",
]
