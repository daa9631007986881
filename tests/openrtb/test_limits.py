"""Limits against abuse: body size, nesting depth, string length, counts."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.openrtb import InvalidBidRequest, Limits, RequestTooLarge, decode_bid_request
from openbid.openrtb.limits import json_depth_exceeds, longest_string_bytes

MINIMAL = b'{"id":"r","imp":[{"id":"1","banner":{"w":300,"h":250}}]}'


def _with_ext(ext: object) -> bytes:
    return json.dumps({"id": "r", "imp": [{"id": "1", "banner": {}}], "ext": ext}).encode()


def _nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


def test_limits_refuse_nonsense_values():
    with pytest.raises(ValueError, match="max_imps must be a positive integer, got 0"):
        Limits(max_imps=0)
    with pytest.raises(ValueError, match="max_body_bytes must be a positive integer"):
        Limits(max_body_bytes=1.5)
    with pytest.raises(ValueError, match=r"max_depth must be > 9"):
        Limits(max_depth=9)
    with pytest.raises(TypeError):
        Limits(max_imp=3)


def test_body_size_limit_is_inclusive_and_maps_to_413():
    limits = Limits(max_body_bytes=len(MINIMAL))
    assert decode_bid_request(MINIMAL, limits).id == "r"
    with pytest.raises(RequestTooLarge) as caught:
        decode_bid_request(MINIMAL + b" ", limits)
    assert isinstance(caught.value, InvalidBidRequest)
    assert caught.value.field == "request"


def test_depth_limit_counts_from_the_document_root():
    limits = Limits(max_depth=12)
    # request{1} > ext{2}: an ext array nested 11 deep reaches depth 12 exactly.
    assert decode_bid_request(_with_ext(_nested(11)), limits)
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(_with_ext(_nested(12)), limits)
    assert str(caught.value) == "request.ext must not nest deeper than 11 levels"


def test_brackets_inside_strings_do_not_count_as_nesting():
    assert decode_bid_request(
        _with_ext({"s": "[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{"}), Limits(max_depth=10)
    )


@pytest.mark.parametrize("where", ["ext", "unknown"])
def test_absurd_nesting_is_refused_not_crashed_on(where: str):
    deep = b"[" * 5000 + b"]" * 5000
    key = b"ext" if where == "ext" else b"future"
    body = b'{"id":"r","imp":[{"id":"1","banner":{}}],"' + key + b'":' + deep + b"}"
    with pytest.raises(InvalidBidRequest, match=r"must not nest deeper than \d+ levels$"):
        decode_bid_request(body)


def test_string_limit_applies_to_every_string():
    page = "https://example.org/" + "p" * 80
    body = json.dumps(
        {"id": "r", "imp": [{"id": "1", "banner": {}}], "site": {"page": page}}
    ).encode()
    assert decode_bid_request(body, Limits(max_string_chars=len(page))).site.page == page
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(body, Limits(max_string_chars=len(page) - 1))
    assert str(caught.value) == (
        f"request.site.page must be at most {len(page) - 1} characters, got {len(page)}"
    )


def test_string_limit_counts_characters_not_escape_bytes():
    # 30 characters written as 180 bytes of \u escapes.
    escaped = "\\u00e9" * 30
    body = ('{"id":"r","imp":[{"id":"1","banner":{}}],"site":{"name":"' + escaped + '"}}').encode()
    assert decode_bid_request(body, Limits(max_string_chars=30)).site.name == "é" * 30


def test_string_limit_covers_keys():
    body = _with_ext({"k" * 50: 1})
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(body, Limits(max_string_chars=40))
    assert str(caught.value) == "request.ext must not have a key longer than 40 characters"


# ------------------------------------------------------------------- the raw JSON scans

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:é\n', max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=4), children, max_size=4)
    ),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(max_examples=300, derandomize=True, database=None)
@given(json_values, st.integers(min_value=0, max_value=8), st.booleans())
def test_json_depth_exceeds_agrees_with_the_parsed_depth(value, limit, indent):
    document = json.dumps(value, indent=1 if indent else None).encode()
    assert json_depth_exceeds(document, limit) == (_depth(value) > limit)


@settings(max_examples=300, derandomize=True, database=None)
@given(json_values)
def test_longest_string_bytes_bounds_every_decoded_string(value):
    document = json.dumps(value).encode()
    strings: list[str] = []

    def collect(item):
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, list):
            for child in item:
                collect(child)
        elif isinstance(item, dict):
            strings.extend(item)
            for child in item.values():
                collect(child)

    collect(msgspec.json.decode(document))
    assert all(len(s) <= longest_string_bytes(document) for s in strings)


def test_limits_load_from_configuration_and_are_checked_there_too():
    assert msgspec.convert({"max_imps": 5}, Limits).max_imps == 5
    with pytest.raises(msgspec.ValidationError, match="max_depth must be > 9"):
        msgspec.convert({"max_depth": 4}, Limits)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"max_imp": 5}, Limits)
