"""Duplicate keys in a JSON document: found in one compiled pass, named by their path.

msgspec (like Go's encoding/json, and so Prebid Server) keeps the last value of a key given
twice in one object, silently. Where we forward the bytes as received (`ext`, unknown
members) a partner that keeps the first value would read another request than we did, so a
duplicate is never let through unnoticed: strict decoding refuses it, lenient decoding keeps
the last value and says so (docs/openrtb.md).

`first_duplicate_key` scans the bytes once (numba; about 1 ns a byte, 2-3 us for a 2.6 KB
request) and only when it finds a candidate does `duplicate_key_path` take the document
apart in Python to name it. A key spelled with an escape (`"\\u0061"` is `"a"`) makes the
scan give up and the exact search decide.

>>> duplicate_key_path(b'{"id":"1","regs":{"gdpr":0,"gdpr":1}}')
('.regs', 'gdpr')
>>> duplicate_key_path(b'{"imp":[{"id":"1"},{"id":"1"}]}') is None
True
"""

from __future__ import annotations

import json

import numba
import numpy as np

from openbid.openrtb.validate import key_segment

_NO_DUPLICATE, _LOOK_CLOSER = -1, -2
_MAX_DEPTH = 64  # past this the exact search decides (msgspec's own guard is deeper)


@numba.njit(cache=True, boundscheck=False)
def _scan(text: np.ndarray) -> int:
    """Offset of a key repeated in its object, -1 if none, -2 when unsure.

    `text` must be valid JSON (it is only called after a successful decode). Each open
    object keeps (start, length, hash) of its keys; a key is compared with its siblings
    only, by hash and length first.
    """
    n = text.shape[0]
    cap = n // 4 + 2  # a key and its value take at least 4 bytes ("":0)
    keys = np.empty((cap, 3), np.int64)
    frame = np.empty(_MAX_DEPTH + 2, np.int64)  # first key of each open object; -1: array
    frame[0] = -1
    depth = 0
    count = 0
    expect_key = False
    i = 0
    while i < n:
        c = text[i]
        if c == 34:  # a string
            i += 1
            if expect_key:
                start = i
                h = 0
                while True:
                    b = text[i]
                    if b == 34:
                        break
                    if b == 92:  # an escaped key: the exact search compares decoded keys
                        return _LOOK_CLOSER
                    h = h * 31 + b
                    i += 1
                length = i - start
                for k in range(frame[depth], count):
                    if keys[k, 2] == h and keys[k, 1] == length:
                        s = keys[k, 0]
                        m = 0
                        while m < length and text[s + m] == text[start + m]:
                            m += 1
                        if m == length:
                            return start - 1
                if count == cap:
                    return _LOOK_CLOSER
                keys[count, 0] = start
                keys[count, 1] = length
                keys[count, 2] = h
                count += 1
                expect_key = False
            else:
                while True:
                    b = text[i]
                    if b == 34:
                        break
                    if b == 92:
                        i += 1
                    i += 1
        elif c == 123:  # {
            depth += 1
            if depth > _MAX_DEPTH:
                return _LOOK_CLOSER
            frame[depth] = count
            expect_key = True
        elif c == 91:  # [
            depth += 1
            if depth > _MAX_DEPTH:
                return _LOOK_CLOSER
            frame[depth] = -1
        elif c == 125:  # }: its keys are forgotten
            count = frame[depth]
            depth -= 1
        elif c == 93:  # ]
            depth -= 1
        elif c == 44:  # , : a key follows inside an object
            expect_key = frame[depth] >= 0
        i += 1
    return _NO_DUPLICATE


def has_duplicate_key(document: bytes) -> bool:
    """Whether valid JSON `document` may hold a key twice in one object (exact when False)."""
    return _scan(np.frombuffer(document, np.uint8)) != _NO_DUPLICATE


class _Pairs(list):
    """An object's members in order, duplicates kept (`object_pairs_hook`)."""


def parse_pairs(document: bytes | str) -> object:
    """The document as builtins with every object a `_Pairs` list of (key, value)."""
    return json.loads(document, object_pairs_hook=_Pairs)


def duplicate_key_path(document: bytes | str) -> tuple[str, str] | None:
    """(path of the object, key) of the first key given twice in one object, or None.

    Paths are relative to the root (`.regs`, `.imp[0].ext`); the key is returned apart so
    that the caller can show it safely.
    """
    return _first_duplicate(parse_pairs(document), "")


def _first_duplicate(value: object, path: str) -> tuple[str, str] | None:
    if type(value) is _Pairs:
        seen: set[str] = set()
        for key, _item in value:
            if key in seen:
                return path, key
            seen.add(key)
        for key, item in value:
            found = _first_duplicate(item, path + key_segment(key))
            if found is not None:
                return found
    elif type(value) is list:
        for index, item in enumerate(value):
            found = _first_duplicate(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def to_builtins(value: object) -> object:
    """A `parse_pairs` document as plain dicts and lists, the last value of a key kept."""
    if type(value) is _Pairs:
        return {key: to_builtins(item) for key, item in value}
    if type(value) is list:
        return [to_builtins(item) for item in value]
    return value


_scan(np.frombuffer(b'{"a":[1,{"b":"c"}]}', np.uint8))  # compile (or load) now, not mid-request
