"""TC string decoding against the public vectors, field for field; encoder round trips;
malformed input only ever raises InvalidTCString."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openbid.privacy import tcf
from openbid.privacy.bits import BASE64URL_ALPHABET, base64url_to_bits, bits_to_base64url
from openbid.privacy.errors import InvalidTCString, PrivacyError

VECTORS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tcf" / "v2"
VECTOR_FILES = sorted(VECTORS.glob("consent_*.json"))
FIXED_CORE_BITS = 213  # Version .. PublisherCC: the fields before the vendor consent section


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def ids(mapping: dict) -> frozenset[int]:
    """The vectors write id sets as {"12": true, ...}."""
    return frozenset(int(key) for key, value in mapping.items() if value)


def seconds(moment: datetime) -> str:
    """The vectors write times to the second, naive, in UTC."""
    assert moment.tzinfo is UTC
    return moment.replace(microsecond=0, tzinfo=None).isoformat()


def restrictions_as_vector(tc: tcf.TCString) -> dict[int, list[tuple]]:
    by_vendor: dict[int, list[tuple]] = {}
    for restriction in tc.publisher_restrictions:
        kind = restriction.restriction_type
        for vendor_id in restriction.vendor_ids:
            by_vendor.setdefault(vendor_id, []).append(
                (
                    restriction.purpose_id,
                    kind != tcf.RestrictionType.NOT_ALLOWED,
                    kind == tcf.RestrictionType.REQUIRE_CONSENT,
                    kind == tcf.RestrictionType.REQUIRE_LEGITIMATE_INTEREST,
                )
            )
    return {vendor: sorted(entries) for vendor, entries in by_vendor.items()}


def expected_restrictions(core: dict) -> dict[int, list[tuple]]:
    return {
        int(vendor): sorted(
            (
                entry["purpose"],
                entry["isAllowed"],
                entry["isConsentRequired"],
                entry["isLegitimateInterestRequired"],
            )
            for entry in entries
        )
        for vendor, entries in core["publisherRestrictions"].items()
    }


def assert_core_header(tc: tcf.TCString, core: dict) -> None:
    """Every core field before the vendor sections."""
    assert tc.version == core["version"]
    assert seconds(tc.created) == core["created"]
    assert seconds(tc.last_updated) == core["lastUpdated"]
    assert tc.cmp_id == core["cmpId"]
    assert tc.cmp_version == core["cmpVersion"]
    assert tc.consent_screen == core["consentScreen"]
    assert tc.consent_language == core["consentLanguage"]
    assert tc.vendor_list_version == core["vendorListVersion"]
    assert tc.policy_version == core["policyVersion"]
    assert tc.is_service_specific == core["isServiceSpecified"]
    assert tc.use_non_standard_stacks == core["useNonStandardStacks"]
    assert tc.special_feature_opt_ins == ids(core["specialFeatureOptins"])
    assert tc.purpose_consents == ids(core["purposeConsents"])
    assert tc.purpose_legitimate_interests == ids(core["purposeLegitimateInterests"])
    assert tc.purpose_one_treatment == core["purposeOneTreatment"]
    assert tc.publisher_cc == core["publisherCountryCode"]
    assert tc.max_vendor_consent_id == core["maxVendorId"]
    assert tc.vendor_consents == ids(core["vendorConsents"])


def assert_publisher_tc(tc: tcf.TCString, vector: dict) -> None:
    if "publisherTC" not in vector:
        assert not tc.has_publisher_tc
        return
    publisher = vector["publisherTC"]
    assert tc.has_publisher_tc
    assert tc.publisher_purpose_consents == ids(publisher["purposeConsents"])
    assert tc.publisher_purpose_legitimate_interests == ids(publisher["purposeLegitimateInterests"])
    assert tc.num_custom_purposes == publisher["numCustomPurposes"]
    assert tc.custom_purpose_consents == ids(publisher["customPurposeConsents"])
    assert tc.custom_purpose_legitimate_interests == ids(
        publisher["customPurposeLegitimateInterests"]
    )


def test_every_vector_file_is_covered():
    assert [path.name for path in VECTOR_FILES] == [
        "consent_a.json",
        "consent_b.json",
        "consent_c.json",
        "consent_d.json",
    ]


@pytest.mark.parametrize("name", ["consent_a.json", "consent_b.json", "consent_c.json"])
def test_vector_decodes_field_for_field(name):
    vector = load(name)
    core = vector["core"]
    tc = tcf.decode(vector["consent"])
    assert_core_header(tc, core)
    assert tc.max_vendor_legitimate_interest_id == core["maxVendorLegitimateInterestsId"]
    assert tc.vendor_legitimate_interests == ids(core["vendorLegitimateInterests"])
    assert restrictions_as_vector(tc) == expected_restrictions(core)
    if "disclosedVendors" in vector:
        assert tc.disclosed_vendors == ids(vector["disclosedVendors"])
    else:
        assert tc.disclosed_vendors is None
    assert tc.allowed_vendors is None
    assert_publisher_tc(tc, vector)


def test_vector_d_is_refused_because_its_legitimate_interest_section_is_corrupt():
    """consent_d's vendor LI section declares 2,441 range entries in the 887 bits left and
    has reversed ranges; the reference decoder read zeros past the end, which is how its
    expected set came to hold vendor 0 and an id above its own MaxVendorId. Granting
    legitimate interest to 54,769 vendors from garbage would be unsafe: we refuse it."""
    vector = load("consent_d.json")
    core = vector["core"]
    expected_li = ids(core["vendorLegitimateInterests"])
    assert 0 in expected_li  # vendor ids start at 1 ...
    assert max(expected_li) > core["maxVendorLegitimateInterestsId"]  # ... and end at MaxVendorId
    with pytest.raises(InvalidTCString, match="vendor legitimate interests has a range 10885-4129"):
        tcf.decode(vector["consent"])


def test_vector_d_fields_before_the_corruption_decode_field_for_field():
    """Splice an empty LI section and no restrictions in place of the corrupt tail of the
    core segment: every field before it, and the publisher TC segment, match the vector."""
    vector = load("consent_d.json")
    core = vector["core"]
    core_text, *other_segments = vector["consent"].split(".")
    bits = base64url_to_bits(core_text, InvalidTCString, "core")
    li_start = FIXED_CORE_BITS + 17 + core["maxVendorId"]
    assert int(bits[li_start : li_start + 16], 2) == core["maxVendorLegitimateInterestsId"]
    repaired = bits_to_base64url(bits[:li_start] + "0" * 16 + "0" + "0" * 12)
    tc = tcf.decode(".".join([repaired, *other_segments]))
    assert_core_header(tc, core)
    assert tc.vendor_legitimate_interests == frozenset()
    assert tc.publisher_restrictions == ()
    assert_publisher_tc(tc, vector)


def test_restriction_lookup_matches_the_vector():
    vector = load("consent_a.json")
    tc = tcf.decode(vector["consent"])
    for vendor, entries in vector["core"]["publisherRestrictions"].items():
        for entry in entries:
            kind = tc.restriction(int(vendor), entry["purpose"])
            assert kind is not None
            assert (kind != tcf.RestrictionType.NOT_ALLOWED) == entry["isAllowed"]
    assert tc.restriction(3, 1) is None  # vendor 3 has no restriction in this string


def test_decode_cached_returns_the_same_object_and_caches_errors():
    consent = load("consent_b.json")["consent"]
    assert tcf.decode_cached(consent) is tcf.decode_cached(consent)
    error = tcf.decode_cached("not a tc string")
    assert isinstance(error, InvalidTCString)
    assert tcf.decode_cached("not a tc string") is error


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("CO!x", "not base64url: character '!'"),
        ("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA", "version 1 is not supported"),
        ("CO", "truncated: Created needs 36 bits"),
        (load("consent_b.json")["consent"] + ".", "segment 2 is empty"),
        (load("consent_b.json")["consent"] + ".AAAA", "unknown segment type 0"),
        (
            load("consent_b.json")["consent"] + ".YAAAAAAAAAAA.YAAAAAAAAAAA",
            "repeats segment type 3",
        ),
        (load("consent_b.json")["consent"][:120], "truncated"),
        ("C" * (tcf.MAX_TC_STRING_CHARS + 1), "more than 32768"),
    ],
)
def test_malformed_strings_raise_a_clear_invalid_tc_string(text, message):
    with pytest.raises(InvalidTCString, match=message.replace("(", r"\(")) as raised:
        tcf.decode(text)
    assert isinstance(raised.value, PrivacyError)
    assert isinstance(raised.value, ValueError)


def test_ranges_naming_every_vendor_are_read_without_expanding_them():
    """A short, valid string naming 655,350 ids: ranges stay spans (see test_tcf_idset.py),
    so it is read rather than refused."""
    every_vendor = frozenset(range(1, 65536))
    restrictions = tuple(
        tcf.PublisherRestriction(purpose, tcf.RestrictionType.NOT_ALLOWED, every_vendor)
        for purpose in range(1, 11)
    )
    text = tcf.encode(tcf.TCString(publisher_restrictions=restrictions))
    assert len(text) < 1000  # one range entry a restriction
    tc = tcf.decode(text)
    assert tc.publisher_restrictions == restrictions
    assert all(r.vendor_ids.spans() == ((1, 65535),) for r in tc.publisher_restrictions)
    assert tc.restriction(65535, 10) is tcf.RestrictionType.NOT_ALLOWED
    assert tc.restriction(65535, 11) is None


def range_encoded(vendor_section_bits: str) -> str:
    """A core segment with default fields and the given vendor consent section bits."""
    core = base64url_to_bits(tcf.encode(tcf.TCString()), InvalidTCString, "core")
    empty_section = "0" * 17  # MaxVendorId 0, bitfield
    tail = empty_section + "0" * 12  # no legitimate interests, no restrictions
    return bits_to_base64url(core[:FIXED_CORE_BITS] + vendor_section_bits + tail)


def test_range_entries_must_stay_within_1_and_max_vendor_id():
    one_entry = "1" + "000000000001"  # IsRangeEncoding, NumEntries 1
    ok = range_encoded(
        format(10, "016b") + one_entry + "1" + format(3, "016b") + format(10, "016b")
    )
    assert tcf.decode(ok).vendor_consents == frozenset(range(3, 11))
    above = range_encoded(format(9, "016b") + one_entry + "0" + format(10, "016b"))
    with pytest.raises(InvalidTCString, match="vendor id 10, above its MaxVendorId 9"):
        tcf.decode(above)
    zero = range_encoded(format(9, "016b") + one_entry + "0" + format(0, "016b"))
    with pytest.raises(InvalidTCString, match="vendor id 0: vendor ids start at 1"):
        tcf.decode(zero)


def test_non_text_input_raises_invalid_tc_string():
    with pytest.raises(InvalidTCString, match="must be text"):
        tcf.decode(b"CO")  # type: ignore[arg-type]


# --- properties ------------------------------------------------------------------------

VECTOR_STRINGS = [load(path.name)["consent"] for path in VECTOR_FILES]


@st.composite
def mutated_vectors(draw):
    text = draw(st.sampled_from(VECTOR_STRINGS))
    cut = draw(st.integers(0, len(text)))
    text = text[:cut]
    for _ in range(draw(st.integers(0, 3))):
        if not text:
            break
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.sampled_from(BASE64URL_ALPHABET + ".")) + text[at + 1 :]
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=80),
        st.text(alphabet=BASE64URL_ALPHABET + ".", max_size=400),
        mutated_vectors(),
    )
)
def test_any_string_decodes_or_raises_only_invalid_tc_string(text):
    try:
        tc = tcf.decode(text)
    except InvalidTCString as error:
        assert str(error)
    else:
        assert tc.version == 2


id_sets = st.frozensets(st.integers(1, 1200), max_size=60) | st.builds(
    lambda start, length: frozenset(range(start, start + length)),
    st.integers(1, 2000),
    st.integers(0, 900),
)
deciseconds = st.integers(0, (1 << 36) - 1).map(
    lambda ds: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=100 * ds)
)
letters = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)
restriction = st.builds(
    tcf.PublisherRestriction,
    st.integers(1, 24),
    st.sampled_from(list(tcf.RestrictionType)),
    st.frozensets(st.integers(1, 3000), min_size=1, max_size=20),
)


@st.composite
def tc_strings(draw):
    vendor_consents = draw(id_sets)
    vendor_li = draw(id_sets)
    custom = draw(st.integers(0, 63))
    has_publisher_tc = draw(st.booleans())
    return tcf.TCString(
        created=draw(deciseconds),
        last_updated=draw(deciseconds),
        cmp_id=draw(st.integers(0, 4095)),
        cmp_version=draw(st.integers(0, 4095)),
        consent_screen=draw(st.integers(0, 63)),
        consent_language=draw(letters),
        vendor_list_version=draw(st.integers(0, 4095)),
        policy_version=draw(st.integers(0, 63)),
        is_service_specific=draw(st.booleans()),
        use_non_standard_stacks=draw(st.booleans()),
        special_feature_opt_ins=draw(st.frozensets(st.integers(1, 12))),
        purpose_consents=draw(st.frozensets(st.integers(1, 24))),
        purpose_legitimate_interests=draw(st.frozensets(st.integers(1, 24))),
        purpose_one_treatment=draw(st.booleans()),
        publisher_cc=draw(letters),
        max_vendor_consent_id=max(vendor_consents, default=0) + draw(st.integers(0, 5)),
        vendor_consents=vendor_consents,
        max_vendor_legitimate_interest_id=max(vendor_li, default=0),
        vendor_legitimate_interests=vendor_li,
        publisher_restrictions=tuple(draw(st.lists(restriction, max_size=4))),
        disclosed_vendors=draw(st.none() | id_sets),
        allowed_vendors=draw(st.none() | id_sets),
        has_publisher_tc=has_publisher_tc,
        publisher_purpose_consents=draw(st.frozensets(st.integers(1, 24)))
        if has_publisher_tc
        else frozenset(),
        num_custom_purposes=custom if has_publisher_tc else 0,
        custom_purpose_consents=draw(st.frozensets(st.integers(1, custom)))
        if has_publisher_tc and custom
        else frozenset(),
    )


@settings(max_examples=150, deadline=None)
@given(tc_strings())
def test_encode_then_decode_is_the_identity(tc):
    text = tcf.encode(tc)
    assert set(text) <= set(BASE64URL_ALPHABET + ".")
    assert tcf.decode(text) == tc


def test_encoder_chooses_ranges_for_a_long_run_and_a_bitfield_for_a_dense_set():
    run = tcf.TCString(max_vendor_consent_id=2000, vendor_consents=frozenset(range(1, 2001)))
    dense = tcf.TCString(max_vendor_consent_id=1999, vendor_consents=frozenset(range(1, 2001, 2)))
    # 2,000 vendors in one run fit a 45-bit range entry; alternate ids need the bitfield.
    assert len(tcf.encode(run)) < len(tcf.encode(dense)) - 250
    assert tcf.decode(tcf.encode(run)) == run
    assert tcf.decode(tcf.encode(dense)) == dense


def test_encoder_refuses_fields_that_do_not_fit():
    with pytest.raises(ValueError, match="cmp_id=5000 does not fit in 12 bits"):
        tcf.encode(tcf.TCString(cmp_id=5000))
    with pytest.raises(ValueError, match="two upper-case letters"):
        tcf.encode(tcf.TCString(consent_language="en"))
    with pytest.raises(ValueError, match="timezone-aware"):
        tcf.encode(tcf.TCString(created=datetime(2024, 1, 1)))
