"""Unknown fields are ignored for validation and never lost when a request is forwarded."""

from __future__ import annotations

import json

import msgspec
import pytest

from openbid.openrtb import (
    Banner,
    BidRequest,
    Imp,
    InvalidBidRequest,
    decode_bid_request,
    decode_bid_response,
    encode,
    unknown_fields,
)

BODY = {
    "id": "r1",
    "imp": [
        {"id": "1", "banner": {"w": 300, "h": 250, "wmax": 320}, "future": {"k": [1, 2]}},
        {"id": "2", "video": {"mimes": ["video/mp4"], "newvideokey": "v"}},
        {"id": "3", "banner": {"format": [{"w": 728, "h": 90, "density": 2}]}},
    ],
    "site": {"page": "https://example.org/", "publisher": {"id": "p", "tier": "gold"}},
    "newtop": True,
    "ext": {"prebid": {"debug": True}},
}


def _decode(body: dict = BODY) -> BidRequest:
    return decode_bid_request(json.dumps(body).encode())


def test_unknown_keys_are_captured_on_the_object_that_had_them():
    request = _decode()
    assert unknown_fields(request) == {"newtop": True}
    assert unknown_fields(request.imp[0]) == {"future": {"k": [1, 2]}}
    assert unknown_fields(request.imp[0].banner) == {"wmax": 320}
    assert unknown_fields(request.imp[1].video) == {"newvideokey": "v"}
    assert unknown_fields(request.imp[2].banner.format[0]) == {"density": 2}
    assert unknown_fields(request.site.publisher) == {"tier": "gold"}
    assert unknown_fields(request.site) == {}
    assert json.loads(encode(request)) == BODY


def test_unknown_keys_follow_their_objects_through_modifications():
    request = _decode()
    # What the exchange does before forwarding: drop an imp, reorder, replace fields.
    kept = [request.imp[2], request.imp[0]]
    kept[1] = msgspec.structs.replace(kept[1], bidfloor=1.5)
    forwarded = msgspec.structs.replace(request, imp=kept, tmax=300)
    out = json.loads(encode(forwarded))
    assert out["newtop"] is True and out["tmax"] == 300
    assert [imp["id"] for imp in out["imp"]] == ["3", "1"]
    assert out["imp"][0]["banner"]["format"][0]["density"] == 2
    assert out["imp"][1]["future"] == {"k": [1, 2]}
    assert out["imp"][1]["bidfloor"] == 1.5
    assert out["imp"][1]["banner"]["wmax"] == 320
    assert out["ext"] == {"prebid": {"debug": True}}


def test_unknown_keys_can_be_dropped_before_forwarding():
    request = _decode()
    scrubbed = msgspec.structs.replace(request, _unknown=None)
    out = json.loads(encode(scrubbed))
    assert "newtop" not in out
    assert out["imp"][0]["future"] == {"k": [1, 2]}


def test_encoding_a_request_without_unknowns_is_plain_msgspec():
    request = BidRequest(id="r", imp=[Imp(id="1", banner=Banner(w=1, h=2))], tmax=100)
    assert encode(request) == msgspec.json.encode(request)
    assert encode(request) == b'{"id":"r","imp":[{"id":"1","banner":{"w":1,"h":2}}],"tmax":100}'


def test_an_object_with_only_unknown_keys_encodes_as_valid_json():
    request = decode_bid_request(b'{"id":"r","imp":[{"id":"1","banner":{"new":1}}]}')
    assert encode(request) == b'{"id":"r","imp":[{"id":"1","banner":{"new":1}}]}'


def test_ext_is_passed_through_byte_for_byte():
    body = b'{"id":"r","imp":[{"id":"1","banner":{}}],"ext":{ "a" :  [1.50, "x\\u00e9"] }}'
    request = decode_bid_request(body)
    assert bytes(request.ext) == b'{ "a" :  [1.50, "x\\u00e9"] }'
    assert encode(request).endswith(b',"ext":{ "a" :  [1.50, "x\\u00e9"] }}')


def test_responses_keep_unknown_fields_too():
    body = b'{"id":"r","seatbid":[{"bid":[{"id":"b","impid":"1","price":1,"nurl":"u","x":1}]}]}'
    response = decode_bid_response(body)
    assert unknown_fields(response.seatbid[0].bid[0]) == {"x": 1}
    assert json.loads(encode(response)) == json.loads(body)


def test_explicit_null_of_an_optional_field_means_absent():
    request = decode_bid_request(b'{"id":"r","imp":[{"id":"1","banner":{}}],"site":null}')
    assert request.site is None
    assert encode(request) == b'{"id":"r","imp":[{"id":"1","banner":{}}]}'


def test_a_duplicate_key_is_refused_by_the_strict_decoder_naming_it():
    # It used to be accepted silently (last value kept): a partner reading the first value
    # of a key forwarded as received would see another request than we did.
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(b'{"id":"a","imp":[{"id":"1","banner":{},"ext":{"k":1,"k":2}}]}')
    assert str(caught.value) == (
        "request.imp[0].ext.k must not be given twice in one object (a duplicate key)"
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":"r","imp":[{"id":"1","banner":{}}],"__openbid_unknown__":null}',
        b'{"id":"r","imp":[{"id":"1","banner":{}}],"ext":{"__openbid_unknown__":1}}',
        b'{"id":"r","imp":[{"id":"1","banner":{"__openbid\\u005funknown__":1}}]}',
        b'{"id":"r","imp":[{"id":"1","banner":{},"x":1,"__openbid\\u005funknown__":[]}]}',
    ],
)
def test_the_reserved_name_is_refused_in_any_spelling(body: bytes):
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(body)
    assert caught.value.field == "request"
    assert caught.value.reason == "must not contain the reserved name __openbid_unknown__"


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":"r","imp":[{"id":"1","banner":{}}],"ext":{"__openbid\\u005funknown__":1}}',
        b'{"id":"r","imp":[{"id":"1","banner":{},"x":{"__openbid\\u005funknown__":1}}]}',
    ],
)
def test_an_escaped_reserved_name_inside_ext_or_unknown_values_passes_through(body: bytes):
    # Those bytes are kept as received, escapes included, so they cannot be mistaken for
    # the marker when encoding.
    request = decode_bid_request(body)
    assert encode(request) == body


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":"r","imp":[{"id":"1","banner":{}}],"regs":{"gpp":"__openbid_unknown__"}}',
        b'{"id":"r","imp":[{"id":"1","banner":{}}],"ext":{"k":"\\"__openbid_unknown__\\":"}}',
        b'{"id":"r","imp":[{"id":"1","banner":{}}],"x":["__openbid_unknown__"]}',
    ],
)
def test_the_reserved_name_as_a_string_value_is_an_ordinary_string(body: bytes):
    # Found by hypothesis in CI: a consent string spelling the name was refused.
    assert encode(decode_bid_request(body)) == body


def test_a_key_holding_the_marker_bytes_is_refused_even_inside_ext():
    # The key `a"__openbid_unknown__` carries the marker's exact bytes; kept as received in
    # `ext`, it would be spliced out by `encode`, so it is refused.
    body = b'{"id":"r","imp":[{"id":"1","banner":{}}],"ext":{"a\\"__openbid_unknown__":1}}'
    with pytest.raises(InvalidBidRequest, match="reserved name"):
        decode_bid_request(body)
