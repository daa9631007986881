"""Records as people write them in files, and back: money in currency units (`2.5`, exact
to the micro), flight dates as ISO dates or times (or relative: `today`, `today+30d`,
`now-1h`), caps as `3/1d`, sizes as `300x250`, hours as specs (`mon-fri 09-17`), lists as
YAML lists or `a|b|c`. Lenient in what it reads (alpha-2 countries, upper-case domains,
a list written as one string), and every refusal names the field as the file spells it.

`record_from_doc(kind, doc, now_micros)` returns the record or its `FieldError`s;
`doc_from_record(record)` writes the short form (defaults left out) that reads back equal.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import msgspec.inspect

from openbid.campaigns.hours import HoursError, format_hours, parse_hours
from openbid.campaigns.model import (
    Advertiser,
    Campaign,
    Creative,
    FrequencyCap,
    LineItem,
    NativeAd,
    Targeting,
)
from openbid.campaigns.validate import FieldError
from openbid.enrich.geo import country_alpha3

KINDS = ("advertiser", "campaign", "line_item", "creative")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROS = 1_000_000
_DURATION_RE = re.compile(r"(\d+)\s*([smhdw]?)")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_RELATIVE_RE = re.compile(r"(now|today)\s*(?:([+-])\s*(\d+\s*[smhdw]))?")

# File names of fields, where they differ from the record's.
FILE_NAMES = {
    "advertiser_id": "advertiser",
    "campaign_id": "campaign",
    "creative_ids": "creatives",
    "start_micros": "start",
    "end_micros": "end",
    "total_budget_micros": "total_budget",
    "daily_budget_micros": "daily_budget",
    "goal_amount_micros": "goal_amount",
    "max_bid_cpm_micros": "max_bid_cpm",
    "min_bid_cpm_micros": "min_bid_cpm",
    "targeting.hour_mask": "targeting.hours",
}
_MONEY = (
    "total_budget_micros",
    "daily_budget_micros",
    "goal_amount_micros",
    "max_bid_cpm_micros",
    "min_bid_cpm_micros",
)
TARGETING_LISTS = tuple(
    name for name in Targeting.__struct_fields__ if name not in ("hour_mask", "hours_timezone")
)
TARGETING_KEYS = (*TARGETING_LISTS, "hours", "hours_timezone")
NATIVE_KEYS = tuple(NativeAd.__struct_fields__)


def file_field(field: str) -> str:
    """A record's field name as files spell it (`daily_budget_micros` -> `daily_budget`)."""
    return FILE_NAMES.get(field, field)


class _Refused(Exception):
    def __init__(self, field: str, reason: str) -> None:
        self.error = FieldError(field, reason)


# Readers of one value; each raises _Refused naming the field.


def _text(field: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Refused(field, f"expected text, got {type(value).__name__}")
    return str(value).strip()


def _list(field: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split("|") if part.strip()]
    if isinstance(value, list | tuple):
        return [_text(field, item) for item in value if str(item).strip()]
    return [_text(field, value)]


def _items(field: str, value: Any) -> list[Any]:
    """A list as written: a YAML list (its items kept as they are), or `a|b` text."""
    return list(value) if isinstance(value, list | tuple) else _list(field, value)


def _int(field: str, value: Any) -> int:
    if isinstance(value, bool):
        raise _Refused(field, "expected a whole number")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise _Refused(field, f"{value!r} is not a number") from None
    if number != number.to_integral_value():
        raise _Refused(field, f"{value!r} is not a whole number")
    return int(number)


def money_micros(field: str, value: Any) -> int:
    """An amount in currency units as integer micros, refused if it has more than six
    decimals (never rounded: 0.1 is 100,000 micros, not 100,000.000000000006).

    >>> money_micros("budget", "2.5"), money_micros("budget", 0.35), money_micros("b", 1200)
    (2500000, 350000, 1200000000)
    """
    if isinstance(value, bool):
        raise _Refused(field, "expected an amount")
    try:
        amount = Decimal(str(value).strip().replace("_", "").replace(",", ""))
    except InvalidOperation:
        raise _Refused(field, f"{value!r} is not an amount") from None
    if not amount.is_finite():
        raise _Refused(field, f"{value!r} is not an amount")
    micros = amount * MICROS
    if micros != micros.to_integral_value():
        raise _Refused(field, f"{value!r} has more than 6 decimals")
    return int(micros)


def money_text(micros: int) -> int | float:
    """Micros as the number files hold (an int when whole)."""
    if micros % MICROS == 0:
        return micros // MICROS
    return float(Decimal(micros).scaleb(-6))


def duration_s(field: str, value: Any) -> int:
    """`90`, `90s`, `30m`, `12h`, `1d`, `1w` as seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _DURATION_RE.fullmatch(_text(field, value).lower())
    if not match:
        raise _Refused(field, f"{value!r} is not a duration like 30m, 12h, 1d")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def duration_text(seconds: int) -> str:
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _zone(field: str, name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _Refused(field, f"{name!r} is not an IANA time zone") from None


def time_micros(field: str, value: Any, zone: ZoneInfo, now_micros: int) -> int:
    """A date (midnight in `zone`), a time (in `zone` unless it says its offset), or a time
    relative to the clock: `now`, `today` (midnight in `zone`), `today+30d`, `now-2h`."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=zone)
    elif isinstance(value, date):
        moment = datetime.combine(value, time(), tzinfo=zone)
    else:
        text = _text(field, value)
        relative = _RELATIVE_RE.fullmatch(text.lower())
        if relative:
            moment = datetime.fromtimestamp(now_micros / MICROS, tz=zone)
            if relative.group(1) == "today":
                moment = moment.replace(hour=0, minute=0, second=0, microsecond=0)
            if relative.group(2):
                shift = timedelta(seconds=duration_s(field, relative.group(3).replace(" ", "")))
                moment = moment + shift if relative.group(2) == "+" else moment - shift
        else:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise _Refused(
                    field, f"{text!r} is not a date or time (2024-03-04, today+30d)"
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=zone)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def time_text(micros: int, zone: ZoneInfo) -> str:
    moment = datetime.fromtimestamp(micros // MICROS, tz=zone).replace(microsecond=micros % MICROS)
    if moment.time() == time():
        return moment.date().isoformat()
    return moment.isoformat()


def _caps(field: str, value: Any) -> tuple[FrequencyCap, ...]:
    caps = []
    entries = _items(field, value)
    for index, entry in enumerate(entries):
        where = f"{field}[{index}]"
        if isinstance(entry, dict):
            unknown = set(entry) - {"impressions", "per", "__line__"}
            if unknown or "impressions" not in entry or "per" not in entry:
                raise _Refused(where, "expected {impressions: N, per: 1d}")
            impressions, per = entry["impressions"], entry["per"]
        else:
            impressions, _, per = _text(where, entry).partition("/")
            if not per:
                raise _Refused(where, f"{entry!r} is not a cap like 3/1d")
        caps.append(FrequencyCap(_int(where, impressions), duration_s(where, per)))
    return tuple(caps)


def caps_text(caps: tuple[FrequencyCap, ...]) -> list[str]:
    return [f"{cap.max_impressions}/{duration_text(cap.period_s)}" for cap in caps]


def _size(field: str, value: Any) -> tuple[int, int]:
    if isinstance(value, list | tuple) and len(value) == 2:
        return _int(field, value[0]), _int(field, value[1])
    w, x, h = _text(field, value).lower().partition("x")
    if not x:
        raise _Refused(field, f"{value!r} is not a size like 300x250")
    return _int(field, w), _int(field, h)


def _normalise_geo(value: str) -> str:
    country, dash, rest = value.partition("-")
    return country_alpha3(country) + dash + rest


_TARGETING_NORMALISE: dict[str, Callable[[str], str]] = {
    "countries": country_alpha3,
    "regions": _normalise_geo,
    "cities": _normalise_geo,
    "device_types": str.lower,
    "os": str.lower,
    "inventory": str.lower,
    "domains": str.lower,
    "content_categories": str.upper,
    "formats": str.lower,
    "placement_sizes": str.lower,
}


def targeting_from_doc(doc: Any) -> Targeting:
    if not isinstance(doc, dict):
        raise _Refused("targeting", "expected a mapping of dimensions")
    fields: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "__line__" or value in (None, "", []):
            continue
        field = f"targeting.{key}"
        if key == "hours":
            try:
                fields["hour_mask"] = parse_hours(_list(field, value))
            except HoursError as exc:
                raise _Refused(field, str(exc)) from None
        elif key == "hours_timezone":
            fields[key] = _text(field, value)
        elif key in TARGETING_LISTS:
            normalise = _TARGETING_NORMALISE.get(key.removesuffix("_exclude"), str.strip)
            fields[key] = tuple(dict.fromkeys(normalise(v) for v in _list(field, value)))
        else:
            raise _Refused(
                field, f"unknown targeting dimension (known: {', '.join(TARGETING_KEYS)})"
            )
    return Targeting(**fields)


def targeting_to_doc(targeting: Targeting) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key in TARGETING_LISTS:
        values = getattr(targeting, key)
        if values:
            doc[key] = list(values)
    if targeting.hour_mask is not None:
        doc["hours"] = format_hours(targeting.hour_mask) or ["all"]
    if targeting.hours_timezone != "user":
        doc["hours_timezone"] = targeting.hours_timezone
    return doc


# One reader per kind: (file key, record field, reader). Readers take (field, value).

_Reader = Callable[[str, Any], Any]
_FIELDS: dict[str, list[tuple[str, str, _Reader]]] = {
    "advertiser": [
        ("id", "id", _text),
        ("name", "name", _text),
        ("domain", "domain", lambda f, v: _text(f, v).lower()),
        ("status", "status", lambda f, v: _text(f, v).lower()),
    ],
    "campaign": [
        ("id", "id", _text),
        ("advertiser", "advertiser_id", _text),
        ("name", "name", _text),
        ("timezone", "timezone", _text),
        ("total_budget", "total_budget_micros", money_micros),
        ("daily_budget", "daily_budget_micros", money_micros),
        ("goal", "goal", lambda f, v: _text(f, v).lower()),
        ("goal_amount", "goal_amount_micros", money_micros),
        ("tier", "tier", lambda f, v: _text(f, v).lower()),
        ("max_bid_cpm", "max_bid_cpm_micros", money_micros),
        ("min_bid_cpm", "min_bid_cpm_micros", money_micros),
        ("frequency_caps", "frequency_caps", _caps),
        ("status", "status", lambda f, v: _text(f, v).lower()),
    ],
    "line_item": [
        ("id", "id", _text),
        ("campaign", "campaign_id", _text),
        ("name", "name", _text),
        ("creatives", "creative_ids", lambda f, v: tuple(_list(f, v))),
        ("frequency_caps", "frequency_caps", _caps),
        ("daily_budget", "daily_budget_micros", money_micros),
        ("total_budget", "total_budget_micros", money_micros),
        ("status", "status", lambda f, v: _text(f, v).lower()),
    ],
    "creative": [
        ("id", "id", _text),
        ("advertiser", "advertiser_id", _text),
        ("name", "name", _text),
        ("kind", "kind", lambda f, v: _text(f, v).lower()),
        ("landing_url", "landing_url", _text),
        ("sizes", "sizes", lambda f, v: tuple(_size(f, s) for s in _items(f, v))),
        ("adomain", "adomain", lambda f, v: tuple(d.lower() for d in _list(f, v))),
        ("categories", "categories", lambda f, v: tuple(c.upper() for c in _list(f, v))),
        ("markup", "markup", lambda f, v: str(v)),
        ("vast_url", "vast_url", _text),
        ("duration_s", "duration_s", duration_s),
        ("mimes", "mimes", lambda f, v: tuple(_list(f, v))),
        ("approval", "approval", lambda f, v: _text(f, v).lower()),
    ],
}
_RECORD_TYPES: dict[str, type] = {
    "advertiser": Advertiser,
    "campaign": Campaign,
    "line_item": LineItem,
    "creative": Creative,
}
_REQUIRED = {
    "advertiser": ("id", "name"),
    "campaign": ("id", "advertiser", "name", "start", "end", "total_budget", "goal_amount"),
    "line_item": ("id", "campaign"),
    "creative": ("id", "advertiser", "kind", "landing_url"),
}
_EXTRA_KEYS = {
    "campaign": {"start", "end", "line_items"},
    "line_item": {"targeting"},
    "creative": {"native"},
}


def record_from_doc(
    kind: str,
    doc: dict[str, Any],
    now_micros: int,
    *,
    advertiser_domains: dict[str, str] | None = None,
) -> tuple[Any | None, list[FieldError]]:
    """The record a document describes, or the errors that stop it (file field names).
    A creative without `adomain` takes its advertiser's domain (`advertiser_domains`)."""
    readers = _FIELDS[kind]
    known = {key for key, _, _ in readers} | _EXTRA_KEYS.get(kind, set()) | {"__line__"}
    errors = [
        FieldError(key, f"unknown field (known: {', '.join(sorted(known - {'__line__'}))})")
        for key in doc
        if key not in known
    ]
    present = {key for key, value in doc.items() if value not in (None, "", [])}
    errors += [FieldError(key, "required") for key in _REQUIRED[kind] if key not in present]
    fields: dict[str, Any] = {}
    for key, field, read in readers:
        if key in present:
            try:
                fields[field] = read(key, doc[key])
            except _Refused as refused:
                errors.append(refused.error)
    try:
        if kind == "campaign":
            zone = _zone("timezone", fields.get("timezone", "UTC"))
            for key in ("start", "end"):
                if key in present:
                    fields[f"{key}_micros"] = time_micros(key, doc[key], zone, now_micros)
        elif kind == "line_item" and "targeting" in present:
            fields["targeting"] = targeting_from_doc(doc["targeting"])
        elif kind == "creative" and "native" in present:
            native = doc["native"]
            if not isinstance(native, dict) or "title" not in native:
                raise _Refused("native", "expected a mapping with at least a title")
            extra = set(native) - set(NATIVE_KEYS) - {"__line__"}
            if extra:
                raise _Refused(f"native.{sorted(extra)[0]}", "unknown native asset")
            values = {k: v for k, v in native.items() if k != "__line__" and v not in (None, "")}
            fields["native"] = msgspec.convert(values, NativeAd, strict=False)
    except _Refused as refused:
        errors.append(refused.error)
    except msgspec.ValidationError as exc:
        errors.append(FieldError("native", str(exc)))
    if kind == "creative" and "adomain" not in fields and advertiser_domains is not None:
        domain = advertiser_domains.get(fields.get("advertiser_id", ""), "")
        if domain:
            fields["adomain"] = (domain,)
    if errors:
        return None, errors
    return _RECORD_TYPES[kind](**fields), []


def doc_from_record(record: Any) -> dict[str, Any]:
    """The short document of a record: defaults left out, money in units, times as ISO."""
    kind = kind_of(record)
    doc: dict[str, Any] = {}
    defaults = _defaults(type(record))
    for key, field, _ in _FIELDS[kind]:
        value = getattr(record, field)
        if key not in _REQUIRED[kind] and field in defaults and value == defaults[field]:
            continue
        if field in _MONEY:
            doc[key] = money_text(value)
        elif field == "frequency_caps":
            doc[key] = caps_text(value)
        elif field == "sizes":
            doc[key] = [f"{w}x{h}" for w, h in value]
        elif isinstance(value, tuple):
            doc[key] = list(value)
        else:
            doc[key] = value
    if isinstance(record, Campaign):
        zone = ZoneInfo(record.timezone)
        doc["start"] = time_text(record.start_micros, zone)
        doc["end"] = time_text(record.end_micros, zone)
    elif isinstance(record, LineItem):
        targeting = targeting_to_doc(record.targeting)
        if targeting:
            doc["targeting"] = targeting
    elif isinstance(record, Creative) and record.native is not None:
        doc["native"] = msgspec.to_builtins(record.native)
    return doc


@functools.cache
def _defaults(record_type: type) -> dict[str, Any]:
    info = msgspec.inspect.type_info(record_type)
    return {
        field.name: field.default
        for field in info.fields  # type: ignore[attr-defined]
        if field.default is not msgspec.NODEFAULT
    }


def kind_of(record: Any) -> str:
    for kind, record_type in _RECORD_TYPES.items():
        if isinstance(record, record_type):
            return kind
    raise TypeError(f"not a campaign record: {type(record).__name__}")
