"""Applies a consent `Redaction` to a bid request before one demand partner sees it.

The decision (what to strip or coarsen) is `openbid.privacy.consent.redaction_for`; this
module only carries it out, on copies (`msgspec.structs.replace`), never on the original.
Unknown fields and `ext` objects travel untouched: identifiers hidden inside an `ext` are
the publisher's to remove.
"""

from __future__ import annotations

import ipaddress

from msgspec.structs import replace

from openbid.openrtb import BidRequest, Geo
from openbid.privacy.consent import Redaction


def truncate_ip(ip: str | None) -> str | None:
    """IPv4 to its /24, IPv6 to its /56; an unparsable address is dropped.

    >>> truncate_ip("203.0.113.77"), truncate_ip("2001:db8:1234:5678::1"), truncate_ip("x")
    ('203.0.113.0', '2001:db8:1234:5600::', None)
    """
    if not ip:
        return ip
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 56
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def _round_geo(geo: Geo | None) -> Geo | None:
    if geo is None or (geo.lat is None and geo.lon is None):
        return geo
    return replace(
        geo,
        lat=round(geo.lat, 2) if geo.lat is not None else None,
        lon=round(geo.lon, 2) if geo.lon is not None else None,
        accuracy=max(geo.accuracy or 0, 1000) if geo.accuracy is not None else None,
    )


def apply_redaction(request: BidRequest, redaction: Redaction) -> BidRequest:
    """`request` as the partner may see it (the same object when there is nothing to do)."""
    if redaction.is_noop:
        return request
    device, user = request.device, request.user
    if device is not None:
        changes: dict[str, object] = {}
        if redaction.strip_device_ids:
            changes.update(
                ifa=None,
                didsha1=None,
                didmd5=None,
                dpidsha1=None,
                dpidmd5=None,
                macsha1=None,
                macmd5=None,
            )
        if redaction.round_geo:
            changes["geo"] = _round_geo(device.geo)
        if redaction.truncate_ip:
            changes.update(ip=truncate_ip(device.ip), ipv6=truncate_ip(device.ipv6))
        if changes:
            device = replace(device, **changes)
    if user is not None:
        changes = {}
        if redaction.strip_user_ids:
            changes.update(id=None, buyeruid=None, eids=None)
        if redaction.strip_user_data:
            changes.update(
                yob=None,
                gender=None,
                keywords=None,
                kwarray=None,
                customdata=None,
                data=None,
                geo=None,
            )
        elif redaction.round_geo:
            changes["geo"] = _round_geo(user.geo)
        if changes:
            user = replace(user, **changes)
    return replace(request, device=device, user=user)
