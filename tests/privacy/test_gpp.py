"""US Privacy and GPP parsing: published examples, table tests, round trips, and malformed
input that only ever raises our own error."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.privacy import gpp, tcf, usprivacy
from openbid.privacy.bits import BASE64URL_ALPHABET, BitReader, BitWriter
from openbid.privacy.errors import InvalidGPPString, InvalidUSPrivacyString, PrivacyError

# The GPP specification's own examples: a TCF EU section alone, then with US Privacy.
SPEC_TCF_ONLY = "DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"
SPEC_TCF_AND_USP = "DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN"


@pytest.mark.parametrize(
    ("text", "notice", "sale", "lspa"),
    [
        ("1YNN", True, False, False),
        ("1YYN", True, True, False),
        ("1NYY", False, True, True),
        ("1---", None, None, None),
        ("1yyn", True, True, False),
    ],
)
def test_us_privacy_flags(text, notice, sale, lspa):
    parsed = usprivacy.parse(text)
    assert (parsed.notice_given, parsed.opted_out_of_sale, parsed.lspa_covered) == (
        notice,
        sale,
        lspa,
    )
    assert str(parsed) == text.upper()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "4 characters"),
        ("1YN", "4 characters"),
        ("1YNNN", "4 characters"),
        ("2YNN", "version '2' is not supported"),
        ("1YXN", "must each be Y, N or '-'"),
    ],
)
def test_malformed_us_privacy_strings(text, message):
    with pytest.raises(InvalidUSPrivacyString, match=message):
        usprivacy.parse(text)


def test_spec_example_with_the_tcf_eu_section_only():
    decoded = gpp.decode(SPEC_TCF_ONLY)
    assert decoded.version == 1
    assert decoded.section_ids == (2,)
    assert decoded.tcf_eu == tcf.decode(SPEC_TCF_ONLY.split("~")[1])
    assert decoded.usnat is None and decoded.us_privacy is None


def test_spec_example_with_tcf_eu_and_us_privacy():
    decoded = gpp.decode(SPEC_TCF_AND_USP)
    assert decoded.section_ids == (2, 6)
    assert decoded.sections[6] == "1YNN"
    assert decoded.us_privacy == usprivacy.parse("1YNN")
    assert decoded.tcf_eu is not None and decoded.tcf_eu.version == 2


def test_header_encoder_reproduces_the_spec_example_and_round_trips():
    sections = dict(zip((2, 6), SPEC_TCF_AND_USP.split("~")[1:], strict=True))
    assert gpp.encode({2: sections[2]}) == SPEC_TCF_ONLY
    # The spec writes this header in 6 characters; our encoder pads the 33 header bits to
    # whole bytes as the IAB's reference encoder does (7 characters): both decode the same.
    encoded = gpp.encode(sections)
    assert encoded.split("~", 1)[0].startswith("DBACNY")
    assert gpp.decode(encoded) == gpp.decode(SPEC_TCF_AND_USP)


def test_section_id_ranges_and_unknown_sections_are_kept_raw():
    # Sections 13, 14, 15 are a run: one range entry in the header, offsets Fibonacci-coded.
    text = gpp.encode({2: SPEC_TCF_ONLY.split("~")[1], 13: "BAAA", 14: "BBBB", 15: "BCCC"})
    decoded = gpp.decode(text)
    assert decoded.section_ids == (2, 13, 14, 15)
    assert decoded.sections[14] == "BBBB"
    assert decoded.usnat is None and decoded.us_states == ()
    assert {13, 14, 15} <= gpp.US_STATE_SECTIONS_UNDECODED


# The IAB reference encoder's (iabgpp-es) test strings for the US state sections: the
# fields it set, and the strings it wrote.
STATE_SPEC_EXAMPLES = [
    (
        8,
        "BVWSSSVY.YA",
        dict(
            sale_opt_out_notice=1,
            sharing_opt_out_notice=1,
            sensitive_data_limit_use_notice=1,
            sale_opt_out=1,
            sharing_opt_out=1,
            sensitive_data_processing=(2, 1, 0, 2, 1, 0, 2, 1, 0),
            known_child_sensitive_data_consents=(2, 1),
            personal_data_consents=1,
            mspa_covered_transaction=1,
            mspa_opt_out_option_mode=1,
            mspa_service_provider_mode=2,
            gpc=True,
        ),
    ),
    (8, "BAAAAABA.QA", dict(mspa_covered_transaction=1, gpc=False)),
    (
        9,
        "BVWSSVY",
        dict(
            sharing_notice=1,
            sale_opt_out_notice=1,
            targeted_advertising_opt_out_notice=1,
            sale_opt_out=1,
            targeted_advertising_opt_out=1,
            sensitive_data_processing=(2, 1, 0, 2, 1, 0, 2, 1),
            known_child_sensitive_data_consents=(1,),
            mspa_covered_transaction=1,
            mspa_opt_out_option_mode=1,
            mspa_service_provider_mode=2,
        ),
    ),
    (9, "BAAAABA", dict(mspa_covered_transaction=1)),
    (
        10,
        "BVWSSVg.YA",
        dict(
            sharing_notice=1,
            sale_opt_out_notice=1,
            targeted_advertising_opt_out_notice=1,
            sale_opt_out=1,
            targeted_advertising_opt_out=1,
            sensitive_data_processing=(2, 1, 0, 2, 1, 0, 2),
            known_child_sensitive_data_consents=(1,),
            mspa_covered_transaction=1,
            mspa_opt_out_option_mode=1,
            mspa_service_provider_mode=2,
            gpc=True,
        ),
    ),
    (10, "BAAAAEA.QA", dict(mspa_covered_transaction=1, gpc=False)),
    (
        11,
        "BVVkklWA",
        dict(
            sharing_notice=1,
            sale_opt_out_notice=1,
            targeted_advertising_opt_out_notice=1,
            sensitive_data_processing_opt_out_notice=1,
            sale_opt_out=1,
            targeted_advertising_opt_out=1,
            sensitive_data_processing=(2, 1, 0, 2, 1, 0, 2, 1),
            known_child_sensitive_data_consents=(1,),
            mspa_covered_transaction=1,
            mspa_opt_out_option_mode=1,
            mspa_service_provider_mode=2,
        ),
    ),
    (11, "BAAAAAQA", dict(mspa_covered_transaction=1)),
    (
        12,
        "BVWSSZFg.YA",
        dict(
            sharing_notice=1,
            sale_opt_out_notice=1,
            targeted_advertising_opt_out_notice=1,
            sale_opt_out=1,
            targeted_advertising_opt_out=1,
            sensitive_data_processing=(2, 1, 0, 2, 1, 0, 2, 1),
            known_child_sensitive_data_consents=(2, 1, 0),
            mspa_covered_transaction=1,
            mspa_opt_out_option_mode=1,
            mspa_service_provider_mode=2,
            gpc=True,
        ),
    ),
    (12, "BAAAAAEA.QA", dict(mspa_covered_transaction=1, gpc=False)),
]


@pytest.mark.parametrize(
    ("section_id", "text", "fields"),
    STATE_SPEC_EXAMPLES,
    ids=[f"{row[0]}:{row[1]}" for row in STATE_SPEC_EXAMPLES],
)
def test_us_state_sections_decode_and_encode_the_reference_examples(section_id, text, fields):
    expected = gpp.UsState(section_id, **fields)
    assert gpp.decode_us_state(section_id, text) == expected
    assert gpp.encode_us_state(expected) == text
    decoded = gpp.decode(gpp.encode({section_id: text}))
    assert decoded.us_states == (expected,)


def test_us_state_fields_a_state_does_not_have_stay_not_applicable():
    california = gpp.decode_us_state(gpp.SECTION_US_CALIFORNIA, "BVWSSSVY.YA")
    assert california.name == "usca"
    assert california.targeted_advertising_opt_out == gpp.NOT_APPLICABLE
    virginia = gpp.decode_us_state(gpp.SECTION_US_VIRGINIA, "BVWSSVY")
    assert virginia.sharing_opt_out == virginia.personal_data_consents == gpp.NOT_APPLICABLE
    assert virginia.gpc is None


@pytest.mark.parametrize(
    ("section_id", "fields", "opted_out", "known_child", "precise_geo_refused", "restricts"),
    [
        (8, {}, False, False, False, False),
        (8, {"sharing_opt_out": 1}, True, False, False, True),
        (8, {"sale_opt_out_notice": 2}, False, False, False, True),  # no notice: no choice
        (8, {"sensitive_data_processing": (0, 0, 1) + (0,) * 6}, False, False, True, False),
        (8, {"sensitive_data_limit_use_notice": 2}, False, False, True, False),
        (8, {"known_child_sensitive_data_consents": (0, 2)}, False, True, False, True),
        (9, {"targeted_advertising_opt_out": 1}, True, False, False, True),
        (9, {"sharing_notice": 2}, False, False, False, True),
        (9, {"sensitive_data_processing": (0,) * 7 + (1,)}, False, False, True, False),
        (9, {"sensitive_data_processing": (0,) * 7 + (2,)}, False, False, False, False),
        (9, {"known_child_sensitive_data_consents": (2,)}, False, True, False, True),
        (10, {"gpc": True}, False, False, False, True),
        (10, {"sensitive_data_processing": (1,) * 7}, False, False, False, False),  # no geo
        (11, {"sensitive_data_processing_opt_out_notice": 2}, False, False, True, False),
        (11, {"mspa_service_provider_mode": 1}, False, False, False, True),
        (12, {"known_child_sensitive_data_consents": (0, 0, 1)}, False, True, False, True),
        (12, {"sale_opt_out": 2, "sale_opt_out_notice": 1}, False, False, False, False),
    ],
)
def test_us_state_readings(
    section_id, fields, opted_out, known_child, precise_geo_refused, restricts
):
    section = gpp.UsState(section_id, **fields)
    assert section.opted_out is opted_out
    assert section.known_child is known_child
    assert section.precise_geo_refused is precise_geo_refused
    assert section.restricts_personal_data is restricts
    assert gpp.decode_us_state(section_id, gpp.encode_us_state(section)) == section


def test_a_us_state_section_needs_a_state_we_decode():
    with pytest.raises(ValueError, match="not a US state section"):
        gpp.UsState(13)


def usnat_bits(text: str) -> list[int]:
    """The two-bit fields of a usnat v1 core segment, read independently of the decoder."""
    from openbid.privacy.bits import base64url_to_bits

    reader = BitReader(base64url_to_bits(text, ValueError, "usnat"), ValueError, "usnat")
    assert reader.int(6, "version") == 1
    return [reader.int(2, "field") for _ in range(9 + 12 + 2 + 4)]


def test_usnat_decoding_reads_each_field_in_spec_order():
    writer = BitWriter()
    writer.int(1, 6, "version")
    values = [1, 2, 0, 1, 2, 0, 1, 2, 1] + [2] * 12 + [0, 1] + [2, 1, 0, 2]
    for value in values:
        writer.int(value, 2, "field")
    section = gpp.decode_usnat(writer.base64url())
    assert (section.sharing_notice, section.sale_opt_out_notice) == (1, 2)
    assert section.targeted_advertising_opt_out_notice == 1
    assert (section.sale_opt_out, section.sharing_opt_out) == (1, 2)
    assert section.targeted_advertising_opt_out == 1
    assert section.sensitive_data_processing == (2,) * 12
    assert section.known_child_sensitive_data_consents == (0, 1)
    assert section.personal_data_consents == 2
    assert (section.mspa_covered_transaction, section.mspa_opt_out_option_mode) == (1, 0)
    assert section.mspa_service_provider_mode == 2
    assert section.gpc is None
    assert usnat_bits(gpp.encode_usnat(section)) == values


def test_usnat_version_2_has_sixteen_sensitive_categories_and_three_child_consents():
    section = gpp.UsNat(
        version=2,
        sensitive_data_processing=tuple(i % 3 for i in range(16)),
        known_child_sensitive_data_consents=(1, 0, 2),
        gpc=True,
    )
    assert gpp.decode_usnat(gpp.encode_usnat(section)) == section


@pytest.mark.parametrize(
    ("fields", "opted_out", "restricts"),
    [
        ({}, False, False),
        ({"sale_opt_out": gpp.OPTED_OUT}, True, True),
        ({"sharing_opt_out": gpp.OPTED_OUT}, True, True),
        ({"targeted_advertising_opt_out": gpp.OPTED_OUT}, True, True),
        ({"sale_opt_out": gpp.DID_NOT_OPT_OUT}, False, False),
        ({"gpc": True}, False, True),
        ({"gpc": False}, False, False),
        ({"mspa_service_provider_mode": 1}, False, True),
        ({"known_child_sensitive_data_consents": (1, 0)}, False, True),
        ({"known_child_sensitive_data_consents": (2, 0)}, False, False),
        ({"known_child_sensitive_data_consents": (0, 2)}, False, True),
        ({"known_child_sensitive_data_consents": (0, 1)}, False, True),
        # usnat v2: the third consent is about 16-17 year olds, who can consent.
        ({"version": 2, "known_child_sensitive_data_consents": (0, 0, 2)}, False, False),
        ({"version": 2, "known_child_sensitive_data_consents": (0, 0, 1)}, False, True),
        # A notice not given (2) means no choice was offered: read as an opt-out.
        ({"sale_opt_out_notice": gpp.NOTICE_NOT_PROVIDED}, False, True),
        ({"sharing_opt_out_notice": gpp.NOTICE_NOT_PROVIDED}, False, True),
        ({"targeted_advertising_opt_out_notice": gpp.NOTICE_NOT_PROVIDED}, False, True),
        ({"sharing_notice": gpp.NOTICE_NOT_PROVIDED}, False, True),
        ({"sale_opt_out_notice": 1, "sharing_notice": 1}, False, False),
    ],
)
def test_usnat_opt_out_readings(fields, opted_out, restricts):
    section = gpp.UsNat(**fields)
    assert section.opted_out is opted_out
    assert section.restricts_personal_data is restricts


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        ({}, False),
        ({"sensitive_data_processing": (0,) * 7 + (1,) + (0,) * 4}, True),
        ({"sensitive_data_processing": (0,) * 7 + (2,) + (0,) * 4}, False),
        ({"sensitive_data_processing": (1,) * 7 + (0,) + (1,) * 4}, False),
        ({"sensitive_data_processing_opt_out_notice": gpp.NOTICE_NOT_PROVIDED}, True),
        ({"sensitive_data_limit_use_notice": gpp.NOTICE_NOT_PROVIDED}, True),
    ],
)
def test_usnat_precise_geolocation_reading(fields, refused):
    assert gpp.UsNat(**fields).precise_geo_refused is refused


def test_usnat_gpc_subsection_round_trips():
    for gpc in (True, False):
        text = gpp.encode_usnat(gpp.UsNat(gpc=gpc))
        assert "." in text
        assert gpp.decode_usnat(text).gpc is gpc


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("DBABMA", "lists more sections \\[2\\] than the 0 that follow"),
        ("DBABMA~A~B", "lists 1 sections \\[2\\] but 2 follow"),
        ("BBABMA~x", "type 1: a GPP header is type 3"),
        ("DCABMA~x", "version 2 is not supported"),
        ("DBABMA~", "section 2 is empty"),
        ("DBABMA~CPX!", "section 2 \\(tcfeuv2\\): .*not base64url"),
        ("DBACNY~" + SPEC_TCF_ONLY.split("~")[1] + "~1YN", "section 6 \\(uspv1\\)"),
        ("DBABAAAA", "Fibonacci integer\\) has no '11' terminator"),
    ],
)
def test_malformed_gpp_strings_raise_a_clear_invalid_gpp_string(text, message):
    with pytest.raises(InvalidGPPString, match=message) as raised:
        gpp.decode(text)
    assert isinstance(raised.value, PrivacyError)


@pytest.mark.parametrize(
    ("section_id", "text", "message"),
    [
        (7, "BVVq", "usnat core segment is truncated"),
        (7, "DVVqAAEABCA", "usnat version 3 is not supported"),
        (7, "BAAAAAAAAQA.wA", "subsection type 3 is unknown"),
        (7, "B____________", "is 3: two-bit fields hold 0, 1 or 2"),
        (8, "BVWSSS", "usca core segment is truncated"),
        (9, "CVWSSVY", "usva version 2 is not supported"),
        (9, "BVWSSVY.YA", "usva has no subsections, but 1 follow"),
        (11, "B____________", "usut sharing_notice is 3"),
        (12, "BVWSSZFg.wA", "usct subsection type 3 is unknown"),
    ],
)
def test_a_malformed_us_section_is_unreadable_on_its_own(section_id, text, message):
    # The section's decoder raises; the GPP string decodes, with that section unreadable
    # (not decoded) and the string's other sections intact.
    decoder = gpp.decode_usnat if section_id == 7 else lambda t: gpp.decode_us_state(section_id, t)
    with pytest.raises(InvalidGPPString, match=message):
        decoder(text)
    tc_text = SPEC_TCF_ONLY.split("~")[1]
    decoded = gpp.decode(gpp.encode({2: tc_text, section_id: text, 13: "BAAA"}))
    assert decoded.section_ids == (2, section_id, 13)
    assert decoded.tcf_eu == tcf.decode(tc_text)
    assert decoded.usnat is None and decoded.us_states == ()
    assert list(decoded.unreadable) == [section_id]
    assert re.search(message, decoded.unreadable[section_id])
    assert decoded.sections[section_id] == text


def test_decode_cached_returns_errors_instead_of_raising():
    assert gpp.decode_cached(SPEC_TCF_ONLY) is gpp.decode_cached(SPEC_TCF_ONLY)
    assert isinstance(gpp.decode_cached("nonsense"), InvalidGPPString)


two_bits = st.integers(0, 2)


@st.composite
def usnat_sections(draw):
    version = draw(st.sampled_from([1, 2]))
    sensitive, child = (12, 2) if version == 1 else (16, 3)
    return gpp.UsNat(
        version=version,
        sharing_notice=draw(two_bits),
        sale_opt_out_notice=draw(two_bits),
        sharing_opt_out_notice=draw(two_bits),
        targeted_advertising_opt_out_notice=draw(two_bits),
        sensitive_data_processing_opt_out_notice=draw(two_bits),
        sensitive_data_limit_use_notice=draw(two_bits),
        sale_opt_out=draw(two_bits),
        sharing_opt_out=draw(two_bits),
        targeted_advertising_opt_out=draw(two_bits),
        sensitive_data_processing=tuple(
            draw(st.lists(two_bits, min_size=sensitive, max_size=sensitive))
        ),
        known_child_sensitive_data_consents=tuple(
            draw(st.lists(two_bits, min_size=child, max_size=child))
        ),
        personal_data_consents=draw(two_bits),
        mspa_covered_transaction=draw(two_bits),
        mspa_opt_out_option_mode=draw(two_bits),
        mspa_service_provider_mode=draw(two_bits),
        gpc=draw(st.none() | st.booleans()),
    )


STATE_LENGTHS = {8: (9, 2), 9: (8, 1), 10: (7, 1), 11: (8, 1), 12: (8, 3)}
STATE_GPC = {8, 10, 12}


@st.composite
def us_state_sections(draw):
    section_id = draw(st.sampled_from(sorted(STATE_LENGTHS)))
    sensitive, child = STATE_LENGTHS[section_id]
    names = [
        "sharing_notice",
        "sale_opt_out_notice",
        "sharing_opt_out_notice",
        "targeted_advertising_opt_out_notice",
        "sensitive_data_processing_opt_out_notice",
        "sensitive_data_limit_use_notice",
        "sale_opt_out",
        "sharing_opt_out",
        "targeted_advertising_opt_out",
        "personal_data_consents",
    ]
    # Fields the state lacks must stay 0 to survive the round trip: draw all, keep theirs.
    layout_fields = set(gpp._STATE_LAYOUTS[section_id].fields)
    if gpp._STATE_LAYOUTS[section_id].personal_data_consents:
        layout_fields.add("personal_data_consents")
    fields = {name: draw(two_bits) for name in names if name in layout_fields}
    return gpp.UsState(
        section_id,
        sensitive_data_processing=tuple(
            draw(st.lists(two_bits, min_size=sensitive, max_size=sensitive))
        ),
        known_child_sensitive_data_consents=tuple(
            draw(st.lists(two_bits, min_size=child, max_size=child))
        ),
        mspa_covered_transaction=draw(two_bits),
        mspa_opt_out_option_mode=draw(two_bits),
        mspa_service_provider_mode=draw(two_bits),
        gpc=draw(st.none() | st.booleans()) if section_id in STATE_GPC else None,
        **fields,
    )


@settings(max_examples=100, deadline=None)
@given(
    usnat_sections(),
    st.lists(us_state_sections(), max_size=3),
    st.sets(st.integers(13, 40), max_size=4),
)
def test_gpp_round_trip_with_any_section_ids(section, states, other_ids):
    sections = {section_id: "BAAA" for section_id in other_ids}
    sections[7] = gpp.encode_usnat(section)
    by_id = {state.section_id: state for state in states}
    for state in by_id.values():
        sections[state.section_id] = gpp.encode_us_state(state)
    decoded = gpp.decode(gpp.encode(sections))
    assert decoded.section_ids == tuple(sorted(sections))
    assert decoded.usnat == section
    assert decoded.us_states == tuple(by_id[section_id] for section_id in sorted(by_id))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60),
        st.text(alphabet=BASE64URL_ALPHABET + "~.", max_size=120),
        st.builds(
            lambda prefix, tail: prefix + tail,
            st.sampled_from(
                ["DBABMA~", "DBABLA~", "DBACNY~", "DBABzYA~"]
                + [gpp.encode({section_id: "A"})[:-1] for section_id in range(8, 13)]
            ),
            st.text(alphabet=BASE64URL_ALPHABET + "~.", max_size=80),
        ),
    )
)
def test_any_string_decodes_or_raises_only_invalid_gpp_string(text):
    try:
        gpp.decode(text)
    except InvalidGPPString as error:
        assert str(error)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=8))
def test_any_string_parses_or_raises_only_invalid_us_privacy_string(text):
    try:
        usprivacy.parse(text)
    except InvalidUSPrivacyString as error:
        assert str(error)


def _range_bomb_header(entries: int) -> str:
    writer = BitWriter()
    writer.int(3, 6, "Type")
    writer.int(1, 6, "Version")
    writer.int(entries, 12, "NumEntries")
    for _ in range(entries):
        writer.bool(True)
        writer.fibonacci(1, "StartId")
        writer.fibonacci(64, "EndId")
    return writer.base64url()


def test_header_ranges_stop_expanding_past_the_sections_that_follow():
    # 3,650 ranges of 65 ids would expand to ~237k ids; decoding must stop at the first one
    # that exceeds the '~' sections present, and the error must not carry the whole id list.
    error = gpp.decode_cached(_range_bomb_header(3650) + "~A" * 3)
    assert isinstance(error, InvalidGPPString)
    assert "lists more sections [1] than the 3 that follow it" in str(error)
    assert len(str(error)) < 200


def test_header_lists_at_most_64_sections():
    with pytest.raises(InvalidGPPString, match="at most 64"):
        gpp.decode(_range_bomb_header(2) + "~A" * 130)


# --- Core segment lengths ---------------------------------------------------------------
# Each core segment's fields fill a fixed number of bits per version; the text may pad them
# with zero bits up to the next 24-bit boundary (whole characters; whole bytes then
# characters as the IAB's reference encoders write; 24-bit groups as its traditional base64
# encoder writes; or a zero character more): usnat v1 is 60 bits (10-12 characters), v2 70
# (12); usca 46 (8), usva 40 (7-8), usco 38 (7-8), usut 42 (7-8), usct 44 (8). Longer
# cores, and non-zero bits past the fields, are what a section of another version (or
# another section) looks like.
CORE_BITS = {(7, 1): 60, (7, 2): 70, 8: 46, 9: 40, 10: 38, 11: 42, 12: 44}

USNAT_V2 = gpp.UsNat(
    version=2,
    sale_opt_out=gpp.DID_NOT_OPT_OUT,
    sensitive_data_processing=(0,) * 16,
    known_child_sensitive_data_consents=(0, 0, 0),
)


def _core_bits(text: str) -> int:
    return 6 * len(text.split(".")[0])


def _ceil24(bits: int) -> int:
    return bits + -bits % 24


@pytest.mark.parametrize(
    "text",
    [
        "BVVqAAEABCA.QA",  # the IAB encoder's usnat v1 example (60 bits padded to 66)
        "BVVqAAEABCA"[:10],  # the same 60 bits padded only to the next character
        "BVVqAAEABCAA",  # ... padded to 72 bits (24-bit groups, or a zero character more)
        "BVVqAAEABCAA.QA",
        gpp.encode_usnat(USNAT_V2),
    ],
)
def test_usnat_core_segments_padded_with_zeros_to_24_bits_decode(text):
    section = gpp.decode_usnat(text)
    expected = CORE_BITS[(7, section.version)]
    assert expected <= _core_bits(text) <= _ceil24(expected)
    assert section == gpp.decode_usnat(gpp.encode_usnat(section))
    assert gpp.decode(gpp.encode({7: text})).usnat == section


@pytest.mark.parametrize(("section_id", "text", "fields"), STATE_SPEC_EXAMPLES)
def test_us_state_reference_cores_are_their_layout_padded(section_id, text, fields):
    assert CORE_BITS[section_id] <= _core_bits(text) <= _ceil24(CORE_BITS[section_id])


def test_a_usut_core_padded_only_to_the_next_character_decodes():
    # usut is 42 bits: 7 characters exactly; the IAB encoder pads to 48 bits (8).
    assert gpp.decode_us_state(11, "BVVkklW") == gpp.decode_us_state(11, "BVVkklWA")


@pytest.mark.parametrize(
    ("section_id", "short", "padded"),
    [
        # usva and usco: 40 and 38 bits, written in 7 characters; 48 bits (8) is their 24-bit
        # padding, or one zero character more.
        (9, "BVVVVVU", "BVVVVVUA"),
        (9, "BVWSSVY", "BVWSSVYA"),
        (10, "BVWSSVg.YA", "BVWSSVgA.YA"),
    ],
)
def test_a_us_state_core_padded_with_zeros_to_24_bits_decodes(section_id, short, padded):
    assert gpp.decode_us_state(section_id, padded) == gpp.decode_us_state(section_id, short)
    decoded = gpp.decode(gpp.encode({section_id: padded}))
    assert decoded.us_states == (gpp.decode_us_state(section_id, short),)
    assert not decoded.unreadable


def test_a_usva_core_with_a_field_past_its_layout_is_not_zero_padding():
    # "BVVVVVVY" is 17 two-bit fields of 1 (usva's 40 bits), then bits 40-47 "01011000": an
    # 18th field and more, not padding. Its 24-bit padded form is "BVVVVVUA".
    with pytest.raises(InvalidGPPString, match="48 bits: its fields take 40, and the 8 bits"):
        gpp.decode_us_state(9, "BVVVVVVY")
    assert gpp.decode_us_state(9, "BVVVVVUA").sale_opt_out == gpp.OPTED_OUT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # A v2 core labelled v1: 72 bits where v1 has 60, and the 12 after them not zero.
        (
            "B" + gpp.encode_usnat(USNAT_V2)[1:],
            "usnat v1 core segment has 72 bits: its fields take 60, and the 12 bits after "
            "them are not all zero",
        ),
        # A v1 core whose padding is not zero.
        ("BVVqAAEABCAB", "usnat v1 core segment has 72 bits: its fields take 60, and the 12"),
        ("BVVqAAEABCB", "usnat v1 core segment has 66 bits: its fields take 60, and the 6"),
        ("BVVqAAEABCB.QA", "usnat v1 core segment has 66 bits"),
        # A v1 core zero-padded past 72 bits.
        ("BVVqAAEABCAAA", "usnat v1 core segment has 78 bits: its fields take 60, padded to"),
        ("BVVqAAEABCAAAAAA", "usnat v1 core segment has 96 bits: its fields take 60"),
        # A v2 core with two characters too many.
        (
            gpp.encode_usnat(USNAT_V2) + "AA",
            "usnat v2 core segment has 84 bits: its fields take 70, padded to at most 72",
        ),
    ],
)
def test_a_usnat_core_longer_than_its_version_layout_is_invalid(text, message):
    with pytest.raises(InvalidGPPString, match=message):
        gpp.decode_usnat(text)
    decoded = gpp.decode(gpp.encode({7: text}))
    assert decoded.usnat is None
    assert re.search(message, decoded.unreadable[7])


def test_a_usnat_core_shorter_than_its_version_layout_is_invalid():
    # A v1 core labelled v2 runs out of bits.
    with pytest.raises(InvalidGPPString, match="usnat core segment is truncated"):
        gpp.decode_usnat("C" + "BVVqAAEABCA"[1:])


@pytest.mark.parametrize(
    ("section_id", "text", "message"),
    [
        (8, "BVWSSSVYA.YA", "usca v1 core segment has 54 bits: its fields take 46"),
        (9, "BVWSSVYAAAAA", "usva v1 core segment has 72 bits: its fields take 40"),
        (9, "BVWSSVYAA", "usva v1 core segment has 54 bits: its fields take 40"),
        (10, "BVWSSVgAA.YA", "usco v1 core segment has 54 bits: its fields take 38"),
        (11, "BVVkklWAA", "usut v1 core segment has 54 bits: its fields take 42"),
        (12, "BVWSSZFgA.YA", "usct v1 core segment has 54 bits: its fields take 44"),
        # A usct core (44 bits) read as usva (40): its last fields are not zero padding.
        (9, "BVWSSZFg", "usva v1 core segment has 48 bits: its fields take 40, and the 8"),
        # A usva core read as usct runs out of bits.
        (12, "BVWSSVY", "usct core segment is truncated"),
    ],
)
def test_a_us_state_core_that_does_not_match_its_layout_is_invalid(section_id, text, message):
    with pytest.raises(InvalidGPPString, match=message):
        gpp.decode_us_state(section_id, text)
    decoded = gpp.decode(gpp.encode({section_id: text}))
    assert decoded.us_states == ()
    assert re.search(message, decoded.unreadable[section_id])


def test_an_applicable_us_section_of_the_wrong_length_reads_as_an_opt_out(make_request):
    # A v2 core labelled v1 would decode (wrongly) as "did not opt out"; as an unreadable
    # US section it must get the unreadable-US-signal redaction (as an opt-out).
    from openbid.privacy.consent import ConsentContext, redaction_for

    text = gpp.encode({7: "B" + gpp.encode_usnat(USNAT_V2)[1:]})
    consent = ConsentContext.from_request(make_request(regs={"gpp": text, "gpp_sid": [7]}))
    assert "gpp_us_section" in consent.unreadable
    redaction = redaction_for(consent, 42)
    assert "unreadable_us_signal" in redaction.reasons
    assert redaction.strip_user_ids and redaction.strip_device_ids and redaction.strip_user_data
    assert redaction.round_geo and redaction.truncate_ip and not redaction.block
    # The same for a state section with a character too many.
    text = gpp.encode({9: "BVWSSVYAA"})
    consent = ConsentContext.from_request(make_request(regs={"gpp": text, "gpp_sid": [9]}))
    assert "unreadable_us_signal" in redaction_for(consent, 42).reasons


@pytest.mark.parametrize("gpp_sid", [None, [2, 7]])
def test_an_unreadable_us_section_leaves_the_tcf_eu_section_in_force(make_request, gpp_sid):
    from openbid.privacy.consent import ConsentContext, redaction_for

    tc_text = SPEC_TCF_ONLY.split("~")[1]
    text = gpp.encode({2: tc_text, 7: "B" + gpp.encode_usnat(USNAT_V2)[1:]})
    regs = {"gpp": text} if gpp_sid is None else {"gpp": text, "gpp_sid": gpp_sid}
    consent = ConsentContext.from_request(make_request(regs=regs))
    assert consent.unreadable == ("gpp_us_section",)
    assert consent.tc == tcf.decode(tc_text)
    assert consent.gdpr_applies
    assert consent.usnat is None
    # The US section reads as an opt-out; the TCF section still governs the GDPR side.
    reasons = redaction_for(consent, 42).reasons
    assert "unreadable_us_signal" in reasons
    assert "gdpr_no_valid_tc_string" not in reasons
    tcf_only = ConsentContext.from_request(make_request(regs={"gpp": SPEC_TCF_ONLY}))
    assert set(redaction_for(tcf_only, 42).reasons) <= set(reasons)


def test_an_unreadable_us_section_that_does_not_apply_is_ignored(make_request):
    from openbid.privacy.consent import ConsentContext

    tc_text = SPEC_TCF_ONLY.split("~")[1]
    text = gpp.encode({2: tc_text, 9: "BVWSSVYAA"})
    consent = ConsentContext.from_request(make_request(regs={"gpp": text, "gpp_sid": [2]}))
    assert consent.unreadable == ()
    assert consent.tc == tcf.decode(tc_text)
