"""The market description: one YAML file read into typed structs, validated with errors naming the key.

A market file says who sends traffic (publishers, users, devices, countries), which DSPs buy
it and by which hidden rules, and how users click. `extends: default` inherits another
market and overrides it key by key (mappings merge, lists and values replace).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta

from openbid.errors import ConfigError

MARKETS_DIR = Path(__file__).parent / "markets"
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Share = Annotated[float, Meta(ge=0)]
Probability = Annotated[float, Meta(ge=0, le=1)]
PositiveFloat = Annotated[float, Meta(gt=0)]
PositiveInt = Annotated[int, Meta(gt=0)]
Hour = Annotated[int, Meta(ge=0, le=23)]
Mix = dict[str, Share]
"""Named shares; they need not sum to one (they are normalised)."""


class MarketError(ConfigError):
    """A market file is missing, not YAML, or has a bad key; the message names the key."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Country(_Section, kw_only=True):
    share: Share
    gdpr: bool = False
    """Whether GDPR applies (`regs.gdpr = 1`, a TC string in `user.consent`)."""
    regions: Mix = {}
    """ISO 3166-2 subdivision codes without the country prefix, with their shares."""


class Device(_Section, kw_only=True):
    share: Share
    os: Mix
    connection: Mix
    app_share: Probability = 0.0
    """Share of this device's visits that are in apps rather than on web sites."""
    video_share: Probability = 0.0
    native_share: Probability = 0.0
    banner_sizes: Mix = {}
    """`"WxH"` banner sizes shown on this device, with their shares."""


class Floors(_Section, kw_only=True):
    zero_share: Probability = 0.3
    median_cpm: PositiveFloat = 0.4
    """Median of the non-zero floors; each site has its own level around it."""
    spread: PositiveFloat = 0.8
    """Standard deviation of log floor across sites."""


class ConsentVariant(_Section, kw_only=True):
    """One kind of TC string that EU users send, with its share of EU traffic."""

    share: Share
    purposes: list[Annotated[int, Meta(ge=1, le=24)]] = []
    vendors: Literal["all", "none", "half"] = "all"
    """DSP vendor ids consented: every DSP, none, or the DSPs with an even vendor id."""


class Traffic(_Section, kw_only=True):
    """Who visits what, from where, on which device, when."""

    start: str = "2024-03-04T00:00:00Z"
    """Start of simulated time (ISO 8601, UTC) for offline generation."""
    span_days: PositiveFloat = 7.0
    tmax_ms: PositiveInt = 150
    rate_per_s: PositiveFloat = 500.0
    publishers: PositiveInt = 2000
    sites: PositiveInt = 20000
    apps: PositiveInt = 5000
    site_zipf_s: PositiveFloat = 1.1
    """Zipf exponent of site and app popularity (rank r gets weight r^-s)."""
    users: PositiveInt = 200000
    user_zipf_s: PositiveFloat = 0.8
    """Zipf exponent of user activity: a few users visit very often, most rarely."""
    user_id_share: Probability = 0.7
    """Share of users with an id the exchange can see (cookie or device id)."""
    hourly_weights: Annotated[list[Share], Meta(min_length=24, max_length=24)] = msgspec.field(
        default_factory=lambda: [1.0] * 24
    )
    """Relative traffic volume of each UTC hour."""
    weekday_weights: Annotated[list[Share], Meta(min_length=7, max_length=7)] = msgspec.field(
        default_factory=lambda: [1.0] * 7
    )
    countries: dict[str, Country]
    """ISO 3166-1 alpha-3 codes, as OpenRTB writes `geo.country`."""
    devices: dict[Literal["phone", "tablet", "desktop", "ctv"], Device]
    browsers: dict[str, Mix]
    """For each web OS, the browser mix (apps have browser `app`)."""
    categories: Mix
    """IAB content category (tier 1) of sites and apps."""
    video_sizes: Mix
    """`"WxH"` video player sizes, with their shares."""
    floors: Floors = msgspec.field(default_factory=Floors)
    consent: dict[str, ConsentVariant]


class Weighted(_Section, kw_only=True):
    """A logit model: a base, additive weights per feature value, and interactions."""

    base_logit: float
    weights: dict[str, dict[str, float]] = {}
    """`feature -> value -> weight`; unnamed values weigh 0."""
    interactions: list[Interaction] = []


class Interaction(_Section, kw_only=True):
    """A planted interaction: weights on pairs of values of two features."""

    features: Annotated[list[str], Meta(min_length=2, max_length=2)]
    weights: dict[str, float]
    """`"value_a,value_b" -> weight`."""


class Gates(_Section, kw_only=True):
    """Hard rules: a DSP never bids outside them (an empty list allows everything)."""

    countries: list[str] = []
    formats: list[str] = []
    categories: list[str] = []
    devicetypes: list[str] = []
    hours: list[Hour] = []
    requires_consent: bool = True
    """Under GDPR, bid only with consent to purposes 1-4 and to the DSP's vendor id."""


class BidModel(Weighted, kw_only=True):
    site_effect_sd: Annotated[float, Meta(ge=0)] = 0.0
    """Standard deviation of a hidden per-site logit effect (site lists every DSP has)."""


class Price(_Section, kw_only=True):
    """Bid price in CPM: log-logistic around a median, scaled per format; below the floor, no bid."""

    median_cpm: PositiveFloat
    shape: PositiveFloat = 3.0
    """Log-logistic shape: larger is narrower (the tail falls like price^-shape)."""
    format_multipliers: dict[str, PositiveFloat] = {}


class Latency(_Section, kw_only=True):
    """Response time in ms: log-logistic (a long power-law tail), capped at `max_ms`."""

    median_ms: PositiveFloat
    shape: PositiveFloat = 4.0
    max_ms: PositiveFloat = 3000.0


class Faults(_Section, kw_only=True):
    """Planted faults, as shares of requests (at most one fault per request)."""

    timeout: Probability = 0.0
    http_5xx: Probability = 0.0
    malformed_json: Probability = 0.0
    slow_body: Probability = 0.0
    connection_reset: Probability = 0.0
    timeout_ms: PositiveFloat = 2000.0
    """How long a timed-out request is held before it is answered."""
    slow_body_ms: PositiveFloat = 400.0
    """Over how long a slow body is trickled after its headers."""


class Advertiser(_Section, kw_only=True):
    domain: str
    category: str


class Dsp(_Section, kw_only=True):
    name: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_-]*$")]
    vendor_id: PositiveInt
    """The DSP's TCF Global Vendor List id."""
    gates: Gates = msgspec.field(default_factory=Gates)
    bid_model: BidModel
    price: Price
    latency: Latency
    faults: Faults = msgspec.field(default_factory=Faults)
    advertisers: Annotated[list[Advertiser], Meta(min_length=1)]


class LatentInteraction(_Section, kw_only=True):
    """A low-rank interaction `scale * <v_a, v_b>` with hidden unit-variance vectors per value:
    what a factorization machine can learn and a logistic regression cannot."""

    features: Annotated[list[str], Meta(min_length=2, max_length=2)]
    rank: PositiveInt = 4
    scale: Annotated[float, Meta(ge=0)] = 0.5


class Delay(_Section, kw_only=True):
    """A delay in market seconds: log-logistic around a median (a long power-law tail, as
    conversion delays have), capped at `max_s`."""

    median_s: PositiveFloat
    shape: PositiveFloat = 1.0
    """Larger is narrower; under 1 the tail is so long that the mean is set by the cap."""
    max_s: PositiveFloat = 30 * 86_400.0


class ClickModel(Weighted, kw_only=True):
    latent: list[LatentInteraction] = []
    delay: Delay = msgspec.field(
        default_factory=lambda: Delay(median_s=6.0, shape=2.0, max_s=300.0)
    )
    """From seeing the ad to clicking it."""


class ConversionModel(Weighted, kw_only=True):
    """Probability of a conversion given a click (the weights), and how conversions happen."""

    delay: Delay = msgspec.field(
        default_factory=lambda: Delay(median_s=7200.0, shape=0.9, max_s=30 * 86_400.0)
    )
    """From the click (or, post-view, from seeing the ad) to the conversion."""
    view_through: Probability = 0.01
    """A user who saw the ad and did not click converts with `view_through` times the
    probability a click would have."""
    value_median_usd: PositiveFloat = 40.0
    value_shape: PositiveFloat = 3.0
    """Order values: log-logistic around the median."""
    postback_share: Probability = 0.5
    """Share of post-click conversions the advertiser reports server to server (the rest by
    its page's pixel; post-view ones always by the pixel: only the browser has our cookie)."""
    duplicate_share: Probability = 0.02
    """Share of conversions reported twice (a reloaded thank-you page, a retried postback)."""


class Users(_Section, kw_only=True):
    click: ClickModel
    conversion: ConversionModel


class MarketConfig(_Section, kw_only=True):
    name: str
    seed: int = 1
    """Seed of the market's hidden structure (site attributes, hidden effects, draws)."""
    traffic: Traffic
    dsps: Annotated[list[Dsp], Meta(min_length=1)]
    users: Users


_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")


def _describe(error: msgspec.ValidationError) -> str:
    """`market.dsps[2].bid_model.base_logit: expected float` from msgspec's error text."""
    text = str(error)
    match = _PATH_RE.search(text)
    path = match.group("path") if match else ""
    reason = text[: match.start()] if match else text
    unknown = _UNKNOWN_RE.match(reason)
    if unknown:
        path = f"{path}.{unknown.group('field')}"
        reason = "unknown key"
    reason = reason.replace("`", "")
    reason = reason[:1].lower() + reason[1:]
    return f"market{path}: {reason}"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def market_path(name_or_path: str | Path) -> Path:
    """A shipped market by name (`default`, `hard`) or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    return MARKETS_DIR / f"{name_or_path}.yaml"


def _read(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path in seen:
        raise MarketError(f"{path}: extends itself through {' -> '.join(map(str, seen))}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except FileNotFoundError:
        shipped = ", ".join(sorted(p.stem for p in MARKETS_DIR.glob("*.yaml")))
        raise MarketError(f"{path}: market file not found (shipped markets: {shipped})") from None
    except yaml.YAMLError as exc:
        raise MarketError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise MarketError(f"{path}: expected a mapping at the top level")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    parent_path = market_path(parent)
    if not parent_path.is_absolute() and not parent_path.exists():
        parent_path = path.parent / parent_path
    return _merge(_read(parent_path, (*seen, path)), data)


def parse_market(data: dict[str, Any], source: str = "market") -> MarketConfig:
    """Validates a market given as plain data (what the YAML file holds).

    >>> parse_market({"name": "x"}, "inline")
    Traceback (most recent call last):
    ...
    openbid.sim.config.MarketError: inline: market: object missing required field traffic
    """
    try:
        return msgspec.convert(data, MarketConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise MarketError(f"{source}: {_describe(exc)}") from None


def load_market_config(name_or_path: str | Path = "default") -> MarketConfig:
    """Reads and validates a market file (`extends` resolved)."""
    path = market_path(name_or_path)
    return parse_market(_read(path, ()), str(path))
