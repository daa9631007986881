"""ConsentContext from requests, and the redaction rules as tables."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.privacy import gpp, tcf, usprivacy
from openbid.privacy.consent import (
    NO_REDACTION,
    ConsentContext,
    Redaction,
    gdpr_redaction,
    redaction_for,
)

VENDOR = 42
OTHER_VENDOR = 99


def tc_string(**fields) -> str:
    return tcf.encode(tcf.TCString(**fields))


FULL_CONSENT = dict(
    purpose_consents=frozenset(range(1, 11)),
    vendor_consents=frozenset({VENDOR}),
    special_feature_opt_ins=frozenset({1}),
)

# --- ConsentContext.from_request ---------------------------------------------------------


def test_a_request_without_signals_needs_no_redaction(make_request):
    for bare in (make_request(), make_request(regs={}, user={}, device={})):
        consent = ConsentContext.from_request(bare)
        assert consent == ConsentContext()
        assert redaction_for(consent, VENDOR) == NO_REDACTION
        assert redaction_for(consent, None).is_noop


def test_gdpr_flag_and_tc_string_are_read(make_request):
    text = tc_string(**FULL_CONSENT)
    consent = ConsentContext.from_request(make_request(regs={"gdpr": 1}, user={"consent": text}))
    assert consent.gdpr_applies
    assert consent.tc == tcf.decode(text)
    assert consent.unreadable == ()


@pytest.mark.parametrize(
    ("regs", "user", "applies"),
    [
        ({"gdpr": 1}, {}, True),
        ({"gdpr": 0}, {"consent": "anything"}, False),
        ({}, {}, False),
        ({}, {"consent": tc_string()}, True),  # a TC string means a CMP ran under GDPR
        ({"gpp_sid": [2]}, {}, True),
        ({"gpp_sid": [7]}, {}, False),
        ({"ext": {"gdpr": 1}}, {}, True),  # OpenRTB 2.5 style
        ({"gdpr": 0, "ext": {"gdpr": 1}}, {}, False),  # 2.6 field wins
    ],
)
def test_when_gdpr_applies(make_request, regs, user, applies):
    assert ConsentContext.from_request(make_request(regs=regs, user=user)).gdpr_applies is applies


def test_consent_in_user_ext_is_read_when_user_consent_is_absent(make_request):
    text = tc_string(**FULL_CONSENT)
    consent = ConsentContext.from_request(
        make_request(regs={"gdpr": 1}, user={"ext": {"consent": text}})
    )
    assert consent.tc == tcf.decode(text)


def test_an_invalid_tc_string_is_unreadable_and_blocks_the_call(make_request):
    consent = ConsentContext.from_request(make_request(regs={"gdpr": 1}, user={"consent": "C0!"}))
    assert consent.tc is None
    assert consent.unreadable == ("tcf",)
    redaction = redaction_for(consent, VENDOR)
    assert redaction == BLOCK
    assert redaction.reasons == ("gdpr_no_valid_tc_string",)


def test_gpp_sections_apply_only_when_listed_in_gpp_sid(make_request):
    usnat = gpp.encode_usnat(gpp.UsNat(sale_opt_out=gpp.OPTED_OUT))
    tc_text = tc_string(**FULL_CONSENT)
    text = gpp.encode({2: tc_text, 7: usnat})
    both = ConsentContext.from_request(make_request(regs={"gpp": text, "gpp_sid": [2, 7]}))
    assert both.usnat is not None and both.usnat.opted_out
    assert both.tc == tcf.decode(tc_text)
    assert both.gdpr_applies
    only_us = ConsentContext.from_request(make_request(regs={"gpp": text, "gpp_sid": [7]}))
    assert only_us.tc is None and only_us.usnat is not None and not only_us.gdpr_applies
    no_sid = ConsentContext.from_request(make_request(regs={"gpp": text}))
    assert no_sid.tc is not None and no_sid.usnat is not None


def test_user_consent_takes_precedence_over_the_gpp_tcf_section(make_request):
    own = tc_string(cmp_id=7)
    in_gpp = tc_string(cmp_id=8)
    consent = ConsentContext.from_request(
        make_request(regs={"gdpr": 1, "gpp": gpp.encode({2: in_gpp})}, user={"consent": own})
    )
    assert consent.tc is not None and consent.tc.cmp_id == 7


@pytest.mark.parametrize(
    ("regs", "header", "gpc"),
    [
        ({}, None, False),
        ({"ext": {"gpc": 1}}, None, True),
        ({"ext": {"gpc": "1"}}, None, True),
        ({"ext": {"gpc": 0}}, None, False),
        ({"ext": [1, 2]}, None, False),  # not an object: ignored
        ({}, "1", True),
        ({}, " 1 ", True),
        ({}, "0", False),
        ({"gpp": gpp.encode({7: gpp.encode_usnat(gpp.UsNat(gpc=True))})}, None, True),
    ],
)
def test_global_privacy_control(make_request, regs, header, gpc):
    consent = ConsentContext.from_request(make_request(regs=regs), gpc_header=header)
    assert consent.gpc is gpc


# --- the rules, as tables -----------------------------------------------------------------

STRIP_IDS = Redaction(strip_user_ids=True, strip_device_ids=True)
COARSE = Redaction(round_geo=True, truncate_ip=True)
NO_PROFILE = Redaction(strip_user_data=True)
"""User data and eids stripped: no purpose 4 (personalised ads profile) consent."""
BLOCK = Redaction(
    block=True,
    strip_user_ids=True,
    strip_device_ids=True,
    strip_user_data=True,
    strip_fine_geo=True,
    round_geo=True,
    truncate_ip=True,
)


def restricted(purpose, kind, vendors=frozenset({VENDOR})):
    return (tcf.PublisherRestriction(purpose, kind, vendors),)


NOT_ALLOWED = tcf.RestrictionType.NOT_ALLOWED
REQUIRE_CONSENT = tcf.RestrictionType.REQUIRE_CONSENT
REQUIRE_LI = tcf.RestrictionType.REQUIRE_LEGITIMATE_INTEREST
LI_FOR_BASIC_ADS = dict(
    purpose_legitimate_interests=frozenset({2}),
    vendor_legitimate_interests=frozenset({VENDOR}),
    special_feature_opt_ins=frozenset({1}),
)

GDPR_TABLE = [
    # (case, TC string fields or None for no string, vendor id, expected)
    # An unreadable or missing TC string grants no more than a readable one without
    # purpose 2: the call does not go out.
    ("no TC string", None, VENDOR, BLOCK),
    ("malformed TC string", "C0!", VENDOR, BLOCK),
    ("malformed TC string, DSP without a vendor id", "C0!", None, BLOCK),
    ("empty TC string", "", VENDOR, BLOCK),
    ("everything consented", FULL_CONSENT, VENDOR, NO_REDACTION),
    ("DSP without a vendor id", FULL_CONSENT, None, BLOCK),
    ("vendor not consented", FULL_CONSENT, OTHER_VENDOR, BLOCK),
    (
        "no purpose 2 consent",
        FULL_CONSENT | {"purpose_consents": frozenset({1, 3, 4})},
        VENDOR,
        BLOCK,
    ),
    (
        "purpose 2 by legitimate interest, no purpose 1 or 4",
        LI_FOR_BASIC_ADS,
        VENDOR,
        STRIP_IDS | NO_PROFILE | COARSE,  # special feature 1 needs vendor consent
    ),
    (
        "purpose 2 LI but vendor LI missing",
        LI_FOR_BASIC_ADS | {"vendor_legitimate_interests": frozenset()},
        VENDOR,
        BLOCK,
    ),
    (
        "no purpose 1 consent: ids stripped",
        FULL_CONSENT | {"purpose_consents": frozenset({2, 4})},
        VENDOR,
        STRIP_IDS,
    ),
    (
        "no purpose 1 or 4 consent",
        FULL_CONSENT | {"purpose_consents": frozenset({2})},
        VENDOR,
        STRIP_IDS | NO_PROFILE,
    ),
    # TCF 2.2: purposes 3-6 rest on consent only; purpose 4 gates user data and eids.
    (
        "no purpose 4 consent: user data and eids stripped",
        FULL_CONSENT | {"purpose_consents": frozenset({1, 2, 3})},
        VENDOR,
        NO_PROFILE,
    ),
    (
        "purpose 4 by legitimate interest only",
        FULL_CONSENT
        | {
            "purpose_consents": frozenset({1, 2, 3}),
            "purpose_legitimate_interests": frozenset({4}),
            "vendor_legitimate_interests": frozenset({VENDOR}),
        },
        VENDOR,
        NO_PROFILE,
    ),
    (
        "purpose 4 consented but not the vendor (vendor LI for basic ads)",
        FULL_CONSENT
        | {
            "vendor_consents": frozenset({OTHER_VENDOR}),
            "purpose_legitimate_interests": frozenset({2, 4}),
            "vendor_legitimate_interests": frozenset({VENDOR}),
            "special_feature_opt_ins": frozenset(),
        },
        VENDOR,
        STRIP_IDS | NO_PROFILE | COARSE,
    ),
    (
        "purpose 4 not allowed by the publisher",
        FULL_CONSENT | {"publisher_restrictions": restricted(4, NOT_ALLOWED)},
        VENDOR,
        NO_PROFILE,
    ),
    (
        "publisher requires LI for purpose 4",
        FULL_CONSENT | {"publisher_restrictions": restricted(4, REQUIRE_LI)},
        VENDOR,
        NO_PROFILE,
    ),
    # Special features have no legitimate interest: the opt-in and vendor consent.
    (
        "special feature 1 with vendor LI only: geo coarse",
        FULL_CONSENT
        | {
            "purpose_consents": frozenset({1, 2, 4}),
            "vendor_consents": frozenset({OTHER_VENDOR}),
            "purpose_legitimate_interests": frozenset({2}),
            "vendor_legitimate_interests": frozenset({VENDOR, OTHER_VENDOR}),
        },
        VENDOR,
        STRIP_IDS | NO_PROFILE | COARSE,
    ),
    (
        "special feature 1 with vendor consent, purpose 2 by LI",
        FULL_CONSENT
        | {
            "purpose_consents": frozenset({1, 4}),
            "purpose_legitimate_interests": frozenset({2}),
            "vendor_legitimate_interests": frozenset({VENDOR}),
        },
        VENDOR,
        NO_REDACTION,
    ),
    (
        "no special feature 1: geo coarse",
        FULL_CONSENT | {"special_feature_opt_ins": frozenset()},
        VENDOR,
        COARSE,
    ),
    (
        "purpose 2 not allowed by the publisher",
        FULL_CONSENT | {"publisher_restrictions": restricted(2, NOT_ALLOWED)},
        VENDOR,
        BLOCK,
    ),
    (
        "restriction on another vendor is irrelevant",
        FULL_CONSENT
        | {"publisher_restrictions": restricted(2, NOT_ALLOWED, frozenset({OTHER_VENDOR}))},
        VENDOR,
        NO_REDACTION,
    ),
    (
        "publisher requires LI for purpose 2, user gave consent only",
        FULL_CONSENT | {"publisher_restrictions": restricted(2, REQUIRE_LI)},
        VENDOR,
        BLOCK,
    ),
    (
        "publisher requires consent for purpose 2, LI only",
        LI_FOR_BASIC_ADS | {"publisher_restrictions": restricted(2, REQUIRE_CONSENT)},
        VENDOR,
        BLOCK,
    ),
    (
        "purpose 1 not allowed by the publisher",
        FULL_CONSENT | {"publisher_restrictions": restricted(1, NOT_ALLOWED)},
        VENDOR,
        STRIP_IDS,
    ),
    (
        "purpose 1 cannot rest on LI even when the publisher asks",
        FULL_CONSENT | {"publisher_restrictions": restricted(1, REQUIRE_LI)},
        VENDOR,
        STRIP_IDS,
    ),
    (
        "nothing consented",
        {},
        VENDOR,
        BLOCK,
    ),
]


@pytest.mark.parametrize(
    ("fields", "vendor_id", "expected"),
    [row[1:] for row in GDPR_TABLE],
    ids=[row[0] for row in GDPR_TABLE],
)
def test_gdpr_rules(make_request, fields, vendor_id, expected):
    if fields is None:
        user = {}
    elif isinstance(fields, str):  # the TC string as sent
        user = {"consent": fields}
    else:
        user = {"consent": tc_string(**fields)}
    consent = ConsentContext.from_request(make_request(regs={"gdpr": 1}, user=user))
    assert redaction_for(consent, vendor_id) == expected


def test_gdpr_rules_do_not_apply_when_gdpr_does_not(make_request):
    user = {"consent": tc_string()}  # nothing consented ...
    consent = ConsentContext.from_request(make_request(regs={"gdpr": 0}, user=user))
    assert redaction_for(consent, VENDOR) == NO_REDACTION  # ... but GDPR does not apply


COPPA = Redaction(
    strip_user_ids=True,
    strip_device_ids=True,
    strip_user_data=True,
    strip_fine_geo=True,
    round_geo=True,
    truncate_ip=True,
)
US_OPT_OUT = Redaction(
    strip_user_ids=True,
    strip_device_ids=True,
    strip_user_data=True,
    round_geo=True,
    truncate_ip=True,
)
"""Prebid's CCPA scrubbing and more: ids, user data and eids, IP truncated, geo rounded."""


def usnat(**fields) -> dict:
    """regs with a GPP string holding one US National section."""
    return {"gpp": gpp.encode({7: gpp.encode_usnat(gpp.UsNat(**fields))})}


def us_state(section_id, text, **regs) -> dict:
    """regs with a GPP string holding one US state section (as encoded text)."""
    return {"gpp": gpp.encode({section_id: text}), **regs}


def state(section_id, **fields) -> dict:
    return us_state(section_id, gpp.encode_us_state(gpp.UsState(section_id, **fields)))


PRECISE_GEO_REFUSED = (0,) * 7 + (1,) + (0,) * 4
# The IAB reference encoder's (iabgpp-es) test strings for the state sections.
USCA_SPEC = "BVWSSSVY.YA"  # sale and sharing opted out, a minor's consent refused, GPC
USVA_SPEC = "BVWSSVY"  # sale and targeted ads opted out, a known child
USVA_DEFAULT = "BAAAABA"  # nothing applicable
USCO_DEFAULT = "BAAAAEA.QA"
USUT_DEFAULT = "BAAAAAQA"
USCT_DEFAULT = "BAAAAAEA.QA"
US_TABLE = [
    ("coppa", {"coppa": 1}, {}, None, COPPA),
    ("coppa 0", {"coppa": 0}, {}, None, NO_REDACTION),
    ("usp opted out of sale", {"us_privacy": "1YYN"}, {}, None, US_OPT_OUT),
    ("usp not opted out", {"us_privacy": "1YNN"}, {}, None, NO_REDACTION),
    ("usp not applicable", {"us_privacy": "1---"}, {}, None, NO_REDACTION),
    ("usp unreadable", {"us_privacy": "yes"}, {}, None, US_OPT_OUT),
    ("gpc in regs.ext", {"ext": {"gpc": 1}}, {}, None, US_OPT_OUT),
    ("gpc header", {}, {}, "1", US_OPT_OUT),
    # Prebid's LMT scrubbing: device and user ids, IP truncated, geo rounded; DNT alike.
    ("lmt", {}, {"lmt": 1}, None, STRIP_IDS | COARSE),
    ("dnt", {}, {"dnt": 1}, None, STRIP_IDS | COARSE),
    ("lmt 0", {}, {"lmt": 0, "dnt": 0}, None, NO_REDACTION),
    ("gpp unreadable", {"gpp": "DBABMA~!"}, {}, None, US_OPT_OUT),
    ("usnat sale opt-out", usnat(sale_opt_out=gpp.OPTED_OUT), {}, None, US_OPT_OUT),
    ("usnat sharing opt-out", usnat(sharing_opt_out=gpp.OPTED_OUT), {}, None, US_OPT_OUT),
    (
        "usnat targeted ads opt-out",
        usnat(targeted_advertising_opt_out=gpp.OPTED_OUT),
        {},
        None,
        US_OPT_OUT,
    ),
    ("usnat did not opt out", usnat(sale_opt_out=gpp.DID_NOT_OPT_OUT), {}, None, NO_REDACTION),
    # No notice, no choice: read as an opt-out.
    (
        "usnat sale opt-out notice not provided",
        usnat(sale_opt_out_notice=gpp.NOTICE_NOT_PROVIDED),
        {},
        None,
        US_OPT_OUT,
    ),
    (
        "usnat sharing opt-out notice not provided",
        usnat(sharing_opt_out_notice=gpp.NOTICE_NOT_PROVIDED),
        {},
        None,
        US_OPT_OUT,
    ),
    (
        "usnat targeted ads opt-out notice not provided",
        usnat(targeted_advertising_opt_out_notice=gpp.NOTICE_NOT_PROVIDED),
        {},
        None,
        US_OPT_OUT,
    ),
    (
        "usnat sharing notice not provided",
        usnat(sharing_notice=gpp.NOTICE_NOT_PROVIDED),
        {},
        None,
        US_OPT_OUT,
    ),
    (
        "usnat notices given, did not opt out",
        usnat(
            sale_opt_out_notice=1,
            sharing_opt_out_notice=1,
            targeted_advertising_opt_out_notice=1,
            sale_opt_out=gpp.DID_NOT_OPT_OUT,
        ),
        {},
        None,
        NO_REDACTION,
    ),
    ("usnat gpc subsection", usnat(gpc=True), {}, None, US_OPT_OUT),
    ("usnat service provider mode", usnat(mspa_service_provider_mode=1), {}, None, US_OPT_OUT),
    # A known child: COPPA-level redaction.
    (
        "usnat 13-16 consent refused",
        usnat(known_child_sensitive_data_consents=(1, 0)),
        {},
        None,
        COPPA,
    ),
    (
        "usnat child under 13, even consented",
        usnat(known_child_sensitive_data_consents=(0, 2)),
        {},
        None,
        COPPA,
    ),
    (
        "usnat 13-16 consent given",
        usnat(known_child_sensitive_data_consents=(2, 0)),
        {},
        None,
        NO_REDACTION,
    ),
    (
        "usnat v2 16-17 consent refused",
        usnat(
            version=2,
            sensitive_data_processing=(0,) * 16,
            known_child_sensitive_data_consents=(0, 0, 1),
        ),
        {},
        None,
        COPPA,
    ),
    (
        "usnat v2 16-17 consent given",
        usnat(
            version=2,
            sensitive_data_processing=(0,) * 16,
            known_child_sensitive_data_consents=(0, 0, 2),
        ),
        {},
        None,
        NO_REDACTION,
    ),
    (
        "usnat opt-out but section not applicable",
        usnat(sale_opt_out=gpp.OPTED_OUT) | {"gpp_sid": [5]},  # only Canada's section applies
        {},
        None,
        NO_REDACTION,
    ),
    (
        "usnat precise geolocation not consented",
        usnat(sensitive_data_processing=PRECISE_GEO_REFUSED),
        {},
        None,
        COARSE,
    ),
    (
        "usnat no sensitive data notice",
        usnat(sensitive_data_limit_use_notice=gpp.NOTICE_NOT_PROVIDED),
        {},
        None,
        COARSE,
    ),
    # US state sections 8-12, decoded; later ones applicable but undecoded read as opt-outs.
    ("usca spec example", us_state(8, USCA_SPEC), {}, None, COPPA),
    ("usca sale opt-out", state(8, sale_opt_out=gpp.OPTED_OUT), {}, None, US_OPT_OUT),
    ("usca sharing opt-out", state(8, sharing_opt_out=gpp.OPTED_OUT), {}, None, US_OPT_OUT),
    (
        "usca precise geolocation opted out",
        state(8, sensitive_data_processing=(0, 0, 1) + (0,) * 6),
        {},
        None,
        COARSE,
    ),
    (
        "usca minor's consent given",
        state(8, known_child_sensitive_data_consents=(2, 2)),
        {},
        None,
        COPPA,
    ),
    ("usva spec example", us_state(9, USVA_SPEC), {}, None, COPPA),
    ("usva nothing applicable", us_state(9, USVA_DEFAULT), {}, None, NO_REDACTION),
    (
        "usva targeted ads opt-out",
        state(9, targeted_advertising_opt_out=gpp.OPTED_OUT),
        {},
        None,
        US_OPT_OUT,
    ),
    (
        "usva sale opt-out notice not provided",
        state(9, sale_opt_out_notice=gpp.NOTICE_NOT_PROVIDED),
        {},
        None,
        US_OPT_OUT,
    ),
    (
        "usva precise geolocation not consented",
        state(9, sensitive_data_processing=(0,) * 7 + (1,)),
        {},
        None,
        COARSE,
    ),
    ("usco nothing applicable", us_state(10, USCO_DEFAULT), {}, None, NO_REDACTION),
    ("usco gpc", state(10, gpc=True), {}, None, US_OPT_OUT),
    ("usco sale opt-out", state(10, sale_opt_out=gpp.OPTED_OUT), {}, None, US_OPT_OUT),
    ("usut nothing applicable", us_state(11, USUT_DEFAULT), {}, None, NO_REDACTION),
    ("usut sale opt-out", state(11, sale_opt_out=gpp.OPTED_OUT), {}, None, US_OPT_OUT),
    (
        "usut sensitive data opt-out notice not provided",
        state(11, sensitive_data_processing_opt_out_notice=gpp.NOTICE_NOT_PROVIDED),
        {},
        None,
        COARSE,
    ),
    ("usct nothing applicable", us_state(12, USCT_DEFAULT), {}, None, NO_REDACTION),
    ("usct service provider mode", state(12, mspa_service_provider_mode=1), {}, None, US_OPT_OUT),
    (
        "usct known child",
        state(12, known_child_sensitive_data_consents=(0, 0, 2)),
        {},
        None,
        COPPA,
    ),
    (
        "usca opted out but only usnat applies",
        state(8, sale_opt_out=gpp.OPTED_OUT) | {"gpp_sid": [7]},
        {},
        None,
        US_OPT_OUT,  # usnat applies but is missing from the string
    ),
    (
        "usca opted out but only Canada applies",
        state(8, sale_opt_out=gpp.OPTED_OUT) | {"gpp_sid": [5]},
        {},
        None,
        NO_REDACTION,
    ),
    ("undecoded state section (Florida, 13)", us_state(13, "BAAAAAA"), {}, None, US_OPT_OUT),
    ("undecoded state section (27)", us_state(27, "BAAAAAA"), {}, None, US_OPT_OUT),
    (
        "undecoded state section not applicable",
        us_state(13, "BAAAAAA", gpp_sid=[5]),
        {},
        None,
        NO_REDACTION,
    ),
    ("applicable state section missing", {"gpp_sid": [8]}, {}, None, US_OPT_OUT),
    (
        "applicable usnat missing from the string",
        us_state(9, USVA_DEFAULT, gpp_sid=[7, 9]),
        {},
        None,
        US_OPT_OUT,
    ),
    (
        "coppa and lmt together",
        {"coppa": 1},
        {"lmt": 1},
        None,
        COPPA,
    ),
]


@pytest.mark.parametrize(
    ("regs", "device", "header", "expected"),
    [row[1:] for row in US_TABLE],
    ids=[row[0] for row in US_TABLE],
)
def test_us_and_device_rules(make_request, regs, device, header, expected):
    consent = ConsentContext.from_request(make_request(regs=regs, device=device), gpc_header=header)
    assert redaction_for(consent, VENDOR) == expected
    assert redaction_for(consent, None) == expected  # none of these depend on the vendor


def test_rules_combine_across_regimes(make_request):
    user = {"consent": tc_string(**FULL_CONSENT | {"special_feature_opt_ins": frozenset()})}
    consent = ConsentContext.from_request(
        make_request(regs={"gdpr": 1, "us_privacy": "1YYN"}, user=user, device={"lmt": 1})
    )
    redaction = redaction_for(consent, VENDOR)
    assert redaction == US_OPT_OUT
    assert set(redaction.reasons) == {"us_opt_out", "lmt", "gdpr_no_precise_geo"}


# --- properties ---------------------------------------------------------------------------


@st.composite
def consents(draw):
    ids = st.frozensets(st.integers(1, 12), max_size=6)
    fields = dict(
        purpose_consents=draw(ids),
        purpose_legitimate_interests=draw(ids),
        vendor_consents=draw(st.frozensets(st.integers(1, 5), max_size=4)),
        vendor_legitimate_interests=draw(st.frozensets(st.integers(1, 5), max_size=4)),
        special_feature_opt_ins=draw(st.frozensets(st.integers(1, 2))),
        publisher_restrictions=tuple(
            draw(
                st.lists(
                    st.builds(
                        tcf.PublisherRestriction,
                        st.integers(1, 3),
                        st.sampled_from(list(tcf.RestrictionType)),
                        st.frozensets(st.integers(1, 5), min_size=1, max_size=3),
                    ),
                    max_size=2,
                )
            )
        ),
    )
    return tcf.TCString(**fields)


@settings(max_examples=200, deadline=None)
@given(consents(), st.none() | st.integers(1, 5))
def test_gdpr_redaction_is_never_laxer_than_no_consent_without_purpose_consent(tc, vendor_id):
    """Removing every consent and LI can only make the redaction stricter."""
    stripped = tcf.TCString(special_feature_opt_ins=tc.special_feature_opt_ins)
    loose, strict = gdpr_redaction(tc, vendor_id), gdpr_redaction(stripped, vendor_id)
    for flag in FLAGS:
        assert getattr(loose, flag) <= getattr(strict, flag)
    assert strict.block  # with no basis for purpose 2 nobody receives the request
    if not loose.block and not loose.strip_user_ids:
        assert 1 in tc.purpose_consents and vendor_id in tc.vendor_consents
    if not loose.block and not loose.strip_user_data:
        assert 4 in tc.purpose_consents and vendor_id in tc.vendor_consents


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=8))
def test_from_request_never_raises_on_any_signal_text(
    make_request, consent_text, gpp_text, usp_text
):
    consent = ConsentContext.from_request(
        make_request(
            regs={"gdpr": 1, "gpp": gpp_text, "us_privacy": usp_text},
            user={"consent": consent_text},
        )
    )
    redaction = redaction_for(consent, VENDOR)
    if consent.tc is None:
        assert redaction.strip_user_ids and redaction.round_geo


FLAGS = tuple(n for n in Redaction.__dataclass_fields__ if n != "reasons" and not n.startswith("_"))
RESTRICTIVE_SIGNALS = {
    "coppa": {"coppa": True},
    "gpc": {"gpc": True},
    "lmt": {"lmt": True},
    "dnt": {"dnt": True},
    "us_opt_out": {"us_privacy": usprivacy.parse("1YYN")},
    "usnat_opt_out": {"usnat": gpp.UsNat(sharing_opt_out=gpp.OPTED_OUT)},
    "unreadable_gpp": {"unreadable": ("gpp",)},
}


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "gdpr_applies": st.booleans(),
            "coppa": st.booleans(),
            "gpc": st.booleans(),
            "lmt": st.booleans(),
            "dnt": st.booleans(),
        }
    ),
    st.none() | consents(),
    st.sampled_from(sorted(RESTRICTIVE_SIGNALS)),
    st.none() | st.integers(1, 5),
)
def test_adding_a_restrictive_signal_never_loosens_a_redaction(fields, tc, signal, vendor_id):
    before = ConsentContext(tc=tc, **fields)
    after = ConsentContext(tc=tc, **(fields | RESTRICTIVE_SIGNALS[signal]))
    loose, strict = redaction_for(before, vendor_id), redaction_for(after, vendor_id)
    for flag in FLAGS:
        assert getattr(loose, flag) <= getattr(strict, flag), flag
    assert not strict.is_noop


def test_malformed_or_displaced_signals_never_grant_more(make_request):
    # regs.ext.gdpr as a 2.5-style string, or unreadable: GDPR applies.
    for flag in ("1", 1, "yes", [1]):
        consent = ConsentContext.from_request(make_request(regs={"ext": {"gdpr": flag}}))
        assert consent.gdpr_applies, flag
        assert redaction_for(consent, vendor_id=7).block, flag
    assert not ConsentContext.from_request(make_request(regs={"ext": {"gdpr": "0"}})).gdpr_applies
    # An empty 2.6 us_privacy does not hide the opt-out in regs.ext.
    consent = ConsentContext.from_request(
        make_request(regs={"us_privacy": "", "ext": {"us_privacy": "1YYN"}})
    )
    assert consent.us_opt_out
    # A TC string in GPP with no gpp_sid is the one in force, so GDPR applies to it.
    nothing = tc_string()
    consent = ConsentContext.from_request(make_request(regs={"gpp": gpp.encode({2: nothing})}))
    assert consent.gdpr_applies and redaction_for(consent, vendor_id=7).block
