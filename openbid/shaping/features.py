"""What the shaping model reads of a request: the raw auction features and their crosses.

The raw features are the strings `openbid.exchange.features.auction_features` logs with
every auction, so a model trains on exactly what it will be served. Two layouts:

- `per_dsp`: one logistic regression per DSP over the request features and their pair
  crosses. A request is hashed once and every DSP is scored in one numba call (the
  scorer's columns are the DSPs); every feature is implicitly crossed with the DSP.
- `shared`: one model for all DSPs; a `dsp` field, every request feature and pair cross
  crossed with it, plus the uncrossed request features (what DSPs have in common).

>>> spec = shaping_spec("per_dsp")
>>> "dsp" in spec.field_names, ["media", "floor"] in spec.crosses
(False, True)
>>> shared = shaping_spec("shared")
>>> ["dsp", "media", "floor"] in shared.crosses, ["dsp", "site_id"] in shared.crosses
(True, True)
"""

from __future__ import annotations

from typing import Literal

from openbid.ml import FeatureSpec

Layout = Literal["per_dsp", "shared"]
LAYOUTS: tuple[str, ...] = ("per_dsp", "shared")

DSP_FIELD = "dsp"

REQUEST_FIELDS: tuple[str, ...] = (
    "publisher_id",
    "site_id",
    "domain",
    "app_bundle",
    "inventory_type",
    "categories",
    "placement",
    "media",
    "size",
    "device_type",
    "os",
    "browser",
    "connection_type",
    "country",
    "region",
    "hour",
    "weekday",
    "floor",
    "gdpr",
    "consent_string",
    "us_opt_out",
    "coppa",
    "user_id_present",
    "device_id_present",
    "lmt",
)
"""Keys of `auction_features` the model reads; a missing key is a value of its own."""

PAIR_CROSSES: tuple[tuple[str, str], ...] = (
    ("country", "region"),  # region codes repeat across countries
    ("country", "media"),
    ("country", "os"),
    ("country", "categories"),
    ("country", "device_type"),
    ("device_type", "media"),
    ("device_type", "hour"),
    ("categories", "hour"),
    ("os", "media"),
    ("media", "floor"),  # a DSP's price, hence whether it clears the floor, depends on format
)
"""Interactions demand partners commonly price on (geo by format, device by daypart, ...)."""

DEFAULT_HASH_BITS = 20


def shaping_spec(layout: Layout = "per_dsp", hash_bits: int = DEFAULT_HASH_BITS) -> FeatureSpec:
    """The feature spec of a shaping model in `layout`."""
    if layout == "per_dsp":
        return FeatureSpec(
            categorical=list(REQUEST_FIELDS),
            crosses=[list(pair) for pair in PAIR_CROSSES],
            hash_bits=hash_bits,
        )
    if layout == "shared":
        crosses = [[DSP_FIELD, name] for name in REQUEST_FIELDS]
        crosses += [[DSP_FIELD, *pair] for pair in PAIR_CROSSES]
        return FeatureSpec(
            categorical=[*REQUEST_FIELDS, DSP_FIELD], crosses=crosses, hash_bits=hash_bits
        )
    raise ValueError(f"unknown shaping layout {layout!r}; expected one of {LAYOUTS}")
