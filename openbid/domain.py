"""The exchange's partners as plain immutable records: publishers, their placements, and
demand partners (DSPs). Every backend of the catalog returns these, so serving code depends
on them and never on a storage library."""

from __future__ import annotations

import hashlib

import msgspec


class Publisher(msgspec.Struct, frozen=True):
    id: str
    name: str
    floor_micros: int = 0
    blocked_categories: tuple[str, ...] = ()
    blocked_adomains: tuple[str, ...] = ()


class Placement(msgspec.Struct, frozen=True):
    id: str
    publisher_id: str
    name: str
    media: str = "banner"
    sizes: tuple[tuple[int, int], ...] = ()
    floor_micros: int = 0
    site_domain: str = ""


class DemandPartner(msgspec.Struct, frozen=True):
    """An external DSP: where to send bid requests and how to treat it."""

    id: str
    endpoint: str
    seat: str = ""
    vendor_id: int | None = None
    timeout_ms: int = 120
    qps_cap: int | None = None
    bid_adjustment: float = 1.0
    gzip: bool = False
    enabled: bool = True


def hash_api_key(api_key: str) -> str:
    """Keys are stored hashed: a leaked catalog does not leak working keys."""
    return hashlib.sha256(api_key.encode()).hexdigest()
