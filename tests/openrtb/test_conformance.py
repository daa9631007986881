"""Conformance with the specifications' own examples (read from ../shared/data/openrtb).

Every OpenRTB 2.6 bid request and response example and every Native 1.2 example decodes,
validates and re-encodes to the same JSON value: no field is lost or changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openbid.openrtb import (
    BidRequest,
    InvalidBidResponse,
    decode_bid_request,
    decode_bid_response,
    decode_native_request,
    decode_native_response,
    encode,
    unknown_fields,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "openrtb"
REQUESTS = sorted((SHARED / "2.6" / "bid-request").glob("*.json"))
RESPONSES = sorted((SHARED / "2.6" / "bid-response").glob("*.json"))
NATIVE_REQUESTS = sorted((SHARED / "native1.2").glob("request-*.json"))
NATIVE_RESPONSES = sorted((SHARED / "native1.2").glob("response-*.json"))


def test_the_shared_examples_are_there():
    assert (len(REQUESTS), len(RESPONSES), len(NATIVE_REQUESTS), len(NATIVE_RESPONSES)) == (
        5,
        4,
        3,
        3,
    ), f"expected the spec examples under {SHARED}"


def _compact(path: Path) -> bytes:
    return json.dumps(json.loads(path.read_bytes()), separators=(",", ":")).encode()


@pytest.mark.parametrize("path", REQUESTS, ids=[p.stem for p in REQUESTS])
def test_bid_request_example_round_trips(path: Path):
    for body in (path.read_bytes(), _compact(path)):
        request = decode_bid_request(body)
        assert isinstance(request, BidRequest)
        assert json.loads(encode(request)) == json.loads(body)
        # Everything in the examples is modelled: nothing went the unknown-field way.
        assert unknown_fields(request) == {}


@pytest.mark.parametrize("path", RESPONSES, ids=[p.stem for p in RESPONSES])
def test_bid_response_example_round_trips(path: Path):
    body = path.read_bytes()
    response = decode_bid_response(body)
    assert json.loads(encode(response)) == json.loads(body)


@pytest.mark.parametrize("path", RESPONSES, ids=[p.stem for p in RESPONSES])
def test_bid_response_example_answers_a_matching_request(path: Path):
    example = json.loads(path.read_bytes())
    imp_ids = {bid["impid"] for seat in example["seatbid"] for bid in seat["bid"]}
    request = decode_bid_request(
        json.dumps(
            {"id": example["id"], "imp": [{"id": i, "banner": {"w": 1, "h": 1}} for i in imp_ids]}
        ).encode()
    )
    assert decode_bid_response(path.read_bytes(), request).id == example["id"]
    other = decode_bid_request(b'{"id":"other","imp":[{"id":"x","banner":{}}]}')
    with pytest.raises(InvalidBidResponse, match=r"^response\.id must equal the request id"):
        decode_bid_response(path.read_bytes(), other)


@pytest.mark.parametrize("path", NATIVE_REQUESTS, ids=[p.stem for p in NATIVE_REQUESTS])
def test_native_request_example_round_trips(path: Path):
    body = path.read_bytes()
    native = decode_native_request(body)
    assert json.loads(encode(native)) == json.loads(body)
    assert decode_native_request(body.decode()) == native


@pytest.mark.parametrize("path", NATIVE_REQUESTS, ids=[p.stem for p in NATIVE_REQUESTS])
def test_native_request_example_inside_a_bid_request(path: Path):
    wrapped = {
        "id": "n1",
        "imp": [{"id": "1", "native": {"request": path.read_text(), "ver": "1.2"}}],
    }
    body = json.dumps(wrapped).encode()
    request = decode_bid_request(body)
    assert request.imp[0].native.request == path.read_text()
    assert json.loads(encode(request)) == wrapped


@pytest.mark.parametrize("path", NATIVE_RESPONSES, ids=[p.stem for p in NATIVE_RESPONSES])
def test_native_response_example_round_trips(path: Path):
    body = path.read_bytes()
    native = decode_native_response(body)
    assert json.loads(encode(native)) == json.loads(body)
    assert native.link.url
