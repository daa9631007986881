"""Property tests: whatever the bytes, the decoders raise only our error types, and whatever
decodes re-encodes to something that decodes to the same objects."""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openbid.openrtb import (
    InvalidBidRequest,
    InvalidBidResponse,
    Limits,
    OpenRTBError,
    decode_bid_request,
    decode_bid_response,
    decode_native_request,
    decode_native_response,
    encode,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "openrtb"
REQUESTS = [json.loads(p.read_bytes()) for p in sorted((SHARED / "2.6/bid-request").glob("*.json"))]
REQUESTS += [
    json.loads(p.read_bytes())["request"]
    for p in sorted((Path(__file__).parent / "fixtures" / "valid").glob("*.json"))
]
RESPONSES = [
    json.loads(p.read_bytes()) for p in sorted((SHARED / "2.6/bid-response").glob("*.json"))
]
LIMITS = Limits(max_string_chars=2000)  # low enough that the string scan runs too
PROPERTY = settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _decode_request_or_our_error(body: bytes) -> None:
    try:
        request = decode_bid_request(body, LIMITS)
    except InvalidBidRequest as err:
        assert str(err).startswith(err.field + " ")
        assert err.field.startswith("request")
        return
    again = decode_bid_request(encode(request), LIMITS)
    assert again == request
    assert encode(again) == encode(request)


@PROPERTY
@given(st.binary(max_size=400))
def test_any_bytes(body: bytes):
    _decode_request_or_our_error(body)
    for decode, error in (
        (decode_bid_response, InvalidBidResponse),
        (decode_native_request, InvalidBidRequest),
        (decode_native_response, InvalidBidResponse),
    ):
        with contextlib.suppress(error):
            decode(body)


@PROPERTY
@given(json_values)
def test_any_json(value):
    body = json.dumps(value).encode()
    _decode_request_or_our_error(body)
    try:
        decode_bid_response(body)
    except OpenRTBError as err:
        assert isinstance(err, InvalidBidResponse)


def _paths(value, prefix=()):
    """Every (container path) in a JSON tree, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _deep(levels: int):
    value: object = 0
    for _ in range(levels):
        value = {"d": [value]}
    return value


MUTATIONS = st.sampled_from(
    ["delete", "replace", "negate", "huge_string", "deep", "unknown_key", "wrong_container"]
)


@st.composite
def mutated(draw, examples):
    doc = copy.deepcopy(draw(st.sampled_from(examples)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        kind = draw(MUTATIONS)
        if not path:
            if kind == "unknown_key" and isinstance(doc, dict):
                doc[draw(st.text(max_size=6))] = draw(json_values)
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        current = parent[key]
        if kind == "delete":
            del parent[key]
        elif kind == "replace":
            parent[key] = draw(json_values)
        elif (
            kind == "negate" and isinstance(current, int | float) and not isinstance(current, bool)
        ):
            parent[key] = -current - 1
        elif kind == "huge_string":
            parent[key] = "x" * draw(st.sampled_from([100, 3000, 70_000]))
        elif kind == "deep":
            parent[key] = _deep(draw(st.integers(min_value=5, max_value=40)))
        elif kind == "unknown_key" and isinstance(current, dict):
            current[draw(st.text(max_size=6))] = draw(json_values)
        elif kind == "wrong_container":
            parent[key] = [current] if not isinstance(current, list) else {"0": current}
    return doc


@PROPERTY
@given(mutated(REQUESTS))
def test_mutated_requests(doc):
    _decode_request_or_our_error(json.dumps(doc).encode())


@PROPERTY
@given(mutated(RESPONSES))
def test_mutated_responses(doc):
    body = json.dumps(doc).encode()
    try:
        response = decode_bid_response(body)
    except InvalidBidResponse as err:
        assert err.field.startswith("response")
        return
    assert decode_bid_response(encode(response)) == response
