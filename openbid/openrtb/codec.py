"""Decoding and encoding OpenRTB documents: one typed pass, unknown fields kept, errors named.

The hot path is `msgspec` decoding straight into the structs (which forbid unknown fields),
then the hand-written checks of `validate`. When a document holds a key we do not model, the
typed pass stops at it and we take the capturing path instead: take apart the subtrees that
hold unknown keys, move each unknown member, as the bytes received, into the `_unknown` field of
the struct that owns it, and decode the rest with the same typed decoder.
`encode` writes them back in place (see `openbid.openrtb.base`). msgspec's own errors
(`Expected int >= 0 - at $.imp[0].banner.w`) are translated into ours
(`request.imp[0].banner.w must be >= 0, got -3`).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from msgspec import inspect as mi

from openbid.openrtb.base import (
    INT32_MAX,
    NUMBER_MAX,
    UNKNOWN_KEY,
    UNKNOWN_MARKER,
    OpenRTBObject,
)
from openbid.openrtb.dupkeys import duplicate_key_path, has_duplicate_key
from openbid.openrtb.errors import InvalidBidRequest, InvalidBidResponse, RequestTooLarge
from openbid.openrtb.limits import (
    DEFAULT_LIMITS,
    Limits,
    json_depth_exceeds,
    longest_string_bytes,
)
from openbid.openrtb.native import NativeRequest, NativeResponse
from openbid.openrtb.request import BidRequest
from openbid.openrtb.response import BidResponse
from openbid.openrtb.validate import (
    CURRENCY_PATTERN_TEXT,
    Invalid,
    key_segment,
    show,
    validate_native_request,
    validate_native_response,
    validate_request,
    validate_response,
)

T = TypeVar("T", bound=OpenRTBObject)

_ROOTS = (BidRequest, BidResponse, NativeRequest, NativeResponse)
_DECODERS = {cls: msgspec.json.Decoder(cls) for cls in _ROOTS}
_ENCODER = msgspec.json.Encoder()
# The marker as raw bytes can only be a key (a quote inside a JSON string is escaped), so a
# string *value* that spells the reserved name is fine; a key that does would be spliced out
# by `encode`, wherever it sits (even in `ext`, kept as received), so it is refused.
_RESERVED = UNKNOWN_MARKER
_UNKNOWN_FIELD = "Object contains unknown field"
_MISSING = object()


def decode_bid_request(data: bytes, limits: Limits | None = None) -> BidRequest:
    """Decode and validate an OpenRTB 2.6 bid request (including its Native requests).

    Raises `RequestTooLarge` for a body over `limits.max_body_bytes`, and `InvalidBidRequest`
    naming the first offending field for anything else.

    >>> req = decode_bid_request(b'{"id":"r1","imp":[{"id":"1","banner":{"w":300,"h":250}}]}')
    >>> req.imp[0].banner.w
    300
    >>> decode_bid_request(b'{"id":"r1","imp":[{"id":"1","banner":{"w":-3,"h":250}}]}')
    Traceback (most recent call last):
    ...
    openbid.openrtb.errors.InvalidBidRequest: request.imp[0].banner.w must be >= 0, got -3
    """
    if limits is None:
        limits = DEFAULT_LIMITS
    size = len(data)
    if size > limits.max_body_bytes:
        raise RequestTooLarge(
            "request", f"body must be at most {limits.max_body_bytes} bytes, got {size}"
        )
    try:
        request = _decode(data, BidRequest, limits)
        validate_request(request, limits)
        for index, imp in enumerate(request.imp):
            if imp.native is not None:
                try:
                    decode_native_request_relative(imp.native.request.encode(), limits)
                except Invalid as err:
                    raise err.under(f".imp[{index}].native.request") from None
        if size > limits.max_string_chars:
            _check_strings(data, limits.max_string_chars)
        _check_duplicate_keys(data)
    except Invalid as err:
        raise InvalidBidRequest("request" + err.path, err.reason) from None
    return request


def decode_bid_response(data: bytes, request: BidRequest | None = None) -> BidResponse:
    """Decode and validate a bid response; with `request`, also check that it answers it.

    >>> resp = decode_bid_response(b'{"id":"r1","seatbid":[{"bid":[{"id":"b1","impid":"1",'
    ...                            b'"price":1.5,"adm":"<b>ad</b>"}]}]}')
    >>> resp.seatbid[0].bid[0].price
    1.5
    """
    try:
        response = _decode(data, BidResponse, DEFAULT_LIMITS)
        validate_response(response, request, DEFAULT_LIMITS)
    except Invalid as err:
        raise InvalidBidResponse("response" + err.path, err.reason) from None
    return response


def decode_native_request(data: bytes | str, limits: Limits | None = None) -> NativeRequest:
    """Decode and validate a Native 1.2 request (the string in `Native.request`).

    >>> decode_native_request('{"assets":[{"id":1,"title":{"len":90}}]}').assets[0].title.len
    90
    """
    try:
        return decode_native_request_relative(
            _utf8(data) if isinstance(data, str) else data, limits or DEFAULT_LIMITS
        )
    except Invalid as err:
        raise InvalidBidRequest("native" + err.path, err.reason) from None


def decode_native_request_relative(data: bytes, limits: Limits) -> NativeRequest:
    """`decode_native_request` raising `Invalid` with paths relative to the Native root."""
    native = _decode(data, NativeRequest, limits)
    validate_native_request(native, limits)
    _check_duplicate_keys(data)
    return native


def decode_native_response(data: bytes | str) -> NativeResponse:
    """Decode and validate a Native 1.2 response (the `adm` of a native bid).

    >>> decode_native_response('{"link":{"url":"https://a.example"},"assetsurl":"https://b"}').link.url
    'https://a.example'
    """
    try:
        native = _decode(
            _utf8(data) if isinstance(data, str) else data, NativeResponse, DEFAULT_LIMITS
        )
        validate_native_response(native, DEFAULT_LIMITS)
    except Invalid as err:
        raise InvalidBidResponse("native" + err.path, err.reason) from None
    return native


def encode(obj: OpenRTBObject) -> bytes:
    """JSON for any OpenRTB object, with the unknown fields it was decoded with put back.

    >>> req = decode_bid_request(b'{"id":"r1","imp":[{"id":"1","video":{"mimes":["video/mp4"]},'
    ...                          b'"future":{"x":1}}],"newtop":true}')
    >>> req.imp[0].video.mimes = ["video/webm"]
    >>> encode(req)
    b'{"id":"r1","imp":[{"id":"1","video":{"mimes":["video/webm"]},"future":{"x":1}}],"newtop":true}'
    """
    data = _ENCODER.encode(obj)
    if UNKNOWN_MARKER in data:
        return data.replace(UNKNOWN_MARKER, b"")
    return data


def unknown_fields(obj: OpenRTBObject) -> dict[str, Any]:
    """The members of `obj` that its decoder did not model, as builtins (often empty).

    Drop them before forwarding with `msgspec.structs.replace(obj, _unknown=None)`.

    >>> req = decode_bid_request(b'{"id":"r1","imp":[{"id":"1","banner":{}}],"newtop":[1]}')
    >>> unknown_fields(req), unknown_fields(req.imp[0])
    ({'newtop': [1]}, {})
    """
    raw = obj._unknown
    if raw is None:
        return {}
    return msgspec.json.decode(b"{" + bytes(raw) + b"}")


# ----------------------------------------------------------------------------- decoding


def _utf8(text: str) -> bytes:
    """A str as UTF-8; lone surrogates are kept as (invalid) bytes for `_check_utf8` to name."""
    return text.encode("utf-8", "surrogatepass")


def _decode(data: bytes, cls: type[T], limits: Limits) -> T:
    if _RESERVED in data:
        raise Invalid("", f"must not contain the reserved name {UNKNOWN_KEY}")
    if not data.isascii():
        _check_utf8(data)
    try:
        return _DECODERS[cls].decode(data)
    except msgspec.ValidationError as err:
        if str(err).startswith(_UNKNOWN_FIELD):
            return _decode_capturing(data, cls, limits)
        raise _translate(err, cls, data) from None
    except msgspec.DecodeError as err:
        raise Invalid("", f"is not valid JSON ({_lower_first(str(err))})") from None
    except RecursionError:
        raise Invalid("", f"must not nest deeper than {limits.max_depth} levels") from None


def _decode_capturing(data: bytes, cls: type[T], limits: Limits) -> T:
    """The slow path for documents with unknown keys (module docstring).

    Only the subtrees that hold unknown keys are taken apart: a subtree the typed decoder
    accepts is left as it is. An object that is taken apart is read as `dict[str, Raw]`, so its
    members stay undecoded bytes and the unknown ones are kept exactly as received. Objects
    that lost members are re-encoded from their remaining raw members (and so are their
    parents); the rest of the document is reused verbatim for the final typed decode.
    """
    captured: list[tuple[tuple[str | int, ...], msgspec.Raw]] = []
    try:
        root = data
        if cls is NativeRequest or cls is NativeResponse:
            members = _RAW_OBJECT.decode(data)
            # Native 1.0 wrapped its documents in {"native": {...}}; 1.2 does not.
            if len(members) == 1 and "native" in members:
                root = members["native"]
        cleaned = _strip(root, _SCHEMAS[cls], None, limits.max_depth, captured)
    except msgspec.ValidationError as err:
        raise _translate(err, cls, data) from None
    except msgspec.DecodeError as err:
        raise Invalid("", f"is not valid JSON ({_lower_first(str(err))})") from None
    except RecursionError:
        raise Invalid("", f"must not nest deeper than {limits.max_depth} levels") from None
    document = root if cleaned is None else cleaned
    try:
        obj = _DECODERS[cls].decode(document)
    except msgspec.ValidationError as err:
        raise _translate(err, cls, document) from None
    for path, raw in captured:
        target: Any = obj
        for step in path:
            target = target[step] if type(step) is int else getattr(target, step)
        target._unknown = raw
    return obj


DUPLICATE_KEY_REASON = "must not be given twice in one object (a duplicate key)"


def _check_duplicate_keys(data: bytes) -> None:
    """No object of the (valid, already decoded) document has a key twice (see `dupkeys`)."""
    if has_duplicate_key(data):
        try:
            found = duplicate_key_path(data)
        except RecursionError:  # deeper than any document that passed validation
            found = None
        if found is not None:
            path, key = found
            raise Invalid(path + key_segment(key), DUPLICATE_KEY_REASON)


def _check_utf8(data: bytes) -> None:
    """The whole document is UTF-8 (only called when it is not plain ASCII).

    msgspec raises a bare `UnicodeDecodeError` for a string that is not UTF-8, and does not
    look inside `Raw` values at all, so without this check a latin-1 byte in `ext` or in an
    unknown member would be forwarded to partners as received. One pass over the body costs
    a few microseconds for a non-ASCII request; an ASCII one skips it.
    """
    try:
        data.decode()
    except UnicodeDecodeError as err:
        try:
            invalid = _not_utf8(data, err.start, err.end)
        except RecursionError:  # a body nested near the stack limit: name the root
            invalid = Invalid("", f"must be valid UTF-8, got byte 0x{data[err.start]:02x}")
        raise invalid from None
    except RecursionError:
        raise Invalid("", "must be valid UTF-8 and not nest this deep") from None


_BAD_BYTES_MARK = "\ufdd0openbid-not-utf8\ufdd0"


def _not_utf8(data: bytes, start: int, end: int) -> Invalid:
    """`Invalid` naming the string (or the object whose key) holds the first bad byte.

    The bad bytes are replaced with a mark and the document decoded to builtins, then searched
    for the mark (only on this error path). The root is named when the bad byte is not inside
    a string, or the mark already occurs in the document.
    """
    got = f"got byte 0x{data[start]:02x} at offset {start}"
    rest = data[end:].decode(errors="replace")
    if _BAD_BYTES_MARK in rest:
        return Invalid("", f"must be valid UTF-8, {got}")
    text = data[:start].decode() + _BAD_BYTES_MARK + rest
    try:
        document = msgspec.json.decode(text.encode())
    except (msgspec.DecodeError, RecursionError):
        return Invalid("", f"must be valid UTF-8, {got}")
    found = _find_mark(document, "")
    if found is None:  # e.g. the mark was cut in two by an escape
        return Invalid("", f"must be valid UTF-8, {got}")
    path, in_key = found
    if in_key:
        return Invalid(path, f"must have UTF-8 keys, {got}")
    return Invalid(path, f"must be valid UTF-8, {got}")


def _find_mark(value: Any, path: str) -> tuple[str, bool] | None:
    """The path of the string holding `_BAD_BYTES_MARK`, and whether it is a key there."""
    kind = type(value)
    if kind is str:
        return (path, False) if _BAD_BYTES_MARK in value else None
    if kind is dict:
        for key, item in value.items():
            if _BAD_BYTES_MARK in key:
                return path, True
            found = _find_mark(item, path + key_segment(key))
            if found is not None:
                return found
    elif kind is list:
        for index, item in enumerate(value):
            found = _find_mark(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


_RAW_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_RAW_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])


def _strip(
    raw: bytes | msgspec.Raw,
    schema: _Schema,
    link: tuple | None,
    max_depth: int,
    captured: list[tuple[tuple[str | int, ...], msgspec.Raw]],
) -> bytes | None:
    """Take the unknown members out of the object `raw` and its descendants, into `captured`.

    Returns the object's JSON without them, or None if nothing under it changed. A member
    of the wrong JSON type is left alone: the typed decode reports it. `link` is a chain of
    (parent link, step) pairs, turned into a path only when an object has unknown members.
    Unknown values get the depth check `validate` gives `ext` values: an object at `path`
    sits at depth `1 + len(path)`, and its members may nest what that leaves of `max_depth`.
    """
    members = _RAW_OBJECT.decode(raw)
    names = schema.names
    changed = False
    if not names.issuperset(members):
        path = _unlink(link)
        budget = max_depth - 1 - len(path)
        kept = []
        for key in [key for key in members if key not in names]:
            if key == UNKNOWN_KEY:
                raise Invalid("", f"must not contain the reserved name {UNKNOWN_KEY}")
            value = bytes(members.pop(key))
            if len(value) > 2 * budget + 1 and json_depth_exceeds(value, budget):
                raise Invalid(
                    _path_text(path) + key_segment(key),
                    f"must not nest deeper than {budget} levels",
                )
            kept.append(_ENCODER.encode(key) + b":" + value)
        captured.append((path, msgspec.Raw(b",".join(kept))))
        changed = True
    children = schema.children
    for name in schema.child_names.intersection(members):
        child, is_list = children[name]
        value = members[name]
        if is_list:
            try:
                items = _RAW_ARRAY.decode(value)
            except msgspec.ValidationError:
                continue
            items_changed = False
            for index, item in enumerate(items):
                if _is_clean(item, child):
                    continue
                try:
                    cleaned = _strip(item, child, ((link, name), index), max_depth, captured)
                except msgspec.ValidationError:
                    continue
                if cleaned is not None:
                    items[index] = msgspec.Raw(cleaned)
                    items_changed = True
            if items_changed:
                members[name] = msgspec.Raw(_ENCODER.encode(items))
                changed = True
        else:
            if _is_clean(value, child):
                continue
            try:
                cleaned = _strip(value, child, (link, name), max_depth, captured)
            except msgspec.ValidationError:
                continue
            if cleaned is not None:
                members[name] = msgspec.Raw(cleaned)
                changed = True
    return _ENCODER.encode(members) if changed else None


class _Schema:
    """What the capturing path and the error translator need to know about a struct."""

    __slots__ = ("names", "children", "child_names", "types", "decoder")

    def __init__(self, cls: type) -> None:
        info = mi.type_info(cls)
        self.decoder = msgspec.json.Decoder(cls)
        self.names = frozenset(f.encode_name for f in info.fields if f.name != "_unknown")
        self.types: dict[str, mi.Type] = {}
        # name -> (the child's schema, is it a list); filled in by _build_schemas
        self.children: dict[str, tuple[_Schema, bool]] = {}
        self.child_names: frozenset[str] = frozenset()
        for field in info.fields:
            self.types[field.encode_name] = _non_null(field.type)


def _non_null(field_type: mi.Type) -> mi.Type:
    if isinstance(field_type, mi.UnionType):
        kinds = [t for t in field_type.types if not isinstance(t, mi.NoneType)]
        if len(kinds) == 1:
            return kinds[0]
    return field_type


def _build_schemas(roots: tuple[type, ...]) -> dict[type, _Schema]:
    schemas: dict[type, _Schema] = {}
    pending = list(roots)
    while pending:
        cls = pending.pop()
        if cls not in schemas:
            schemas[cls] = _Schema(cls)
            for field_type in schemas[cls].types.values():
                item = field_type.item_type if isinstance(field_type, mi.ListType) else None
                for candidate in (field_type, item):
                    if isinstance(candidate, mi.StructType):
                        pending.append(candidate.cls)
    for schema in schemas.values():
        for name, field_type in schema.types.items():
            if isinstance(field_type, mi.StructType):
                schema.children[name] = (schemas[field_type.cls], False)
            elif isinstance(field_type, mi.ListType) and isinstance(
                field_type.item_type, mi.StructType
            ):
                schema.children[name] = (schemas[field_type.item_type.cls], True)
        schema.child_names = frozenset(schema.children)
    return schemas


_SCHEMAS = _build_schemas(_ROOTS)


def _is_clean(raw: msgspec.Raw, schema: _Schema) -> bool:
    """True if the typed decoder takes this subtree as is: no unknown key anywhere in it.

    A subtree that fails for another reason is searched anyway; the final decode reports it.
    This keeps the capturing path in C for every part of the document without unknown keys.
    """
    try:
        schema.decoder.decode(raw)
    except msgspec.ValidationError:
        return False
    return True


def _unlink(link: tuple | None) -> tuple[str | int, ...]:
    """The path of a stack entry from its chain of (parent link, step) pairs."""
    steps: list[str | int] = []
    while link is not None:
        link, step = link
        steps.append(step)
    return tuple(reversed(steps))


def _path_text(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{step}]" if type(step) is int else f".{step}" for step in path)


def _check_strings(data: bytes, limit: int) -> None:
    """Every string (and key) in the document is at most `limit` characters."""
    if longest_string_bytes(data) <= limit:
        return
    found = _long_string(msgspec.json.decode(data), limit, "")
    if found is not None:
        path, reason = found
        raise Invalid(path, reason)


def _long_string(value: Any, limit: int, path: str) -> tuple[str, str] | None:
    kind = type(value)
    if kind is str:
        if len(value) > limit:
            return path, f"must be at most {limit} characters, got {len(value)}"
    elif kind is dict:
        for key, item in value.items():
            if len(key) > limit:
                return path, f"must not have a key longer than {limit} characters"
            found = _long_string(item, limit, path + key_segment(key))
            if found is not None:
                return found
    elif kind is list:
        for index, item in enumerate(value):
            found = _long_string(item, limit, f"{path}[{index}]")
            if found is not None:
                return found
    return None


# ----------------------------------------------------------------- error translation

_MSGSPEC_ERROR = re.compile(r"(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.S)
_PATH_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_EXPECTED_GOT = re.compile(r"Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")
_MISSING_FIELD = re.compile(r"Object missing required field `(?P<name>[^`]*)`")
_SANITY_CAPS = frozenset((INT32_MAX, NUMBER_MAX))
_NO_VALUE_NEEDED = frozenset(("must not be empty", "must have at least one item"))
_PHRASES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
    "raw": "a JSON value",
}


def _translate(err: msgspec.ValidationError, cls: type, document: Any) -> Invalid:
    """msgspec's `ValidationError` as our `Invalid`, with the value appended when known."""
    match = _MSGSPEC_ERROR.fullmatch(str(err))
    what, path = match["what"], match["path"] or ""
    if path.endswith("." + UNKNOWN_KEY):  # the key spelled with escapes, holding a value
        return Invalid("", f"must not contain the reserved name {UNKNOWN_KEY}")
    missing = _MISSING_FIELD.fullmatch(what)
    if missing:
        return Invalid(f"{path}.{missing['name']}", "is required")
    expected = _EXPECTED_GOT.fullmatch(what)
    if expected and expected["got"] == "null" and path and not path.endswith("]"):
        # Only a field that may not be absent refuses null (optional ones read it as absent).
        return Invalid(path, "is required")
    if expected:
        return Invalid(
            path, f"must be {_type_phrase(expected['want'])}, got {_type_phrase(expected['got'])}"
        )
    if what.endswith("out of range"):
        return Invalid(path, "is out of range")
    reason = _constraint_reason(cls, path, what)
    if reason is None:
        return Invalid(path, _lower_first(what))
    if reason in _NO_VALUE_NEEDED:
        return Invalid(path, reason)
    value = _value_at(document, path)
    if value is _MISSING:
        return Invalid(path, reason)
    if reason.startswith("must be at most") and isinstance(value, str):
        return Invalid(path, f"{reason}, got {len(value)}")
    return Invalid(path, f"{reason}, got {show(value)}")


def field_type_at(cls: type, path: str) -> mi.Type | None:
    """The declared type (None removed) of the field at `path` (`.imp[0].banner.w`) of `cls`."""
    field_type: mi.Type | None = None
    for name, _index in _PATH_STEP.findall(path):
        if name:
            if field_type is not None:
                if not isinstance(field_type, mi.StructType):
                    return None
                cls = field_type.cls
            schema = _SCHEMAS.get(cls)
            field_type = schema.types.get(name) if schema is not None else None
            if field_type is None:
                return None
        elif isinstance(field_type, mi.ListType):
            field_type = _non_null(field_type.item_type)
        else:
            return None
    return field_type


def _constraint_reason(cls: type, path: str, what: str) -> str | None:
    """The rule a constrained field broke, from its declared `Meta` (None if unknown).

    `what` is msgspec's message, which tells which bound was crossed ("Expected `int` >= 0").
    """
    field_type: mi.Type | None = None
    for name, _index in _PATH_STEP.findall(path):
        if name:
            if field_type is not None:
                if not isinstance(field_type, mi.StructType):
                    return None
                cls = field_type.cls
            field_type = _SCHEMAS[cls].types.get(name)
            if field_type is None:
                return None
        elif isinstance(field_type, mi.ListType):
            field_type = _non_null(field_type.item_type)
        else:
            return None
    if isinstance(field_type, mi.IntType | mi.FloatType):
        low, high = field_type.ge, field_type.le
        if (low, high) == (0, 1):
            return "must be 0 or 1"
        # The sanity caps every number has are not worth a mention unless crossed.
        if low is not None and high is not None and high not in _SANITY_CAPS:
            return f"must be between {_number(low)} and {_number(high)}"
        if low is not None and " >= " in what:
            return f"must be >= {_number(low)}"
        if high is not None and " <= " in what:
            return f"must be <= {_number(high)}"
    elif isinstance(field_type, mi.StrType):
        if field_type.pattern is not None:
            return CURRENCY_PATTERN_TEXT
        if field_type.max_length is not None:
            return f"must be at most {field_type.max_length} characters"
        if field_type.min_length == 1:
            return "must not be empty"
    elif isinstance(field_type, mi.ListType) and field_type.min_length == 1:
        return "must have at least one item"
    return None


def _value_at(document: Any, path: str) -> Any:
    """The value at `path` in the document (bytes, or already decoded), or `_MISSING`."""
    if isinstance(document, bytes | bytearray | memoryview | msgspec.Raw):
        try:
            document = msgspec.json.decode(document)
        except (msgspec.DecodeError, RecursionError):
            return _MISSING
    for name, index in _PATH_STEP.findall(path):
        if name and type(document) is dict and name in document:
            document = document[name]
        elif index and type(document) is list and int(index) < len(document):
            document = document[int(index)]
        else:
            return _MISSING
    return document


def _type_phrase(names: str) -> str:
    kinds = [kind for kind in names.split(" | ") if kind != "null"] or ["null"]
    return " or ".join(_PHRASES.get(kind, kind) for kind in kinds)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _lower_first(text: str) -> str:
    """Lower-case a sentence's first letter for use mid-message, but leave "JSON" alone."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text
