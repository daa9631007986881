"""The error types, and how msgspec's messages become ours."""

from __future__ import annotations

import json
import pickle

import pytest

from openbid.openrtb import (
    InvalidBidRequest,
    InvalidBidResponse,
    Limits,
    OpenRTBError,
    RequestTooLarge,
    decode_bid_request,
    decode_native_request,
    decode_native_response,
)


def test_hierarchy():
    assert issubclass(OpenRTBError, ValueError)
    assert issubclass(InvalidBidRequest, OpenRTBError)
    assert issubclass(InvalidBidResponse, OpenRTBError)
    assert issubclass(RequestTooLarge, InvalidBidRequest)
    assert not issubclass(InvalidBidResponse, InvalidBidRequest)


def test_errors_pickle_with_their_fields():
    err = RequestTooLarge("request", "body must be at most 1 bytes, got 2")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is RequestTooLarge
    assert (copy.field, copy.reason, str(copy)) == (err.field, err.reason, str(err))


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (
            b'{"id":"r","imp":[{"id":"1","banner":{"w":"wide"}}]}',
            "request.imp[0].banner.w",
            "must be an integer, got a string",
        ),
        (
            b'{"id":"r","imp":[{"id":"1","banner":{"format":{}}}]}',
            "request.imp[0].banner.format",
            "must be an array, got an object",
        ),
        (
            b'{"id":"r","imp":[{"id":"1","banner":{"w":18446744073709551616000}}]}',
            "request.imp[0].banner.w",
            "must be <= 2147483647, got 18446744073709551616000",
        ),
        (
            b'{"id":"r","imp":[{"id":"1","banner":{}}],"cattax":-2147483649}',
            "request.cattax",
            "must be >= -2147483648, got -2147483649",
        ),
        (b'{"imp":[{"id":"1","banner":{}}]}', "request.id", "is required"),
        (
            b'{"id":"r","imp":[{"id":"1","banner":{}}],"device":{"geo":{"lat":-90.5}}}',
            "request.device.geo.lat",
            "must be between -90 and 90, got -90.5",
        ),
        (b'"just a string"', "request", "must be an object, got a string"),
        (
            b"\x01\x02",
            "request",
            "is not valid JSON (JSON is malformed: invalid character (byte 0))",
        ),
        (b"\xff\xfe", "request", "must be valid UTF-8, got byte 0xff at offset 0"),
    ],
)
def test_msgspec_errors_are_translated(body: bytes, field: str, reason: str):
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(body)
    assert (caught.value.field, caught.value.reason) == (field, reason)
    assert str(caught.value) == f"{field} {reason}"


def test_the_same_errors_on_the_unknown_field_path():
    # An unknown key first sends the document down the capturing path.
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(b'{"new":1,"id":"r","imp":[{"id":"1","banner":{"w":"wide"}}]}')
    assert str(caught.value) == "request.imp[0].banner.w must be an integer, got a string"
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(b'{"new":1,"id":"r","imp":[{"id":"1","banner":{"h":-2}}]}')
    assert str(caught.value) == "request.imp[0].banner.h must be >= 0, got -2"
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(b'{"new":1,"id":"r","imp":[{"id":"1","banner":{}}],')
    assert str(caught.value) == "request is not valid JSON (input data was truncated)"


def test_native_documents_are_rooted_at_native():
    with pytest.raises(InvalidBidRequest) as caught:
        decode_native_request(b'{"assets":[{"id":1,"title":{"len":-1}}]}')
    assert str(caught.value) == "native.assets[0].title.len must be >= 0, got -1"
    with pytest.raises(InvalidBidResponse) as caught:
        decode_native_response(b'{"assets":[{"id":1,"title":{"text":"t"}}]}')
    assert str(caught.value) == "native.link is required"
    with pytest.raises(InvalidBidResponse) as caught:
        decode_native_response(b'{"link":{"url":"u"}}')
    assert str(caught.value) == "native.assets is required unless assetsurl or dcourl is given"


def test_native_1_0_wrapper_is_unwrapped():
    native = decode_native_response(
        b'{"native":{"ver":"1.0","link":{"url":"u"},"assets":[{"id":1,"data":{"value":"v"}}]}}'
    )
    assert native.assets[0].data.value == "v"


def test_long_values_are_cut_short_in_messages():
    body = b'{"id":"r","imp":[{"id":"1","banner":{}}],"cur":["' + b"X" * 500 + b'"]}'
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(body)
    assert len(str(caught.value)) < 200
    assert str(caught.value).endswith('..."') is False
    assert str(caught.value).endswith("...")


def test_errors_beside_unknown_keys_name_the_right_field():
    # imp[0] has an unknown key; imp[1] a type error the capturing path must still report.
    body = (
        b'{"id":"r","imp":[{"id":"1","banner":{"w":1,"h":1,"new":{}}},'
        b'{"id":"2","banner":{"w":"x"}}]}'
    )
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(body)
    assert str(caught.value) == "request.imp[1].banner.w must be an integer, got a string"


def test_nesting_inside_a_nested_unknown_member_names_it():
    deep = b"[" * 40 + b"]" * 40
    body = b'{"id":"r","imp":[{"id":"1","banner":{"w":1,"h":1,"odd":' + deep + b"}}]}"
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(body)
    # banner sits at depth 4 (request > imp > [0] > banner), leaving 28 of the default 32.
    assert str(caught.value) == "request.imp[0].banner.odd must not nest deeper than 28 levels"


def _deep(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "limits", "field"),
    [
        # An unknown member nested too deep, under a key a client chose.
        (
            {"id": "r", "imp": [{"id": "1", "banner": {}}], "x\n" + "y" * 3000: _deep(40)},
            None,
            'request["x\\n' + "y" * 73 + "...]",
        ),
        # A string too long, under such keys inside ext.
        (
            {"id": "r", "imp": [{"id": "1", "banner": {}}], "ext": {"a b": {"c.d": "z" * 90}}},
            Limits(max_string_chars=80),
            'request.ext["a b"]["c.d"]',
        ),
    ],
)
def test_keys_in_error_paths_are_quoted_and_cut_short(body, limits, field):
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(json.dumps(body).encode(), limits)
    assert caught.value.field == field


def test_a_key_that_is_not_utf8_is_quoted_in_the_path_too():
    body = b'{"id":"r","imp":[{"id":"1","banner":{}}],"ext":{"a\\nb":{"c":"\xe9"}}}'
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(body)
    assert caught.value.field == 'request.ext["a\\nb"].c'
