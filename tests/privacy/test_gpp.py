"""US Privacy and GPP parsing: published examples, table tests, round trips, and malformed
input that only ever raises our own error."""

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
    # Sections 8, 9, 10 are a run: one range entry in the header, offsets Fibonacci-coded.
    text = gpp.encode({2: SPEC_TCF_ONLY.split("~")[1], 8: "BAAA", 9: "BBBB", 10: "BCCC"})
    decoded = gpp.decode(text)
    assert decoded.section_ids == (2, 8, 9, 10)
    assert decoded.sections[9] == "BBBB"
    assert decoded.usnat is None


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
    ],
)
def test_usnat_opt_out_readings(fields, opted_out, restricts):
    section = gpp.UsNat(**fields)
    assert section.opted_out is opted_out
    assert section.restricts_personal_data is restricts


def test_usnat_gpc_subsection_round_trips():
    for gpc in (True, False):
        text = gpp.encode_usnat(gpp.UsNat(gpc=gpc))
        assert "." in text
        assert gpp.decode_usnat(text).gpc is gpc


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("DBABMA", "lists 1 sections \\[2\\] but 0 follow"),
        ("DBABMA~A~B", "lists 1 sections \\[2\\] but 2 follow"),
        ("BBABMA~x", "type 1: a GPP header is type 3"),
        ("DCABMA~x", "version 2 is not supported"),
        ("DBABMA~", "section 2 is empty"),
        ("DBABMA~CPX!", "section 2 \\(tcfeuv2\\): .*not base64url"),
        ("DBABLA~BVVq", "usnat core segment is truncated"),
        ("DBABLA~DVVqAAEABCA", "usnat version 3 is not supported"),
        ("DBABLA~BAAAAAAAAQA.wA", "subsection type 3 is unknown"),
        ("DBABLA~B____________", "is 3: two-bit fields hold 0, 1 or 2"),
        ("DBACNY~" + SPEC_TCF_ONLY.split("~")[1] + "~1YN", "section 6 \\(uspv1\\)"),
        ("DBABAAAA", "Fibonacci integer\\) has no '11' terminator"),
    ],
)
def test_malformed_gpp_strings_raise_a_clear_invalid_gpp_string(text, message):
    with pytest.raises(InvalidGPPString, match=message) as raised:
        gpp.decode(text)
    assert isinstance(raised.value, PrivacyError)


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


@settings(max_examples=100, deadline=None)
@given(usnat_sections(), st.sets(st.integers(1, 40), max_size=6))
def test_gpp_round_trip_with_any_section_ids(section, other_ids):
    sections = {section_id: "BAAA" for section_id in other_ids - {2, 6, 7}}
    sections[7] = gpp.encode_usnat(section)
    decoded = gpp.decode(gpp.encode(sections))
    assert decoded.section_ids == tuple(sorted(sections))
    assert decoded.usnat == section


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60),
        st.text(alphabet=BASE64URL_ALPHABET + "~.", max_size=120),
        st.builds(
            lambda prefix, tail: prefix + tail,
            st.sampled_from(["DBABMA~", "DBABLA~", "DBACNY~", "DBABzYA~"]),
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
