"""Frequency caps: how many times one user may see a line item (or any line item of its
campaign) within a period, counted in the `CounterStore` (memory, or Redis across workers).

A cap is counted per user only where the user has an id we may use (`frequency_user_key`):
reading an identifier needs TCF purpose 1 (storage and access) and a basis for purpose 2
(selecting ads: frequency capping is part of it), and no COPPA, US opt-out or LMT/DNT;
that is exactly a redaction for our vendor id that neither blocks nor strips user ids.

Without a usable id a capped line item is not capped per user, but it is not over-served
either: its anonymous impressions in a period stay within `anonymous_share` of all its
impressions in that period (two shared counters per cap, `...:anon` and `...:all`), so
users we cannot count never take more than that share of a capped line item's delivery.

The decisions are pure (`remaining_impressions`, `anonymous_allowed`); the counter reads
and writes are at the edge (`FrequencyCapper`), one round trip to read every capped
candidate of a request, on the `a`-prefixed methods so the event loop never blocks.

>>> rule = CapRule(key="li:li-1:86400", max_impressions=3, period_s=86_400)
>>> remaining_impressions((rule,), [1]), remaining_impressions((rule,), [3])
(2, 0)
>>> anonymous_allowed(anonymous=0, total=9, share=0.1), anonymous_allowed(1, 9, 0.1)
(True, False)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import mmh3
import msgspec
import numpy as np
from prometheus_client import Counter

from openbid.campaigns.model import Campaign, LineItem
from openbid.obs import REGISTRY
from openbid.privacy.consent import ConsentContext, redaction_for
from openbid.stores.base import CounterStore, StoreUnavailable

log = logging.getLogger(__name__)

DEFAULT_ANONYMOUS_SHARE = 0.1
KEY_PREFIX = "fc:"

CAP_DECISIONS = Counter(
    "openbid_frequency_cap_decisions",
    "Capped line items looked at for a request, by outcome: allowed, capped (the user's "
    "count reached the cap), anonymous_held (no usable id and the anonymous share is used "
    "up), unavailable (the counters could not be read: not served)",
    ("outcome",),
    registry=REGISTRY,
)


class CapRule(msgspec.Struct, frozen=True):
    """One cap compiled for counting: `key` names its scope (`li:<id>:<period>` or
    `cmp:<id>:<period>`), so a campaign cap counts across its line items."""

    key: str
    max_impressions: int
    period_s: int


def cap_rules(campaign: Campaign, line_item: LineItem) -> tuple[CapRule, ...]:
    """The caps a line item answers to: its campaign's, then its own."""
    rules = [
        CapRule(f"cmp:{campaign.id}:{cap.period_s}", cap.max_impressions, cap.period_s)
        for cap in campaign.frequency_caps
    ]
    rules += [
        CapRule(f"li:{line_item.id}:{cap.period_s}", cap.max_impressions, cap.period_s)
        for cap in line_item.frequency_caps
    ]
    return tuple(rules)


def frequency_user_key(request: Any, consent: ConsentContext, vendor_id: int | None) -> str | None:
    """A stable key for the user (a hash of `user.id`, else `user.buyeruid`, else
    `device.ifa`) when consent lets us count per user, else None (see the module docstring).

    >>> from openbid.openrtb import decode_bid_request
    >>> request = decode_bid_request(b'{"id": "r", "imp": [{"id": "1", "banner": {"w": 300,'
    ...     b' "h": 250}}], "user": {"id": "u-1"}}')
    >>> key = frequency_user_key(request, ConsentContext(), vendor_id=None)
    >>> len(key), key == frequency_user_key(request, ConsentContext(), vendor_id=None)
    (32, True)
    >>> frequency_user_key(request, ConsentContext(coppa=True), vendor_id=None) is None
    True
    """
    redaction = redaction_for(consent, vendor_id)
    if redaction.block or redaction.strip_user_ids:
        return None
    user = request.user
    identifier = ""
    if user is not None:
        identifier = user.id or user.buyeruid or ""
    if not identifier and not redaction.strip_device_ids and request.device is not None:
        identifier = request.device.ifa or ""
    if not identifier:
        return None
    return mmh3.hash_bytes(identifier.encode(), 0x0F_CA_95).hex()


# Pure decisions.


def user_keys(rules: Sequence[CapRule], user: str) -> list[str]:
    return [f"{KEY_PREFIX}{rule.key}:u:{user}" for rule in rules]


def anonymous_keys(rule: CapRule) -> tuple[str, str]:
    return f"{KEY_PREFIX}{rule.key}:anon", f"{KEY_PREFIX}{rule.key}:all"


UNCAPPED = 1 << 30


def remaining_impressions(rules: Sequence[CapRule], counts: Sequence[int]) -> int:
    """How many more impressions the user may see under every rule (0: capped); a request
    with several impressions should give the line item at most this many."""
    left = UNCAPPED
    for rule, count in zip(rules, counts, strict=True):
        left = min(left, max(rule.max_impressions - count, 0))
    return left


def anonymous_allowed(anonymous: int, total: int, share: float) -> bool:
    """One more anonymous impression keeps anonymous ones within `share` of all of the
    period's impressions (this one counted in both)."""
    return anonymous + 1 <= share * (total + 1)


class FrequencyCapper:
    """Reads and counts the caps of an index's line items in a `CounterStore`."""

    def __init__(
        self, store: CounterStore, *, anonymous_share: float = DEFAULT_ANONYMOUS_SHARE
    ) -> None:
        if not 0.0 <= anonymous_share <= 1.0:
            raise ValueError(f"anonymous_share must be within 0-1, got {anonymous_share}")
        self.store = store
        self.anonymous_share = anonymous_share

    def _keys(self, rules_by_line_item: Sequence[tuple[CapRule, ...]], user: str | None):  # type: ignore[no-untyped-def]
        keys: list[str] = []
        for rules in rules_by_line_item:
            if user is not None:
                keys += user_keys(rules, user)
            else:
                for rule in rules:
                    keys += anonymous_keys(rule)
        return keys

    def decide(
        self,
        rules_by_line_item: Sequence[tuple[CapRule, ...]],
        counts: Sequence[int],
        user: str | None,
    ) -> list[int]:
        """Pure: impressions each line item may still get for this user (0: not allowed),
        from the counts read for `_keys(rules_by_line_item, user)`."""
        remaining = []
        position = 0
        for rules in rules_by_line_item:
            if user is not None:
                mine = counts[position : position + len(rules)]
                position += len(rules)
                left = remaining_impressions(rules, mine)
                CAP_DECISIONS.labels("allowed" if left else "capped").inc()
            else:
                left = 1
                for _ in rules:
                    anonymous, total = counts[position], counts[position + 1]
                    position += 2
                    if not anonymous_allowed(anonymous, total, self.anonymous_share):
                        left = 0
                CAP_DECISIONS.labels("allowed" if left else "anonymous_held").inc()
            remaining.append(left)
        return remaining

    async def allowed(self, candidates: Any, user: str | None) -> np.ndarray:
        """For each candidate pair of a match (`openbid.campaigns.index.Candidates`), whether
        its line item may be shown to this user: one counter read for all capped ones. When
        the counters cannot be read, capped line items are left out (never over-served) and
        uncapped ones go on."""
        index = candidates.index
        line_item = candidates.line_item
        allowed = np.ones(line_item.size, dtype=bool)
        capped = [i for i in dict.fromkeys(line_item.tolist()) if index.cap_rules[i]]
        if not capped:
            return allowed
        rules = [index.cap_rules[i] for i in capped]
        try:
            counts = await self.store.aget_many(self._keys(rules, user))
        except StoreUnavailable:
            CAP_DECISIONS.labels("unavailable").inc(len(capped))
            blocked = capped
        else:
            blocked = [
                i
                for i, left in zip(capped, self.decide(rules, counts, user), strict=True)
                if not left
            ]
        if blocked:
            allowed &= ~np.isin(line_item, blocked)
        return allowed

    async def record_impression(self, rules: Iterable[CapRule], user: str | None) -> None:
        """Counts one impression of a line item with these caps (from `index.cap_rules`),
        when it is served. A counter that cannot be written is logged: the impression
        happened either way."""
        writes = []
        for rule in rules:
            anonymous, total = anonymous_keys(rule)
            mine = user_keys((rule,), user)[0] if user is not None else anonymous
            writes += [(mine, rule.period_s), (total, rule.period_s)]
        results = await asyncio.gather(
            *(self.store.aadd(key, 1, ttl_s=period_s) for key, period_s in writes),
            return_exceptions=True,
        )
        for (key, _), result in zip(writes, results, strict=True):
            if isinstance(result, StoreUnavailable):
                log.warning("frequency cap not counted", extra={"key": key, "error": str(result)})
            elif isinstance(result, BaseException):
                raise result
