"""A small IAB TCF v2 encoder: the consent strings the simulated publishers send.

Only the core segment is written (no publisher restrictions, vendors as a bit field), which
is what a CMP sends for the common cases; the exchange's decoder in `openbid.privacy` reads
them like any other TC string.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import datetime

import msgspec


class TcfConsent(msgspec.Struct, frozen=True, kw_only=True):
    """The decoded content of a core TC string (field names follow the TCF v2.2 spec)."""

    created: datetime
    last_updated: datetime
    cmp_id: int = 7
    cmp_version: int = 1
    consent_screen: int = 1
    consent_language: str = "EN"
    vendor_list_version: int = 48
    policy_version: int = 2
    is_service_specified: bool = True
    use_non_standard_texts: bool = False
    special_feature_optins: frozenset[int] = frozenset()
    purpose_consents: frozenset[int] = frozenset()
    purpose_legitimate_interests: frozenset[int] = frozenset()
    purpose_one_treatment: bool = False
    publisher_country_code: str = "AA"
    vendor_consents: frozenset[int] = frozenset()
    vendor_legitimate_interests: frozenset[int] = frozenset()
    max_vendor_id: int = 0
    """Width of both vendor sections when larger than the highest vendor id listed (CMPs
    often write the vendor list's size)."""


class _Bits:
    def __init__(self) -> None:
        self._bits: list[str] = []

    def int(self, value: int, width: int) -> None:
        if not 0 <= value < (1 << width):
            raise ValueError(f"{value} does not fit in {width} bits")
        self._bits.append(format(value, f"0{width}b"))

    def flag(self, value: bool) -> None:
        self._bits.append("1" if value else "0")

    def letters(self, text: str) -> None:
        for char in text.upper():
            self.int(ord(char) - ord("A"), 6)

    def set_field(self, members: Iterable[int], width: int) -> None:
        chosen = set(members)
        self._bits.append("".join("1" if i in chosen else "0" for i in range(1, width + 1)))

    def vendors(self, vendor_ids: frozenset[int], min_width: int) -> None:
        max_vendor_id = max(max(vendor_ids, default=0), min_width)
        self.int(max_vendor_id, 16)
        self.flag(False)  # bit field, not ranges
        self.set_field(vendor_ids, max_vendor_id)

    def base64url(self) -> str:
        bits = "".join(self._bits)
        bits += "0" * (-len(bits) % 8)
        raw = int(bits, 2).to_bytes(len(bits) // 8, "big")
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _deciseconds(moment: datetime) -> int:
    return round(moment.timestamp() * 10)


def encode_tc_string(consent: TcfConsent) -> str:
    """The core segment of a TCF v2 TC string, base64url without padding.

    >>> from datetime import UTC
    >>> when = datetime(2024, 3, 4, tzinfo=UTC)
    >>> encode_tc_string(TcfConsent(created=when, last_updated=when, purpose_consents=frozenset({1})))
    'CP68pYAP68pYAAHABBENAwCgAIAAAAAAAAAAAAAAAAAA'
    """
    bits = _Bits()
    bits.int(2, 6)
    bits.int(_deciseconds(consent.created), 36)
    bits.int(_deciseconds(consent.last_updated), 36)
    bits.int(consent.cmp_id, 12)
    bits.int(consent.cmp_version, 12)
    bits.int(consent.consent_screen, 6)
    bits.letters(consent.consent_language)
    bits.int(consent.vendor_list_version, 12)
    bits.int(consent.policy_version, 6)
    bits.flag(consent.is_service_specified)
    bits.flag(consent.use_non_standard_texts)
    bits.set_field(consent.special_feature_optins, 12)
    bits.set_field(consent.purpose_consents, 24)
    bits.set_field(consent.purpose_legitimate_interests, 24)
    bits.flag(consent.purpose_one_treatment)
    bits.letters(consent.publisher_country_code)
    bits.vendors(consent.vendor_consents, consent.max_vendor_id)
    bits.vendors(consent.vendor_legitimate_interests, consent.max_vendor_id)
    bits.int(0, 12)  # no publisher restrictions
    return bits.base64url()
