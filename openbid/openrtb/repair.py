"""Lenient decoding: repair the faults that are safe to repair, refuse the rest.

`decode_bid_request_lenient` first runs the strict decoder: a clean request costs exactly
what it costs there, and gets the shared empty tuple of repairs. Only when the strict
decoder refuses does it look at the fault: one the repair table (docs/openrtb.md, "Repairs")
refuses is raised at once; one it repairs sends the request down the slow path, which takes
the document apart into builtins (duplicate keys resolved, last value kept), repairs the
fault, re-encodes and decodes strictly again, fault after fault, at most `MAX_REPAIRS`.
Every repair is a `Repair` naming the field path as received, what was wrong and what was
done; the exchange returns them in `ext.warnings` and counts them by `kind`.

`decode_bid_response_lenient` does the same for a DSP's reply: a missing `id` is taken from
the request it answers, a lower-case currency upper-cased, a bid that breaks a rule
dropped (its siblings kept); the repairs are the DSP's faults, counted per DSP.

Consent signals are never repaired into more permission: a privacy flag outside 0/1 is read
as 1 (the stricter reading), `gpp_sid` faults and conflicting duplicate consent keys are
refused, and consent strings are not touched here (`openbid.privacy` reads an unreadable
one as no consent).

>>> request, repairs = decode_bid_request_lenient(
...     b'{"id":"r","imp":[{"id":"1","banner":{}}],"device":{"ip":"111.222.333.444"}}')
>>> request.device.ip is None, [str(r) for r in repairs]
(True, ['request.device.ip must be an IPv4 address, got "111.222.333.444": dropped'])
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import msgspec

from openbid.openrtb.codec import (
    DUPLICATE_KEY_REASON,
    decode_bid_request,
    decode_bid_response,
    field_type_at,
)
from openbid.openrtb.dupkeys import _Pairs, parse_pairs
from openbid.openrtb.errors import InvalidBidRequest, InvalidBidResponse, RequestTooLarge
from openbid.openrtb.limits import DEFAULT_LIMITS, Limits
from openbid.openrtb.request import BidRequest
from openbid.openrtb.response import BidResponse
from openbid.openrtb.validate import CURRENCY_PATTERN_TEXT, key_segment, show

MAX_REPAIRS = 32
"""Faults repaired in one document at most; past that it is refused (each repair costs
about three decodes, so this bounds what a hostile body can make us spend)."""


class Repair(msgspec.Struct, frozen=True, gc=False):
    """One fault repaired: `field` (JSON path as received), `reason` (what was wrong, as the
    strict decoder says it), `action` (what was done), `kind` (the rule, for metrics)."""

    field: str
    reason: str
    action: str
    kind: str

    def __str__(self) -> str:
        return f"{self.field} {self.reason}: {self.action}"


NO_REPAIRS: tuple[Repair, ...] = ()

_STEP = re.compile(r"\.([A-Za-z0-9_]+)|\[(\d+)\]")
_INDEX = re.compile(r"\[\d+\]")
_CURRENCY = re.compile(r"[A-Z]{3}")
_MEDIA = ("banner", "video", "audio", "native")
_REFUSED_REASONS = (
    "must have at most",  # limits
    "must not nest deeper",
    "must be valid UTF-8",
    "must have UTF-8 keys",
    "must not contain the reserved name",
    "must be unique",  # imp ids, deal ids: the auction or the floors would be ambiguous
    "must have at least one of banner",  # as received: the publisher offered nothing
)
_BOUND_REASONS = ("must be >= ", "must be <= ", "must be between ", "must be one of ", "is out of")
_CONSENT_PATHS = (".regs", ".user.consent", ".user.ext", ".device.lmt", ".device.dnt")
_NATIVE_SCALARS = frozenset(
    ("context", "contextsubtype", "plcmttype", "plcmtcnt", "seq", "aurlsupport", "durlsupport")
)


class _Refuse(Exception):
    """The fault is not repaired: the strict error stands."""


# ------------------------------------------------------------------------------ requests


def decode_bid_request_lenient(
    data: bytes, limits: Limits | None = None
) -> tuple[BidRequest, tuple[Repair, ...]]:
    """Decode a bid request, repairing what the repair table repairs.

    Returns the request and its repairs (`NO_REPAIRS` for a clean one, at no extra cost);
    raises `RequestTooLarge` / `InvalidBidRequest` naming the field for what is refused.
    """
    try:
        return decode_bid_request(data, limits), NO_REPAIRS
    except RequestTooLarge:
        raise
    except InvalidBidRequest as err:
        if _looks_refused(err.field, err.reason):
            raise
        return _RequestRepairer(data, limits or DEFAULT_LIMITS).run(err)


def _looks_refused(field: str, reason: str) -> bool:
    """The cheap part of the table: faults refused whatever the document says."""
    if ".native" in field:
        return False
    return field == "request" or reason.startswith(_REFUSED_REASONS)


class _Document:
    """A JSON document as builtins, with the bookkeeping that keeps paths as received."""

    def __init__(self, root: Any, prefix: str) -> None:
        self.root = root
        self.prefix = prefix
        # Items removed from lists, by the list's path as received: later paths into the
        # same list are shifted back to the indices the sender used.
        self.removed: dict[tuple, list[int]] = {}
        self.repairs: list[Repair] = []

    def steps(self, field: str) -> list[str | int]:
        rest = field[len(self.prefix) :]
        return [name or int(index) for name, index in _STEP.findall(rest)]

    def original(self, steps: list[str | int]) -> list[str | int]:
        """`steps` (indices of the document as it is now) as the sender's indices."""
        out: list[str | int] = []
        for step in steps:
            if type(step) is int:
                index = step
                for gone in sorted(self.removed.get(tuple(out), ())):
                    if gone <= index:
                        index += 1
                out.append(index)
            else:
                out.append(step)
        return out

    def text(self, steps: list[str | int]) -> str:
        return self.prefix + "".join(
            f"[{step}]" if type(step) is int else f".{step}" for step in self.original(steps)
        )

    def get(self, steps: list[str | int]) -> Any:
        node = self.root
        for step in steps:
            node = node[step]
        return node

    def drop(self, steps: list[str | int]) -> None:
        """Remove the member or list item at `steps`, remembering a list item's index."""
        parent = self.get(steps[:-1])
        last = steps[-1]
        if type(last) is int:
            self.forget(steps)
            del parent[last]
        else:
            parent.pop(last, None)

    def forget(self, steps: list[str | int]) -> None:
        """Remember that the list item at `steps` is removed (the caller removes it)."""
        self.removed.setdefault(tuple(self.original(steps[:-1])), []).append(
            self.original(steps)[-1]
        )

    def note(self, steps, reason: str, action: str, kind: str) -> None:
        self.repairs.append(Repair(self.text(steps), reason, action, kind))


class _RequestRepairer:
    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        # Re-encoding may lengthen a document ("1e2" becomes "100.0"): the size was
        # checked on the body as received.
        self.limits = msgspec.structs.replace(limits, max_body_bytes=2**31 - 1)

    def run(self, first: InvalidBidRequest) -> tuple[BidRequest, tuple[Repair, ...]]:
        doc = _Document(None, "request")
        try:
            doc.root = _deduplicated(parse_pairs(self.data), "", doc, "request")
        except InvalidBidRequest:  # a consent signal given twice
            raise
        except (ValueError, RecursionError):  # e.g. a number Python reads and msgspec not
            raise first from None
        error = first
        for _ in range(MAX_REPAIRS):
            try:
                self._repair(doc, error)
            except _Refuse:
                raise InvalidBidRequest(doc.text(doc.steps(error.field)), error.reason) from None
            if len(doc.repairs) > MAX_REPAIRS:  # duplicate keys count too
                raise _too_many_faults()
            try:
                body = msgspec.json.encode(doc.root)
            except (TypeError, OverflowError, ValueError):  # an integer beyond 64 bits
                raise InvalidBidRequest(doc.text(doc.steps(error.field)), error.reason) from None
            try:
                request = decode_bid_request(body, self.limits)
            except InvalidBidRequest as err:
                error = err
                continue
            return request, tuple(doc.repairs)
        raise _too_many_faults()

    def _repair(self, doc: _Document, err: InvalidBidRequest) -> None:
        field, reason = err.field, err.reason
        if reason == DUPLICATE_KEY_REASON and ".native.request" not in field:
            return  # resolved when the document was taken apart
        steps = doc.steps(field)
        template = _INDEX.sub("[]", field)
        if template.startswith("request.imp[].native"):
            return self._native(doc, steps, field, reason)
        if _looks_refused(field, reason):
            raise _Refuse
        if reason.startswith("must be 0 or 1") or (
            reason == "must be an integer, got a boolean" and _is_flag(field)
        ):
            return self._flag(doc, steps, template, reason)
        if template.startswith("request.source.schain"):
            return self._drop(doc, ["source", "schain"], steps, reason, "schain")
        if template.startswith("request.device.sua"):
            return self._drop(doc, ["device", "sua"], steps, reason, "sua")
        if template.startswith("request.regs"):
            raise _Refuse  # gpp_sid and the rest of the consent signals
        if reason in ("is required", "must not be empty"):
            return self._missing(doc, steps, template, reason)
        if template.startswith("request.imp[].metric[]"):
            return self._drop(doc, steps[:4], steps, reason, "metric")
        if template in ("request.device.ip", "request.device.ipv6"):
            return self._address(doc, steps, reason)
        if template.endswith((".geo.lat", ".geo.lon")):
            geo = doc.get(steps[:-1])
            geo.pop("lat", None)
            geo.pop("lon", None)
            return doc.note(steps, reason, "dropped lat and lon", "geo")
        if reason.startswith(CURRENCY_PATTERN_TEXT):
            return self._currency(doc, steps, template, reason)
        if ".durfloors[]" in template:
            index = template.split(".").index("durfloors[]")
            return self._drop(
                doc, steps[: _steps_through(steps, index)], steps, reason, "durfloors"
            )
        if ".format[]" in template:
            end = next(i for i, s in enumerate(steps) if s == "format") + 2
            return self._drop(doc, steps[:end], steps, reason, "format")
        if reason.startswith(("must be >= minduration", "must be >= minbitrate")):
            return self._ordered(doc, steps, reason)
        if reason.startswith("must not be given together with minduration"):
            media = doc.get(steps[:-1])
            media.pop("minduration", None)
            media.pop("maxduration", None)
            return doc.note(steps, reason, "dropped minduration and maxduration", "durations")
        if template.endswith((".bidfloor", ".mincpmpersec")):
            if reason.startswith("must be >= 0"):  # a negative floor is no floor
                return self._drop(doc, steps, steps, reason, "floor")
            raise _Refuse
        if ".qty" in template:
            raise _Refuse  # the multiplier bills impressions
        if reason.startswith(_BOUND_REASONS):
            return self._drop(doc, steps, steps, reason, _kind(template))
        raise _Refuse

    # --- the repairs
    def _drop(self, doc, target, steps, reason, kind) -> None:
        action = "dropped" if target == steps else f"dropped {doc.text(target)}"
        doc.note(steps, reason, action, kind)
        doc.drop(target)

    def _flag(self, doc, steps, template, reason) -> None:
        if template.startswith("request.source.schain"):
            # Read as 1, an incomplete chain would claim completeness: dropped instead.
            return self._drop(doc, ["source", "schain"], steps, reason, "schain")
        parent = doc.get(steps[:-1])
        value = parent[steps[-1]]
        if value is False or value is True:
            parent[steps[-1]] = int(value)
            return doc.note(steps, reason, f"set to {int(value)}", "flag")
        parent[steps[-1]] = 1  # any other value read as set: for privacy flags the stricter
        doc.note(steps, reason, "set to 1", "flag")

    def _missing(self, doc, steps, template, reason) -> None:
        if template.startswith("request.imp[].pmp.deals[]"):
            return self._drop(doc, steps[:5], steps, reason, "deal")
        if template.startswith("request.imp[].metric[]"):
            return self._drop(doc, steps[:4], steps, reason, "metric")
        raise _Refuse

    def _address(self, doc, steps, reason) -> None:
        device = doc.get(steps[:-1])
        value = device[steps[-1]]
        other, family = ("ipv6", socket.AF_INET6) if steps[-1] == "ip" else ("ip", socket.AF_INET)
        device.pop(steps[-1])
        if isinstance(value, str) and other not in device and _is_address(family, value):
            device[other] = value
            return doc.note(steps, reason, f"moved to request.device.{other}", "device.ip")
        doc.note(steps, reason, "dropped", "device.ip")

    def _currency(self, doc, steps, template, reason) -> None:
        parent = doc.get(steps[:-1])
        value = parent[steps[-1]]
        if isinstance(value, str) and _CURRENCY.fullmatch(value.upper()):
            parent[steps[-1]] = value.upper()
            return doc.note(steps, reason, f"upper-cased to {show(value.upper())}", "currency")
        if template == "request.cur[]":
            return self._drop(doc, steps, steps, reason, "currency")
        raise _Refuse  # a floor in an unknown currency cannot be enforced

    def _ordered(self, doc, steps, reason) -> None:
        media = doc.get(steps[:-1])
        high = steps[-1]
        low = "minduration" if high == "maxduration" else "minbitrate"
        if media.get(high) == 0:  # 0 is a sender's "no limit"
            media.pop(high)
            return doc.note(steps, reason, "dropped", "durations")
        media.pop(low, None)  # the ceiling is what a player or a pod enforces: kept
        doc.note(steps, reason, f"dropped {doc.text([*steps[:-1], low])}", "durations")

    # --- native
    def _native(self, doc, steps, field, reason) -> None:
        imp_steps = steps[:2]
        imp = doc.get(imp_steps)
        rest = steps[3:]  # after imp, i, native
        if rest and rest[0] in ("api", "battr") and len(rest) == 2:
            return self._drop(doc, steps, steps, reason, "native")
        native = imp.get("native")
        if (
            rest == ["request"]
            and reason == "must be an object, got a string"
            and self._double_encoded(doc, steps, native, reason)
        ):
            return
        if rest[:1] == ["request"] and len(rest) > 1 and isinstance(native, dict):
            try:
                if self._inside_native(doc, steps, native, rest[1:], reason):
                    return
            except (ValueError, RecursionError, TypeError, KeyError, IndexError):
                pass
        doc.note(steps, reason, f"dropped {doc.text([*imp_steps, 'native'])}", "native")
        imp.pop("native", None)
        if not any(imp.get(media) is not None for media in _MEDIA):
            if len(doc.root["imp"]) == 1:
                doc.repairs.pop()
                raise _Refuse  # nothing left to sell: the native fault is the error
            doc.note(imp_steps, "has no usable media type left", "dropped", "imp")
            doc.drop(imp_steps)

    def _double_encoded(self, doc, steps, native, reason) -> bool:
        """A Native request JSON-encoded twice (a string holding a string): decoded once more."""
        try:
            inner = json.loads(json.loads(native["request"]))
        except (ValueError, TypeError, RecursionError):
            return False
        if not isinstance(inner, dict):
            return False
        native["request"] = msgspec.json.encode(inner).decode()
        doc.note(steps, reason, "decoded once more (it was JSON-encoded twice)", "native")
        return True

    def _inside_native(self, doc, steps, native, inner, reason) -> bool:
        """Repair inside the Native document; False when the native part must go."""
        text = native["request"]
        wrapped = None
        nested = _deduplicated(parse_pairs(text), "", None, "")
        if isinstance(nested, dict) and len(nested) == 1 and isinstance(nested.get("native"), dict):
            wrapped, nested = nested, nested["native"]
        if not isinstance(nested, dict):
            return False
        first = inner[0]
        if reason == DUPLICATE_KEY_REASON:
            doc.note(steps, reason, "the last value kept", "duplicate_key")
        elif first == "assets" and len(inner) >= 2 and type(inner[1]) is int:
            asset = nested["assets"][inner[1]]
            if inner[2:] == ["id"] and reason == "is required":
                used = {a.get("id") for a in nested["assets"] if isinstance(a, dict)}
                free = max((i for i in used if type(i) is int), default=0) + 1
                asset["id"] = free
                doc.note(steps, reason, f"set to {free}", "native")
            elif isinstance(asset, dict) and asset.get("required") != 1:
                doc.note(steps, reason, f"dropped {doc.text(steps[:6])}", "native")
                doc.forget(steps[:6])
                del nested["assets"][inner[1]]
                if not nested["assets"]:
                    return False
            else:
                return False
        elif first == "eventtrackers" and len(inner) >= 2 and type(inner[1]) is int:
            doc.note(steps, reason, f"dropped {doc.text(steps[:6])}", "native")
            doc.forget(steps[:6])
            del nested["eventtrackers"][inner[1]]
        elif len(inner) == 1 and first in _NATIVE_SCALARS and reason.startswith(_BOUND_REASONS):
            doc.note(steps, reason, "dropped", "native")
            del nested[first]
        else:
            return False
        native["request"] = msgspec.json.encode(wrapped if wrapped is not None else nested).decode()
        return True


def _too_many_faults() -> InvalidBidRequest:
    return InvalidBidRequest("request", f"has too many faults to repair (more than {MAX_REPAIRS})")


def _steps_through(steps: list[str | int], dotted_index: int) -> int:
    """How many steps reach the list item of the `dotted_index`-th dotted part (e.g. the
    `durfloors[]` of `request.imp[].video.durfloors[].maxdur`)."""
    count = 0
    for position, step in enumerate(steps):
        if type(step) is str:
            count += 1
            if count == dotted_index:
                return position + 2
    return len(steps)


def _kind(template: str) -> str:
    """A bounded metric label: the field's name without the request's indices."""
    return template.removeprefix("request.").replace("[]", "")


def _is_flag(field: str) -> bool:
    from msgspec import inspect as mi

    field_type = field_type_at(BidRequest, field.removeprefix("request"))
    return isinstance(field_type, mi.IntType) and (field_type.ge, field_type.le) == (0, 1)


def _is_address(family: socket.AddressFamily, text: str) -> bool:
    try:
        socket.inet_pton(family, text)
    except (OSError, ValueError):
        return False
    return True


def _consent_conflict(path: str, first: Any, last: Any) -> bool:
    """Whether two values of the key at `path` disagree on a consent signal: the key is
    one (`.regs.gdpr`), or holds one (a second `user` object with another `consent`)."""
    if path.startswith(_CONSENT_PATHS):
        return first != last
    for consent_path in _CONSENT_PATHS:
        if consent_path.startswith(path + "."):
            rest = consent_path[len(path) + 1 :].split(".")
            if _member(first, rest) != _member(last, rest):
                return True
    return False


def _member(value: Any, names: list[str]) -> Any:
    for name in names:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _deduplicated(value: Any, path: str, doc: _Document | None, prefix: str) -> Any:
    """A `parse_pairs` document as dicts, the last value of a repeated key kept and noted;
    a consent key given twice with different values is refused."""
    if type(value) is _Pairs:
        members: dict[str, Any] = {}
        for key, item in value:
            here = path + key_segment(key)
            item = _deduplicated(item, here, doc, prefix)
            if key in members:
                if _consent_conflict(here, members[key], item):
                    raise InvalidBidRequest(
                        prefix + here,
                        "must not be given twice in one object with different values "
                        "(a consent signal)",
                    )
                if doc is not None:
                    doc.repairs.append(
                        Repair(
                            prefix + here,
                            DUPLICATE_KEY_REASON,
                            "the last value kept",
                            "duplicate_key",
                        )
                    )
                    if len(doc.repairs) > MAX_REPAIRS:  # each would be a warning sent back
                        raise _too_many_faults()
                del members[key]
            members[key] = item
        return members
    if type(value) is list:
        return [
            _deduplicated(item, f"{path}[{index}]", doc, prefix) for index, item in enumerate(value)
        ]
    return value


# ----------------------------------------------------------------------------- responses


def decode_bid_response_lenient(
    data: bytes, request: BidRequest | None = None
) -> tuple[BidResponse, tuple[Repair, ...]]:
    """Decode a DSP's bid response, repairing its safe faults (returned, to count per DSP).

    A missing `id` is the request's (the connection pairs the reply with it), a lower-case
    currency is upper-cased, a bid that breaks a rule (a duplicate id, an unknown imp, no
    markup, a bad value) is dropped and its siblings kept. Raises `InvalidBidResponse` for
    the rest, and when no bid is left (with the last bid's fault).
    """
    try:
        return decode_bid_response(data, request), NO_REPAIRS
    except InvalidBidResponse as err:
        if err.field == "response" or not (
            err.field.startswith("response.seatbid[")
            or err.field in ("response.id", "response.cur", "response.nbr")
        ):
            raise
        return _repair_response(data, request, err)


def _repair_response(
    data: bytes, request: BidRequest | None, first: InvalidBidResponse
) -> tuple[BidResponse, tuple[Repair, ...]]:
    try:
        root = json.loads(data)
    except (ValueError, RecursionError):
        raise first from None
    if not isinstance(root, dict):
        raise first
    doc = _Document(root, "response")
    error = first
    for _ in range(MAX_REPAIRS):
        field, reason = error.field, error.reason
        steps = doc.steps(field)
        if field == "response.id" and reason in ("is required", "must not be empty"):
            if request is None:
                raise error
            root["id"] = request.id
            doc.note(steps, reason, "set to the request's id", "id_missing")
        elif field == "response.cur" and reason.startswith(CURRENCY_PATTERN_TEXT):
            value = root.get("cur")
            if not (isinstance(value, str) and _CURRENCY.fullmatch(value.upper())):
                raise error
            root["cur"] = value.upper()
            doc.note(steps, reason, f"upper-cased to {show(value.upper())}", "currency")
        elif field == "response.nbr":
            doc.note(steps, reason, "dropped", "nbr")
            root.pop("nbr")
        elif len(steps) >= 4 and steps[0] == "seatbid" and steps[2] == "bid":
            _drop_bid(doc, steps, error)
        elif len(steps) == 3 and steps[2] == "bid" and reason == "must have at least one item":
            doc.note(steps, reason, f"dropped {doc.text(steps[:2])}", "seatbid_empty")
            doc.drop(steps[:2])
            if not root["seatbid"]:
                raise error
        else:
            raise InvalidBidResponse(doc.text(steps), reason) from None
        try:
            body = msgspec.json.encode(root)
        except (TypeError, OverflowError, ValueError):
            raise first from None
        try:
            response = decode_bid_response(body, request)
        except InvalidBidResponse as err:
            error = err
            continue
        return response, tuple(doc.repairs)
    raise InvalidBidResponse("response", f"has too many faults (more than {MAX_REPAIRS})")


def _drop_bid(doc: _Document, steps: list[str | int], error: InvalidBidResponse) -> None:
    reason = error.reason
    if reason.startswith("must be unique"):
        kind = "bid_duplicate_id"
    elif reason.startswith("must be the id of an imp"):
        kind = "bid_unknown_impid"
    elif reason == "must have adm or nurl":
        kind = "bid_no_markup"
    else:
        kind = "bid_invalid"
    doc.note(steps, reason, f"dropped {doc.text(steps[:4])}", kind)
    seatbids = doc.root["seatbid"]
    bids = seatbids[steps[1]]["bid"]
    if len(bids) == 1:
        if len(seatbids) == 1:
            raise InvalidBidResponse(doc.text(steps), reason) from None  # nothing left
        doc.drop(steps[:2])
    else:
        doc.drop(steps[:4])
