"""The TC strings the simulated publishers send are valid TCF v2 core strings."""

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

from openbid.sim.tcf import TcfConsent, encode_tc_string

VECTORS = Path(__file__).parents[3] / "shared" / "data" / "tcf" / "v2"


def _bits(tc_string: str) -> str:
    core = tc_string.split(".")[0]
    raw = base64.urlsafe_b64decode(core + "=" * (-len(core) % 4))
    return "".join(format(byte, "08b") for byte in raw)


def _read_core(tc_string: str) -> dict:
    """An independent reader of the core segment fields the encoder writes."""
    bits = _bits(tc_string)
    position = 0

    def take(width: int) -> int:
        nonlocal position
        value = int(bits[position : position + width], 2)
        position += width
        return value

    def ids(width: int) -> set[int]:
        return {i + 1 for i in range(width) if take(1)}

    fields = {"version": take(6), "created": take(36), "last_updated": take(36)}
    fields |= {"cmp_id": take(12), "cmp_version": take(12), "consent_screen": take(6)}
    fields["language"] = chr(take(6) + 65) + chr(take(6) + 65)
    fields |= {"vendor_list_version": take(12), "policy_version": take(6)}
    fields |= {"service_specified": take(1), "non_standard": take(1)}
    fields["special_features"] = ids(12)
    fields["purposes"] = ids(24)
    fields["purposes_li"] = ids(24)
    fields["purpose_one_treatment"] = take(1)
    fields["publisher_cc"] = chr(take(6) + 65) + chr(take(6) + 65)
    max_vendor = take(16)
    assert take(1) == 0
    fields["vendors"] = ids(max_vendor)
    max_li = take(16)
    assert take(1) == 0
    fields["vendors_li"] = ids(max_li)
    fields["publisher_restrictions"] = take(12)
    return fields


def _decoded_set(mapping: dict) -> frozenset[int]:
    return frozenset(int(key) for key, value in mapping.items() if value)


def test_reproduces_a_published_vector_bit_for_bit():
    vector = json.loads((VECTORS / "consent_b.json").read_text())
    core = vector["core"]
    original = _read_core(vector["consent"])
    consent = TcfConsent(
        # The vector's JSON rounds the times to seconds; the string keeps deciseconds.
        created=datetime.fromtimestamp(original["created"] / 10, UTC),
        last_updated=datetime.fromtimestamp(original["last_updated"] / 10, UTC),
        cmp_id=core["cmpId"],
        cmp_version=core["cmpVersion"],
        consent_screen=core["consentScreen"],
        consent_language=core["consentLanguage"],
        vendor_list_version=core["vendorListVersion"],
        policy_version=core["policyVersion"],
        is_service_specified=core["isServiceSpecified"],
        use_non_standard_texts=core["useNonStandardStacks"],
        special_feature_optins=_decoded_set(core["specialFeatureOptins"]),
        purpose_consents=_decoded_set(core["purposeConsents"]),
        purpose_legitimate_interests=_decoded_set(core["purposeLegitimateInterests"]),
        purpose_one_treatment=core["purposeOneTreatment"],
        publisher_country_code=core["publisherCountryCode"],
        vendor_consents=_decoded_set(core["vendorConsents"]),
        vendor_legitimate_interests=_decoded_set(core["vendorLegitimateInterests"]),
        max_vendor_id=core["maxVendorId"],
    )
    assert encode_tc_string(consent) == vector["consent"]


def test_fields_round_trip():
    when = datetime(2024, 2, 1, 12, 30, tzinfo=UTC)
    consent = TcfConsent(
        created=when,
        last_updated=when,
        cmp_id=300,
        consent_language="FR",
        purpose_consents=frozenset({1, 3, 4}),
        vendor_consents=frozenset({10, 755}),
        publisher_country_code="DE",
    )
    fields = _read_core(encode_tc_string(consent))
    assert fields["version"] == 2
    assert fields["created"] == round(when.timestamp() * 10)
    assert fields["cmp_id"] == 300
    assert fields["language"] == "FR" and fields["publisher_cc"] == "DE"
    assert fields["purposes"] == {1, 3, 4}
    assert fields["vendors"] == {10, 755}
    assert fields["vendors_li"] == set()
    assert fields["publisher_restrictions"] == 0


def test_market_variants_say_what_their_config_says(market):
    vendors = {dsp.config.vendor_id for dsp in market.dsps}
    for name, variant in market.config.traffic.consent.items():
        fields = _read_core(market.consent_strings[name])
        assert fields["purposes"] == set(variant.purposes)
        expected = {"all": vendors, "none": set(), "half": {v for v in vendors if v % 2 == 0}}
        assert fields["vendors"] == expected[variant.vendors]


def test_a_buyer_vendor_id_is_granted_consent_by_the_variants_that_accept_it_not_by_all():
    from openbid.demo_loop import DEMO_VENDOR_ID
    from openbid.sim.market import Market

    market = Market.load("default", buyer_vendor_ids=[DEMO_VENDOR_ID])
    consenting = {
        name
        for name, string in market.consent_strings.items()
        if DEMO_VENDOR_ID in _read_core(string)["vendors"]
    }
    variants = market.config.traffic.consent
    assert consenting == {name for name, v in variants.items() if v.vendors == "all"}
    share = sum(variants[name].share for name in consenting) / sum(
        v.share for v in variants.values()
    )
    assert 0.5 < share < 1.0
    # the DSPs' consent is what it was without the buyer
    plain = Market.load("default")
    for name, string in plain.consent_strings.items():
        assert _read_core(string)["vendors"] == _read_core(market.consent_strings[name])[
            "vendors"
        ] - {DEMO_VENDOR_ID}
