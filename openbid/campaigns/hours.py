"""Hour-of-week masks (RTBkit's 168-bit filter) and the short text files use for them.

Bit `weekday * 24 + hour` (Monday = 0) is set for every hour a line item buys in. A spec is
`<days> <hours>`: days `mon`, `mon-fri` (ranges wrap: `fri-mon`), `sat,sun`, `all`;
hours `09-17` (from 09:00 to 17:00) or several (`07-09,17-20`); a range whose end is before
its start runs past midnight into the next day (`fri 22-02` is Friday 22-24 and Saturday
00-02, and `sun 22-02` reaches Monday). Without hours, the whole day. A 168-character
string of 0 and 1 (RTBkit's form, Monday 00h first) is read too.

>>> mask = parse_hours(["mon-fri 09-17", "sat 22-02"])
>>> hour_of_week_in(mask, 0, 9), hour_of_week_in(mask, 0, 17), hour_of_week_in(mask, 6, 1)
(True, False, True)
>>> format_hours(mask)
['mon-fri 09-17', 'sat 22-24', 'sun 00-02']
>>> parse_hours(format_hours(mask)) == mask
True
"""

from __future__ import annotations

from collections.abc import Iterable

from openbid.campaigns.model import FULL_WEEK_MASK, HOURS_PER_WEEK

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_INDEX = {name: index for index, name in enumerate(DAYS)}
_ALL_DAYS = ("all", "daily", "*")
_DAY_MASK = (1 << 24) - 1


class HoursError(ValueError):
    """A spec that cannot be read; the message says which part."""


def hour_of_week_in(mask: int, weekday: int, hour: int) -> bool:
    return bool(mask >> (weekday * 24 + hour) & 1)


def _days(text: str) -> list[int]:
    if text in _ALL_DAYS:
        return list(range(7))
    days: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in _DAY_INDEX or (last and last not in _DAY_INDEX):
            raise HoursError(f"{part!r} is not a day or a range of days (mon ... sun, all)")
        start = _DAY_INDEX[first]
        end = _DAY_INDEX[last] if last else start
        days.extend((start + offset) % 7 for offset in range((end - start) % 7 + 1))
    return days


def _hour(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 24:
        raise HoursError(f"{text!r} is not an hour from 00 to 24")
    return int(text)


def _ranges(text: str) -> list[tuple[int, int]]:
    ranges = []
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if not dash:
            raise HoursError(f"{part!r} is not a range of hours like 09-17")
        start, end = _hour(first), _hour(last)
        if start == end:
            raise HoursError(f"{part!r} is an empty range of hours")
        ranges.append((start, end))
    return ranges


def parse_hours(specs: str | Iterable[str]) -> int:
    """The mask of one spec or several (their union)."""
    if isinstance(specs, str):
        specs = [specs]
    mask = 0
    for spec in specs:
        text = spec.strip().lower()
        if len(text) == HOURS_PER_WEEK and set(text) <= {"0", "1"}:
            mask |= sum(1 << bit for bit, flag in enumerate(text) if flag == "1")
            continue
        days_text, _, hours_text = text.partition(" ")
        if not days_text:
            raise HoursError("an empty spec: expected days and hours, like 'mon-fri 09-17'")
        ranges = _ranges(hours_text.replace(" ", "")) if hours_text.strip() else [(0, 24)]
        for day in _days(days_text):
            base = day * 24
            for start, end in ranges:
                length = end - start if end > start else 24 - start + end
                for offset in range(length):
                    mask |= 1 << ((base + start + offset) % HOURS_PER_WEEK)
    return mask


def _day_hours(bits: int) -> str:
    parts = []
    hour = 0
    while hour < 24:
        if bits >> hour & 1:
            start = hour
            while hour < 24 and bits >> hour & 1:
                hour += 1
            parts.append(f"{start:02d}-{hour:02d}")
        hour += 1
    return ",".join(parts)


def format_hours(mask: int | None) -> list[str]:
    """The shortest specs this module writes for `mask` ([] for None or a full week):
    consecutive days with the same hours share one spec."""
    if mask is None or mask & FULL_WEEK_MASK == FULL_WEEK_MASK:
        return []
    specs = []
    day = 0
    while day < 7:
        bits = mask >> (day * 24) & _DAY_MASK
        first = day
        while day + 1 < 7 and mask >> ((day + 1) * 24) & _DAY_MASK == bits:
            day += 1
        if bits:
            days = DAYS[first] if first == day else f"{DAYS[first]}-{DAYS[day]}"
            hours = _day_hours(bits)
            specs.append(days if hours == "00-24" else f"{days} {hours}")
        day += 1
    return specs
