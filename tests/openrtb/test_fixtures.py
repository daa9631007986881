"""Table-driven tests from JSON fixtures, in the style of Prebid Server's sample-requests.

`fixtures/invalid/*.json`: a request (or a raw `request_body`, or `request_body_latin1` whose
characters are the body's bytes, for bytes that are not UTF-8), optional `limits`, and the
exact error and HTTP status expected. `fixtures/valid/*.json`: requests that must decode,
validate and re-encode to the same JSON value. `fixtures/invalid-response/*.json`: a bid
response (and the request it answers, if any) with the exact error expected.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openbid.openrtb import (
    InvalidBidRequest,
    InvalidBidResponse,
    Limits,
    RequestTooLarge,
    decode_bid_request,
    decode_bid_response,
    encode,
)

FIXTURES = Path(__file__).parent / "fixtures"
INVALID = sorted((FIXTURES / "invalid").glob("*.json"))
VALID = sorted((FIXTURES / "valid").glob("*.json"))


def _body(case: dict) -> bytes:
    if "request_body" in case:
        return case["request_body"].encode()
    if "request_body_latin1" in case:
        return case["request_body_latin1"].encode("latin-1")
    return json.dumps(case["request"], separators=(",", ":")).encode()


def test_there_are_enough_invalid_cases():
    assert len(INVALID) >= 60


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_request_is_refused_with_the_exact_error(path: Path):
    case = json.loads(path.read_text())
    limits = Limits(**case.get("limits", {}))
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(_body(case), limits)
    assert str(caught.value) == case["expected_error"], case["description"]
    status = 413 if isinstance(caught.value, RequestTooLarge) else 400
    assert status == case["expected_status"]
    assert str(caught.value).startswith(caught.value.field + " ")


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_request_round_trips(path: Path):
    case = json.loads(path.read_text())
    body = _body(case)
    request = decode_bid_request(body, Limits(**case.get("limits", {})))
    assert json.loads(encode(request)) == json.loads(body), case["description"]


INVALID_RESPONSES = sorted((FIXTURES / "invalid-response").glob("*.json"))


@pytest.mark.parametrize("path", INVALID_RESPONSES, ids=[p.stem for p in INVALID_RESPONSES])
def test_invalid_response_is_refused_with_the_exact_error(path: Path):
    case = json.loads(path.read_text())
    request = None
    if "request" in case:
        request = decode_bid_request(json.dumps(case["request"]).encode())
    if "response_body" in case:
        body = case["response_body"].encode()
    elif "response_body_latin1" in case:
        body = case["response_body_latin1"].encode("latin-1")
    else:
        body = json.dumps(case["response"], separators=(",", ":")).encode()
    with pytest.raises(InvalidBidResponse) as caught:
        decode_bid_response(body, request)
    assert str(caught.value) == case["expected_error"], case["description"]
