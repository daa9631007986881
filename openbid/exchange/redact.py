"""Applies a consent `Redaction` to a bid request before one demand partner sees it.

The decision (what to strip or coarsen) is `openbid.privacy.consent.redaction_for`; this
module only carries it out, on copies (`msgspec.structs.replace`), never on the original.
Identifiers also travel in `ext` objects (`user.ext.eids`, hashed emails, `device.ext.idfv`)
and in fields OpenRTB 2.6 does not model, so stripping is by allowlist, deny by default:
when anything of the user is stripped, `user.ext` keeps only consent signals and the user's
unknown fields are dropped; when device ids are stripped, `device.ext` keeps only `atts` and
`ifa_type` and the device's unknown fields are dropped. Extended ids (`eids`) go wherever they
travel whenever user ids or user data are stripped (Prebid Server's `transmitEids`): from
`user`, and as a member of the request's `ext` and its `ext.prebid`, `source.ext`,
`imp[].ext`, `device.ext`, `site.ext`, `app.ext`, `dooh.ext` and their `publisher.ext`,
whose other members (the supply chain, bidder params, slot and site data) stay. A request
that needs no redaction is returned as it is, at no cost.
"""

from __future__ import annotations

import ipaddress
from typing import TypeVar

import msgspec
from msgspec.structs import replace

from openbid.openrtb import BidRequest, Geo
from openbid.openrtb.base import NO_EXT
from openbid.openrtb.request import DOOH, App, Device, Imp, Publisher, Site, Source
from openbid.privacy.consent import Redaction

USER_EXT_KEPT = frozenset({"consent", "ConsentedProvidersSettings", "consented_providers_settings"})
"""`user.ext` members that survive user redaction: consent signals (the TC string, Google's
additional consent), which the partner needs and which identify nobody."""
USER_EXT_STRINGS = frozenset({"consent"})
"""`user.ext` members kept only when their value is a JSON string (the TC string)."""
DEVICE_EXT_KEPT = frozenset({"atts", "ifa_type"})
"""`device.ext` members that survive device id stripping: the app tracking authorisation
status and the kind of advertising id (the id itself is gone)."""

ID_MEMBERS = frozenset({"eids"})
"""Members removed from the request's `ext` and `ext.prebid`, `source.ext`, `imp[].ext`,
`device.ext`, `site.ext`, `app.ext`, `dooh.ext` and the `publisher.ext` of site, app and
dooh when user ids or user data are stripped: extended ids (OpenRTB 2.5's `user.ext.eids`,
also sent in `source.ext` or the request's `ext` by some supply paths) are user ids wherever
they are. Everything else in those objects is about the request, the inventory or the
bidder (`prebid` settings, `schain`, bidder params, `data` about the slot or the site,
`gpid`, `tid`) and is what the partner needs to bid: it stays."""
_ID_NEEDLES = tuple(name.encode() for name in ID_MEMBERS)
REQUEST_EXT_NESTED = frozenset({"prebid"})
"""Members of the request's `ext` whose own `ID_MEMBERS` go too (Prebid's `ext.prebid.eids`)."""

_EXT_MEMBERS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_STRING = msgspec.json.Decoder(str)
_ENCODER = msgspec.json.Encoder()

_IPV4_KEEP = 0xFFFFFF00
"""An IPv4 address keeps its /24."""
_IPV6_KEEP = ((1 << 56) - 1) << 72
"""An IPv6 address keeps its /56."""
_SIX_TO_FOUR_KEEP = ((1 << 40) - 1) << 88
"""6to4 (2002::/16) carries an IPv4 address in bits 16-48: keep 2002: and that address's /24."""
# Prefixes as integers (comparing ints is much cheaper than `address in network`).
_SIX_TO_FOUR_PREFIX = int(ipaddress.IPv6Address("2002::")) >> 112  # 2002::/16
_NAT64_PREFIX = int(ipaddress.IPv6Address("64:ff9b::")) >> 32  # 64:ff9b::/96
_IPV4_MAPPED_PREFIX = int(ipaddress.IPv6Address("::ffff:0:0")) >> 32  # ::ffff:0:0/96


def truncate_ip(ip: str | None) -> str | None:
    """IPv4 to its /24, IPv6 to its /56; an unparsable address is dropped.

    An IPv6 address that embeds an IPv4 one keeps no more of it than its /24: 6to4
    (2002::/16, where a /56 would keep the whole IPv4 address) to its /40, IPv4-mapped
    (::ffff:0:0/96) and NAT64 (64:ff9b::/96) to their /120.

    >>> truncate_ip("203.0.113.77"), truncate_ip("2001:db8:1234:5678::1"), truncate_ip("x")
    ('203.0.113.0', '2001:db8:1234:5600::', None)
    >>> truncate_ip("2002:cb00:714d:1234::1"), truncate_ip("64:ff9b::cb00:714d")
    ('2002:cb00:7100::', '64:ff9b::cb00:7100')
    """
    if not ip:
        return ip
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.version == 4:
        return str(ipaddress.IPv4Address(int(address) & _IPV4_KEEP))
    value = int(address)  # drops a scope id (fe80::1%eth0) with the rest of the host part
    if value >> 32 in (_IPV4_MAPPED_PREFIX, _NAT64_PREFIX):
        kept = value & ~0xFF
    elif value >> 112 == _SIX_TO_FOUR_PREFIX:
        kept = value & _SIX_TO_FOUR_KEEP
    else:
        kept = value & _IPV6_KEEP
    return str(ipaddress.IPv6Address(kept))


def _round_geo(geo: Geo | None) -> Geo | None:
    """lat/lon to 2 decimals; `ext` and unknown fields go (they may hold a precise fix too)."""
    if geo is None or (
        geo.lat is None and geo.lon is None and geo.ext is NO_EXT and geo._unknown is None
    ):
        return geo
    return replace(
        geo,
        lat=round(geo.lat, 2) if geo.lat is not None else None,
        lon=round(geo.lon, 2) if geo.lon is not None else None,
        accuracy=max(geo.accuracy or 0, 1000) if geo.accuracy is not None else None,
        ext=NO_EXT,
        _unknown=None,
    )


def _country_and_region(geo: Geo | None) -> Geo | None:
    """What COPPA leaves of a geo: no lat/lon (nor their accuracy), city, zip, metro or ext."""
    if geo is None:
        return None
    return Geo(
        type=geo.type,
        ipservice=geo.ipservice,
        country=geo.country,
        region=geo.region,
        regionfips104=geo.regionfips104,
        utcoffset=geo.utcoffset,
    )


def apply_redaction(request: BidRequest, redaction: Redaction) -> BidRequest:
    """`request` as the partner may see it (the same object when there is nothing to do)."""
    if redaction.is_noop:
        return request
    device, user = request.device, request.user
    strips_user = redaction.strip_user_ids or redaction.strip_user_data
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
                ext=_kept_ext(device.ext, DEVICE_EXT_KEPT),
                _unknown=None,
            )
        if redaction.strip_fine_geo:
            changes["geo"] = _country_and_region(device.geo)
        elif redaction.round_geo:
            changes["geo"] = _round_geo(device.geo)
        elif strips_user:
            # device.ext is allowlisted only with device ids; the eids in it go with user.eids.
            ext = _ext_without_ids(device.ext)
            if ext is not device.ext:
                changes["ext"] = ext
        if redaction.truncate_ip:
            changes.update(ip=truncate_ip(device.ip), ipv6=truncate_ip(device.ipv6))
        if changes:
            device = replace(device, **changes)
    if user is not None:
        changes = {}
        if redaction.strip_user_ids:
            # customdata is the bidder's data from the exchange's cookie: an id too.
            changes.update(id=None, buyeruid=None, eids=None, customdata=None)
        if redaction.strip_user_data:
            changes.update(
                yob=None,
                gender=None,
                keywords=None,
                kwarray=None,
                customdata=None,
                data=None,
                eids=None,
            )
        if redaction.strip_fine_geo:
            changes["geo"] = None
        elif redaction.round_geo:
            changes["geo"] = _round_geo(user.geo)
        if strips_user:
            changes.update(ext=_kept_ext(user.ext, USER_EXT_KEPT), _unknown=None)
        if changes:
            user = replace(user, **changes)
    if not strips_user:
        return replace(request, device=device, user=user)
    # The eids user.eids lost (both flags strip them) go from wherever else they travel.
    imps = [_without_id_members(imp) for imp in request.imp]
    if all(new is old for new, old in zip(imps, request.imp, strict=True)):
        imps = request.imp
    ext = _ext_without_ids(request.ext, REQUEST_EXT_NESTED)
    return replace(
        request,
        ext=ext,
        device=device,
        user=user,
        imp=imps,
        source=_without_id_members(request.source),
        site=_inventory_without_ids(request.site),
        app=_inventory_without_ids(request.app),
        dooh=_inventory_without_ids(request.dooh),
    )


_WithExt = TypeVar("_WithExt", Imp, Source, Site, App, DOOH, Publisher, Device, None)
_Inventory = TypeVar("_Inventory", Site, App, DOOH, None)


def _inventory_without_ids(obj: _Inventory) -> _Inventory:
    """A site, app or dooh without the `ID_MEMBERS` of its `ext` and its publisher's."""
    obj = _without_id_members(obj)
    if obj is None or obj.publisher is None:
        return obj
    publisher = _without_id_members(obj.publisher)
    return obj if publisher is obj.publisher else replace(obj, publisher=publisher)


def _without_id_members(obj: _WithExt) -> _WithExt:
    """`obj` with the `ID_MEMBERS` of its `ext` removed (the same object if it has none)."""
    if obj is None or not obj.ext:
        return obj
    ext = _ext_without_ids(obj.ext)
    return obj if ext is obj.ext else replace(obj, ext=ext)


def _ext_without_ids(ext: msgspec.Raw, nested: frozenset[str] = frozenset()) -> msgspec.Raw:
    """`ext` without its `ID_MEMBERS`, nor those of its members named in `nested` (the same
    object if it has none). An `ext` that is not an object, and may hold one, goes whole (a
    nested member that is not an object goes): it cannot be filtered; deny by default, as
    for user.ext. An object left empty goes; a nested member left empty stays as `{}`."""
    members = _members_without_ids(ext, nested)
    if members is ext:
        return ext
    return msgspec.Raw(_ENCODER.encode(members)) if members else NO_EXT


def _members_without_ids(
    ext: msgspec.Raw, nested: frozenset[str] = frozenset()
) -> msgspec.Raw | dict[str, msgspec.Raw] | None:
    """`ext` itself when it holds no `ID_MEMBERS` (nor do its `nested` members), else its
    members without them, or None when it is not an object (the codec passes any ext
    through) and may hold one."""
    if not ext:
        return ext
    raw = bytes(ext)
    # Cheap test first: a key spelt "eids" or with JSON escapes ("e\u0069ds") is needed.
    if not any(needle in raw for needle in _ID_NEEDLES) and b"\\u" not in raw:
        return ext
    try:
        members = _EXT_MEMBERS.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    changed = not ID_MEMBERS.isdisjoint(members)
    kept: dict[str, msgspec.Raw] = {}
    for name, value in members.items():
        if name in ID_MEMBERS:
            continue
        if name in nested:
            inner = _members_without_ids(value)
            if inner is not value:
                changed = True
                if inner is None:
                    continue
                value = msgspec.Raw(_ENCODER.encode(inner))
        kept[name] = value
    return kept if changed else ext


def _kept_ext(ext: msgspec.Raw, kept: frozenset[str]) -> msgspec.Raw:
    """`ext` with only the members named in `kept` (an ext that is not an object: none)."""
    if not ext:
        return ext
    try:
        members = _EXT_MEMBERS.decode(ext)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return NO_EXT
    allowed = {
        name: value
        for name, value in members.items()
        if name in kept and (name not in USER_EXT_STRINGS or _is_string(value))
    }
    if len(allowed) == len(members):
        return ext
    return msgspec.Raw(_ENCODER.encode(allowed)) if allowed else NO_EXT


def _is_string(value: msgspec.Raw) -> bool:
    try:
        _STRING.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return True
