"""Lenient decoding: what is repaired, what is refused, and that consent is never loosened.

`fixtures/repaired/*.json`: a request in, the status, the exact warnings and the repaired
request out (Prebid Server's fixture pattern). `fixtures/repaired-response/*.json`: a DSP's
reply and its request in, the exact faults and the bids kept out. Every `fixtures/invalid`
case is also run through the lenient decoder: either refused with the very same error, or
repaired with that error among its warnings (so the two tables cannot drift apart).
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.openrtb import (
    InvalidBidRequest,
    InvalidBidResponse,
    Limits,
    decode_bid_request,
    encode,
)
from openbid.openrtb.repair import (
    MAX_REPAIRS,
    NO_REPAIRS,
    decode_bid_request_lenient,
    decode_bid_response_lenient,
)
from openbid.privacy.consent import ConsentContext, redaction_for

FIXTURES = Path(__file__).parent / "fixtures"
REPAIRED = sorted((FIXTURES / "repaired").glob("*.json"))
REPAIRED_RESPONSES = sorted((FIXTURES / "repaired-response").glob("*.json"))
INVALID = sorted((FIXTURES / "invalid").glob("*.json"))
VALID = sorted((FIXTURES / "valid").glob("*.json"))


def _body(case: dict) -> bytes:
    if "request_body" in case:
        return case["request_body"].encode()
    if "request_body_latin1" in case:
        return case["request_body_latin1"].encode("latin-1")
    return json.dumps(case["request"], separators=(",", ":")).encode()


def test_there_are_enough_repaired_cases():
    assert len(REPAIRED) >= 20 and len(REPAIRED_RESPONSES) >= 5


@pytest.mark.parametrize("path", REPAIRED, ids=[p.stem for p in REPAIRED])
def test_repaired_request_gives_the_exact_warnings_and_request(path: Path):
    case = json.loads(path.read_text())
    body = _body(case)
    with pytest.raises(InvalidBidRequest):  # the strict decoder refuses it
        decode_bid_request(body)
    request, repairs = decode_bid_request_lenient(body)
    assert case["expected_status"] == 200
    assert [str(repair) for repair in repairs] == case["expected_warnings"], case["description"]
    assert json.loads(encode(request)) == case["expected_request"]
    decode_bid_request(encode(request))  # what we forward passes the strict rules


@pytest.mark.parametrize("path", REPAIRED_RESPONSES, ids=[p.stem for p in REPAIRED_RESPONSES])
def test_repaired_response_gives_the_exact_faults_and_bids(path: Path):
    case = json.loads(path.read_text())
    request = decode_bid_request(json.dumps(case["request"]).encode())
    response, faults = decode_bid_response_lenient(json.dumps(case["response"]).encode(), request)
    assert [str(fault) for fault in faults] == case["expected_faults"], case["description"]
    assert [fault.kind for fault in faults] == case["expected_kinds"]
    assert json.loads(encode(response)) == case["expected_response"]


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_every_invalid_case_is_refused_alike_or_repaired_naming_that_fault(path: Path):
    case = json.loads(path.read_text())
    limits = Limits(**case.get("limits", {}))
    try:
        request, repairs = decode_bid_request_lenient(_body(case), limits)
    except InvalidBidRequest as refused:
        assert str(refused) == case["expected_error"]
        return
    assert case["expected_error"] in [f"{r.field} {r.reason}" for r in repairs]
    decode_bid_request(encode(request), limits)


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_a_clean_request_has_no_repairs_and_allocates_none(path: Path):
    request, repairs = decode_bid_request_lenient(_body(json.loads(path.read_text())))
    assert repairs is NO_REPAIRS


@pytest.mark.parametrize(
    ("request_json", "error"),
    [
        ({"id": "r", "imp": [{"id": "1", "native": {"request": "{"}}]}, "request.imp[0].native"),
        ({"id": "r", "imp": [{"id": "1", "banner": {}}], "site": {}, "app": {}}, "request must"),
        (
            {"id": "r", "imp": [{"id": "1", "banner": {}}, {"id": "1", "banner": {}}]},
            "request.imp[1].id must be unique",
        ),
        ({"id": "r", "imp": [{"id": "1", "video": {"w": 640}}]}, "request.imp[0].video.mimes"),
        ({"id": "r", "imp": [{"id": "1"}]}, "request.imp[0] must have at least one of"),
        (
            {"id": "r", "imp": [{"id": "1", "banner": {}, "bidfloorcur": "dollars"}]},
            "request.imp[0].bidfloorcur must",
        ),
        (
            {"id": "r", "imp": [{"id": "1", "banner": {}, "bidfloor": "0.5"}]},
            "request.imp[0].bidfloor must be a number",
        ),
        ({"id": "r", "imp": []}, "request.imp must have at least one item"),
        ({"imp": [{"id": "1", "banner": {}}]}, "request.id is required"),
    ],
    ids=[
        "only imp native broken",
        "site and app",
        "duplicate imp ids",
        "video without mimes",
        "imp sent without media",
        "floor currency unknown",
        "floor as a string",
        "no imp",
        "no id",
    ],
)
def test_what_the_table_refuses_stays_refused_with_its_field(request_json, error):
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request_lenient(json.dumps(request_json).encode())
    assert str(caught.value).startswith(error)


def test_a_request_with_too_many_faults_is_refused():
    imp = {"id": "1", "banner": {"battr": list(range(100, 100 + MAX_REPAIRS + 1))}}
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request_lenient(json.dumps({"id": "r", "imp": [imp]}).encode())
    assert caught.value.field == "request"
    assert "too many faults" in caught.value.reason


def test_duplicate_keys_count_towards_the_fault_limit():
    # Each would be a warning in the response: 10,000 of them made a 60 KB request answer
    # 1.3 MB of ext.warnings.
    def body(duplicates: int) -> bytes:
        members = ",".join([f'"k{i}":1,"k{i}":2' for i in range(duplicates)])
        return b'{"id":"r","imp":[{"id":"1","banner":{},"ext":{%s}}]}' % members.encode()

    _, repairs = decode_bid_request_lenient(body(MAX_REPAIRS))
    assert len(repairs) == MAX_REPAIRS
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request_lenient(body(MAX_REPAIRS + 1))
    assert str(caught.value) == f"request has too many faults to repair (more than {MAX_REPAIRS})"


def test_duplicate_keys_and_other_faults_together_stay_within_the_fault_limit():
    members = ",".join([f'"k{i}":1,"k{i}":2' for i in range(MAX_REPAIRS - 1)])
    battr = list(range(100, 102))  # two more faults: one over the limit
    body = b'{"id":"r","imp":[{"id":"1","banner":{"battr":%s},"ext":{%s}}]}' % (
        json.dumps(battr).encode(),
        members.encode(),
    )
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request_lenient(body)
    assert "too many faults" in caught.value.reason


def test_dropped_imps_keep_the_paths_the_sender_used():
    imps = [
        {"id": "a", "native": {"request": "not json"}},
        {"id": "b", "banner": {"format": [{"w": 300, "h": 250}]}, "native": {"request": "[]"}},
    ]
    request, repairs = decode_bid_request_lenient(json.dumps({"id": "r", "imp": imps}).encode())
    assert [imp.id for imp in request.imp] == ["b"]
    assert [r.field for r in repairs] == [
        "request.imp[0].native.request",
        "request.imp[0]",
        "request.imp[1].native.request",  # found once imp[0] was gone: as sent, not imp[0]
    ]


# --- consent: never repaired into more permission


def _consent(body: dict):
    request, repairs = decode_bid_request_lenient(json.dumps(body).encode())
    return ConsentContext.from_request(request), repairs


BASE = {"id": "r", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}


def test_a_malformed_tc_string_means_no_consent_not_full_consent():
    consent, _ = _consent({**BASE, "regs": {"gdpr": 1}, "user": {"consent": "not-a-tc-string"}})
    assert "tcf" in consent.unreadable
    assert redaction_for(consent, vendor_id=32).block


def test_a_malformed_tc_string_without_a_gdpr_flag_still_blocks():
    consent, _ = _consent({**BASE, "user": {"consent": "CO###garbage"}})
    assert consent.gdpr_applies and redaction_for(consent, vendor_id=32).block


def test_malformed_us_privacy_and_gpp_strings_are_read_as_opted_out():
    consent, _ = _consent({**BASE, "regs": {"us_privacy": "1Z!!", "gpp": "DBABMA~broken"}})
    redaction = redaction_for(consent, vendor_id=None)
    assert redaction.strip_user_ids and redaction.truncate_ip


@pytest.mark.parametrize(
    ("regs", "device"),
    [({"gdpr": 2}, {}), ({"coppa": -1}, {}), ({}, {"lmt": 7}), ({}, {"dnt": 3})],
)
def test_privacy_flags_out_of_range_are_repaired_to_the_stricter_reading(regs, device):
    consent, repairs = _consent({**BASE, "regs": regs, "device": {"ip": "192.0.2.1", **device}})
    assert [r.action for r in repairs] == ["set to 1"]
    strict = ConsentContext.from_request(
        decode_bid_request(
            json.dumps(
                {
                    **BASE,
                    "regs": dict.fromkeys(regs, 1),
                    "device": {"ip": "192.0.2.1", **dict.fromkeys(device, 1)},
                }
            ).encode()
        )
    )
    assert redaction_for(consent, 32) == redaction_for(strict, 32)


def test_a_consent_key_given_twice_with_different_values_is_refused():
    body = b'{"id":"r","imp":[{"id":"1","banner":{}}],"regs":{"gdpr":1,"gdpr":0}}'
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request_lenient(body)
    assert caught.value.field == "request.regs.gdpr"
    body = b'{"id":"r","imp":[{"id":"1","banner":{}}],"user":{"consent":"A","consent":"B"}}'
    with pytest.raises(InvalidBidRequest):
        decode_bid_request_lenient(body)


@pytest.mark.parametrize(
    "body",
    [
        b'"user":{"consent":"STRICT"},"user":{"consent":"LOOSE"}',
        b'"user":{"ext":{"consent":"STRICT"}},"user":{"ext":{"consent":"LOOSE"}}',
        b'"user":{"id":"u","consent":"STRICT"},"user":{"id":"u"}',
        b'"device":{"ip":"192.0.2.1","dnt":1},"device":{"ip":"192.0.2.1","dnt":0}',
        b'"device":{"lmt":1},"device":{}',
    ],
)
def test_an_object_holding_consent_given_twice_with_different_consent_is_refused(body):
    # The last `user` object kept would silently replace the consent of the first.
    document = b'{"id":"r","imp":[{"id":"1","banner":{}}],"regs":{"gdpr":1},%s}' % body
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request_lenient(document)
    assert "a consent signal" in caught.value.reason
    assert caught.value.field in ("request.user", "request.device")


def test_an_object_given_twice_with_the_same_consent_keeps_its_last_value():
    body = b'{"id":"r","imp":[{"id":"1","banner":{}}],"user":{"id":"a","consent":"C"},'
    body += b'"user":{"id":"b","consent":"C"}}'
    request, repairs = decode_bid_request_lenient(body)
    assert (request.user.id, request.user.consent) == ("b", "C")
    assert [r.field for r in repairs] == ["request.user"]


def test_gpp_section_ids_out_of_range_are_refused_not_repaired():
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request_lenient(json.dumps({**BASE, "regs": {"gpp_sid": [0]}}).encode())
    assert caught.value.field == "request.regs.gpp_sid[0]"


# --- section 8 of issue 13


def test_a_required_field_sent_as_null_is_reported_as_missing():
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(b'{"id":"r","imp":null}')
    assert str(caught.value) == "request.imp is required"


def test_a_duplicate_key_is_repaired_with_a_warning_not_silently():
    body = b'{"id":"r","imp":[{"id":"1","banner":{},"ext":{"gpid":"a","gpid":"b"}}]}'
    request, repairs = decode_bid_request_lenient(body)
    assert bytes(request.imp[0].ext) == b'{"gpid":"b"}'  # forwarded with one value only
    assert [str(r) for r in repairs] == [
        "request.imp[0].ext.gpid must not be given twice in one object (a duplicate key): "
        "the last value kept"
    ]


def test_a_duplicate_key_spelled_with_an_escape_is_found():
    body = b'{"id":"r","imp":[{"id":"1","banner":{}}],"ext":{"a":1,"\\u0061":2}}'
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(body)
    assert caught.value.field == "request.ext.a"


def test_a_duplicate_key_in_a_native_request_is_repaired_inside_the_string():
    native = json.dumps('{"assets":[{"id":1,"title":{"len":9},"required":1,"required":1}]}')
    body = f'{{"id":"r","imp":[{{"id":"1","native":{{"request":{native}}}}}]}}'.encode()
    request, repairs = decode_bid_request_lenient(body)
    assert request.imp[0].native.request.count('"required"') == 1
    assert repairs[0].kind == "duplicate_key"


# --- responses


REQUEST = decode_bid_request(b'{"id":"auc","imp":[{"id":"1","banner":{}}],"cur":["USD"]}')


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":"other","seatbid":[{"bid":[{"id":"b","impid":"1","price":1,"adm":"x"}]}]}',
        b'{"id":"auc","cur":"EUR","seatbid":[{"bid":[{"id":"b","impid":"1","price":1,"adm":"x"}]}]}',
        b'{"id":"auc","seatbid":[{"bid":[{"id":"b","impid":"9","price":1,"adm":"x"}]}]}',
        b"not json",
    ],
    ids=["id mismatch", "currency not requested", "only bid unknown imp", "not json"],
)
def test_a_reply_that_cannot_be_trusted_is_still_refused(body):
    with pytest.raises(InvalidBidResponse):
        decode_bid_response_lenient(body, REQUEST)


def test_a_missing_response_id_is_refused_without_a_request_to_pair_it_with():
    with pytest.raises(InvalidBidResponse):
        decode_bid_response_lenient(b'{"seatbid":[{"bid":[{"id":"b","impid":"1","price":1}]}]}')


# --- properties


_MUTATIONS = st.sampled_from(
    [
        ("device", {"ip": "300.1.1.1", "ipv6": "zz::", "geo": {"lat": 99, "lon": -500}}),
        ("test", 3),
        ("tmax", -1),
        ("cur", ["usd", "??"]),
        ("at", 9),
        ("source", {"schain": {"complete": 5, "ver": "", "nodes": []}}),
        ("regs", {"gdpr": 4, "coppa": True}),
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    mutations=st.lists(_MUTATIONS, max_size=5),
    native=st.sampled_from(["{", "[]", '{"assets":[]}', '{"assets":[{"title":{"len":5}}]}']),
    banner=st.booleans(),
)
def test_lenient_decoding_gives_a_strictly_valid_request_or_our_error(mutations, native, banner):
    imp: dict = {"id": "1", "native": {"request": native}}
    if banner:
        imp["banner"] = {"format": [{"w": 0, "h": 250}, {"w": 300, "h": 250}]}
    body = {
        "id": "r",
        "imp": [
            imp,
            {"id": "2", "video": {"mimes": ["video/mp4"], "maxduration": 1, "minduration": 9}},
        ],
    }
    body.update(dict(mutations))
    try:
        request, repairs = decode_bid_request_lenient(msgspec.json.encode(body))
    except InvalidBidRequest:
        return
    assert repairs
    again, more = decode_bid_request_lenient(encode(request))
    assert more is NO_REPAIRS and again == request


# --- the real-world corpus (bench/acceptance.py sends it over HTTP)

CORPUS = [
    json.loads(line)
    for line in (Path(__file__).parent / "corpus" / "real-world.jsonl").read_text().splitlines()
]


@pytest.mark.parametrize("case", CORPUS, ids=[case["name"] for case in CORPUS])
def test_the_corpus_is_accepted_unless_the_reference_refuses_it_too(case):
    body = _body(case)
    if case["reference"] == "accepted":
        decode_bid_request_lenient(body)
    else:
        with pytest.raises(InvalidBidRequest):
            decode_bid_request_lenient(body)
