"""Bytes that are not UTF-8: refused with our error and a field path, never forwarded.

msgspec raises `UnicodeDecodeError` (not its own errors) for a string that is not UTF-8, and
passes such bytes through untouched inside a `Raw` value (`ext`, unknown members). Found by a
reviewer: a latin-1 byte turned a bid request into a 500 and one DSP's reply into a failed
auction.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.openrtb import (
    InvalidBidRequest,
    InvalidBidResponse,
    decode_bid_request,
    decode_bid_response,
    decode_native_request,
    decode_native_response,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "openrtb"
VALID = Path(__file__).parent / "fixtures" / "valid"
REQUEST = b'{"id":"r1","imp":[{"id":"1","banner":{"w":300,"h":250}}]'
RESPONSE = (
    b'{"id":"r1","seatbid":[{"bid":[{"id":"b1","impid":"1","price":1.5,"adm":"<b>\xe9</b>"}]}]}'
)


@pytest.mark.parametrize(
    ("tail", "error"),
    [
        (
            b',"ext":{"a":"caf\xe9"}}',
            "request.ext.a must be valid UTF-8, got byte 0xe9 at offset 72",
        ),
        (
            b',"future":["\xff"]}',
            "request.future[0] must be valid UTF-8, got byte 0xff at offset 68",
        ),
        (
            b',"ext":{"\xe9t\xe9":1}}',
            "request.ext must have UTF-8 keys, got byte 0xe9 at offset 65",
        ),
        (b',"ext":\xe9}', "request must be valid UTF-8, got byte 0xe9 at offset 63"),
        # Three ways of being bad at once: the first bad byte is reported, path and all.
        (
            b',"cur":["US\xc3"],"ext":{"a":"\xe9"}}',
            "request.cur[0] must be valid UTF-8, got byte 0xc3 at offset 67",
        ),
    ],
)
def test_a_request_with_bytes_that_are_not_utf8_is_refused_naming_the_field(tail, error):
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(REQUEST + tail)
    assert str(caught.value) == error


def test_bytes_that_are_not_utf8_beside_another_error_still_give_our_error():
    # The typed pass fails on `w`, and its error message looks the value up in the document.
    body = b'{"id":"r1","imp":[{"id":"1","banner":{"w":-3}}],"ext":{"a":"\xe9"}}'
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(body)
    assert str(caught.value) == "request.ext.a must be valid UTF-8, got byte 0xe9 at offset 60"


def test_a_response_with_latin1_markup_is_an_invalid_response():
    with pytest.raises(InvalidBidResponse) as caught:
        decode_bid_response(RESPONSE)
    assert str(caught.value) == (
        "response.seatbid[0].bid[0].adm must be valid UTF-8, got byte 0xe9 at offset 75"
    )


def test_native_documents_with_bad_bytes_or_lone_surrogates_give_our_errors():
    with pytest.raises(InvalidBidRequest) as caught:
        decode_native_request(b'{"assets":[{"id":1,"title":{"len":9}}],"ext":"\xe9"}')
    assert str(caught.value) == "native.ext must be valid UTF-8, got byte 0xe9 at offset 46"
    with pytest.raises(InvalidBidResponse) as caught:
        decode_native_response('{"link":{"url":"\udce9"},"assetsurl":"u"}')
    assert str(caught.value) == "native.link.url must be valid UTF-8, got byte 0xed at offset 16"


def test_valid_utf8_and_escapes_still_pass_through_byte_for_byte():
    body = REQUEST + ',"ext":{"a":"caf\u00e9 \u4e2d \\u00e9 \U0001f600"}}'.encode()
    assert (
        bytes(decode_bid_request(body).ext)
        == '{"a":"caf\u00e9 \u4e2d \\u00e9 \U0001f600"}'.encode()
    )


EXAMPLES = [p.read_bytes() for p in sorted((SHARED / "2.6/bid-request").glob("*.json"))]
EXAMPLES += [
    json.dumps(json.loads(p.read_bytes())["request"]).encode() for p in sorted(VALID.glob("*.json"))
]
RESPONSES = [p.read_bytes() for p in sorted((SHARED / "2.6/bid-response").glob("*.json"))]
BAD_SEQUENCES = st.sampled_from(
    [b"\xe9", b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"]
)


@settings(max_examples=300)
@given(st.sampled_from(EXAMPLES + RESPONSES), st.data(), BAD_SEQUENCES)
def test_a_bad_byte_anywhere_in_a_real_document_gives_only_our_errors(document, data, bad):
    # Mostly inside strings (values, keys, ext, unknown members), where msgspec's own
    # checks do not reach or raise a bare UnicodeDecodeError.
    quotes = [i + 1 for i, byte in enumerate(document) if byte == ord('"')]
    at = data.draw(st.sampled_from(quotes) if quotes else st.just(0))
    body = document[:at] + bad + document[at:]
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(body)
    assert "UTF-8" in caught.value.reason or "JSON" in caught.value.reason
    with pytest.raises(InvalidBidResponse):
        decode_bid_response(body)
    for decode, error in (
        (decode_native_request, InvalidBidRequest),
        (decode_native_response, InvalidBidResponse),
    ):
        with contextlib.suppress(error):
            decode(body)


def test_msgspec_still_does_not_check_raw_values():
    # Why the codec checks the whole body: if msgspec ever validates Raw, this tells us.
    raw = msgspec.json.decode(b'{"ext":{"a":"\xe9"}}', type=dict[str, msgspec.Raw])
    assert bytes(raw["ext"]) == b'{"a":"\xe9"}'


def _decode_at_stack_depth(frames: int, body: bytes) -> None:
    if frames:
        _decode_at_stack_depth(frames - 1, body)
        return
    decode_bid_request(body)


def test_a_bad_byte_deep_near_the_stack_limit_is_our_error_not_a_recursion_error():
    # Found by a reviewer: at some stack depths the UTF-8 error path ran out of stack -> 500.
    for depth in range(940, 1000):
        inner = b'"\xe9"'
        for _ in range(depth):
            inner = b"[" + inner + b"]"
        body = REQUEST + b',"ext":{"x":' + inner + b"}}"
        for frames in range(12):
            with pytest.raises(InvalidBidRequest):
                _decode_at_stack_depth(frames, body)
