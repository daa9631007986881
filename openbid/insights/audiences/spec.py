"""Audience segment specs: a small declarative file (YAML or JSON) with a strict schema, whose
errors name the field (`segments[1].include[0].within_days: ...`).

A segment is users whose logged behaviour meets its `include` conditions (all of them, or any
with `match: any`) and none of its `exclude` conditions. A condition is one behaviour
(`visited`: an impression of ours on a page or app; `clicked`; `converted`), filters over
what the behaviour touched (any value of each listed filter; several filters all apply),
and a window: at least `min_count` such events within the last `within_days`.

```yaml
segments:
  - id: sport-fans
    include:
      - {behaviour: visited, categories: [IAB17], min_count: 3, within_days: 14}
    exclude:
      - {behaviour: converted, advertisers: [shop.example], within_days: 30}
```
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import yaml
from msgspec import Meta

from openbid.insights.errors import InsightsError

SEGMENT_ID = r"^[a-z0-9][a-z0-9._:-]{0,63}$"
MAX_WINDOW_DAYS = 400.0
FILTERS: tuple[str, ...] = (
    "sites",
    "domains",
    "apps",
    "publishers",
    "categories",
    "campaigns",
    "creatives",
    "advertisers",
)
"""Filters of a condition, each matched against one column of a logged behaviour."""
FILTER_COLUMN: dict[str, str] = {
    "sites": "site_id",
    "domains": "domain",
    "apps": "app_bundle",
    "publishers": "publisher_id",
    "categories": "categories",
    "campaigns": "campaign_id",
    "creatives": "creative_id",
    "advertisers": "advertiser",
}

Value = Annotated[str, Meta(min_length=1, max_length=256)]
Values = Annotated[list[Value], Meta(max_length=10_000)]


class Condition(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One behaviour with its filters and window."""

    behaviour: Literal["visited", "clicked", "converted"]
    sites: Values = []
    domains: Values = []
    apps: Values = []
    """App bundles (`com.example.game`)."""
    publishers: Values = []
    categories: Values = []
    """Page, app or content categories (IAB); `IAB17` also matches its children `IAB17-44`."""
    campaigns: Values = []
    creatives: Values = []
    advertisers: Values = []
    """Advertiser domains (lower case)."""
    min_count: Annotated[int, Meta(ge=1, le=1_000_000)] = 1
    within_days: Annotated[float, Meta(gt=0, le=MAX_WINDOW_DAYS)] = 30.0

    @property
    def window_hours(self) -> int:
        """The window in whole hours, rounded up (membership is kept by the hour)."""
        return max(1, math.ceil(self.within_days * 24 - 1e-9))

    def filters(self) -> dict[str, list[str]]:
        """The filters given, by name."""
        return {name: list(getattr(self, name)) for name in FILTERS if getattr(self, name)}


class Segment(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: Annotated[str, Meta(pattern=SEGMENT_ID)]
    description: Annotated[str, Meta(max_length=1000)] = ""
    match: Literal["all", "any"] = "all"
    """How `include` conditions combine."""
    include: Annotated[list[Condition], Meta(min_length=1, max_length=32)]
    exclude: Annotated[list[Condition], Meta(max_length=32)] = []

    @property
    def max_window_hours(self) -> int:
        return max(c.window_hours for c in (*self.include, *self.exclude))


class AudienceSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    version: Literal[1] = 1
    segments: Annotated[list[Segment], Meta(min_length=1, max_length=10_000)]

    def segment(self, segment_id: str) -> Segment:
        for segment in self.segments:
            if segment.id == segment_id:
                return segment
        raise InsightsError(f"no segment {segment_id!r} in the spec (it has {self.ids()})")

    def ids(self) -> list[str]:
        return [s.id for s in self.segments]

    def digest(self) -> str:
        """A stable digest of what membership depends on (descriptions excluded)."""
        rules = [
            msgspec.to_builtins(msgspec.structs.replace(s, description=""), order="sorted")
            for s in self.segments
        ]
        canonical = json.dumps(rules, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


_PATH_PART = re.compile(r"^\$\.?")


def _field_path(message: str) -> tuple[str, str]:
    """msgspec's `... - at `$.segments[0].include[1]`` as (`segments[0].include[1]`, `...`)."""
    text, sep, where = message.rpartition(" - at `")
    if not sep:
        return "", message
    return _PATH_PART.sub("", where.rstrip("`")), text


def parse_spec(data: object, source: str = "spec") -> AudienceSpec:
    """An `AudienceSpec` from decoded YAML/JSON; `InsightsError` naming the field otherwise."""
    try:
        spec = msgspec.convert(data, AudienceSpec)
    except msgspec.ValidationError as exc:
        path, text = _field_path(str(exc))
        raise InsightsError(f"{source}: {path + ': ' if path else ''}{text}") from None
    seen: set[str] = set()
    for i, segment in enumerate(spec.segments):
        if segment.id in seen:
            raise InsightsError(f"{source}: segments[{i}].id: {segment.id!r} is used twice")
        seen.add(segment.id)
        for part in ("include", "exclude"):
            for j, condition in enumerate(getattr(segment, part)):
                where = f"{source}: segments[{i}].{part}[{j}]"
                if condition.behaviour == "converted" and condition.creatives:
                    raise InsightsError(
                        f"{where}.creatives: a conversion names no creative; filter by "
                        "campaigns or advertisers"
                    )
                for name, values in condition.filters().items():
                    for k, value in enumerate(values):
                        if any(ord(ch) < 32 for ch in value):
                            raise InsightsError(
                                f"{where}.{name}[{k}]: control characters are not allowed"
                            )
                        if name == "categories" and "," in value:
                            raise InsightsError(f"{where}.{name}[{k}]: one category per item")
    return spec


def load_spec(path: str | Path) -> AudienceSpec:
    """The spec in a YAML or JSON file (by content: JSON is YAML too)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InsightsError(f"{path}: cannot read the audience spec: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InsightsError(f"{path}: not YAML or JSON: {exc}") from None
    return parse_spec(data, source=str(path))
