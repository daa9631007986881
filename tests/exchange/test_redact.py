"""`apply_redaction` and `truncate_ip`: what each redaction flag does to a request."""

import ipaddress

import msgspec
import pytest

from openbid.exchange.redact import apply_redaction, truncate_ip
from openbid.openrtb import decode_bid_request, encode
from openbid.privacy.consent import NO_REDACTION, ConsentContext, Redaction, redaction_for

IMP = [{"id": "1", "banner": {"w": 300, "h": 250}}]


def request_with(**parts):
    """A bid request decoded by the real decoder (unknown fields captured as it does)."""
    return decode_bid_request(msgspec.json.encode({"id": "r1", "imp": IMP, **parts}))


def redacted(redaction, **parts):
    """The request as the partner receives it (JSON, unknown fields spliced back)."""
    return msgspec.json.decode(encode(apply_redaction(request_with(**parts), redaction)))


# --- truncate_ip --------------------------------------------------------------------------

TRUNCATE_IP_TABLE = [
    # (case, address, expected)
    ("ipv4 to its /24", "203.0.113.77", "203.0.113.0"),
    ("ipv4 already truncated", "203.0.113.0", "203.0.113.0"),
    ("ipv6 to its /56", "2001:db8:1234:5678::1", "2001:db8:1234:5600::"),
    ("unparsable is dropped", "x", None),
    ("empty stays empty", "", ""),
    ("absent stays absent", None, None),
    # 6to4 (2002::/16) carries the IPv4 address in bits 16-48: a /56 would keep all of it.
    ("6to4 keeps the embedded ipv4 /24", "2002:cb00:714d:1234::1", "2002:cb00:7100::"),
    # IPv4-mapped and NAT64 carry it in the last 32 bits: keep its /24, as for plain IPv4.
    ("ipv4-mapped keeps the ipv4 /24", "::ffff:203.0.113.77", "::ffff:203.0.113.0"),
    ("ipv4-mapped in hex form", "::ffff:cb00:714d", "::ffff:203.0.113.0"),
    ("nat64 keeps the ipv4 /24", "64:ff9b::203.0.113.77", "64:ff9b::203.0.113.0"),
    ("nat64 in hex form", "64:ff9b::cb00:714d", "64:ff9b::203.0.113.0"),
    ("scoped ipv6", "fe80::1:2:3:4%eth0", "fe80::"),
]


@pytest.mark.parametrize(
    ("address", "expected"),
    [row[1:] for row in TRUNCATE_IP_TABLE],
    ids=[row[0] for row in TRUNCATE_IP_TABLE],
)
def test_truncate_ip(address, expected):
    result = truncate_ip(address)
    if expected and ":" in expected:  # compare addresses, not one spelling of them
        assert ipaddress.ip_address(result) == ipaddress.ip_address(expected)
    else:
        assert result == expected


def test_truncate_ip_never_keeps_an_embedded_ipv4_last_octet():
    for address in ("2002:cb00:714d::", "::ffff:203.0.113.77", "64:ff9b::203.0.113.77"):
        truncated = ipaddress.IPv6Address(truncate_ip(address))
        assert truncated.sixtofour in (None, ipaddress.IPv4Address("203.0.113.0"))
        assert truncated.ipv4_mapped in (None, ipaddress.IPv4Address("203.0.113.0"))
        assert int(truncated) & 0xFF == 0


# --- identifiers hidden in ext and unknown fields -------------------------------------------

STRIP_USER_IDS = Redaction(strip_user_ids=True)
STRIP_DEVICE_IDS = Redaction(strip_device_ids=True)
STRIP_USER_DATA = Redaction(strip_user_data=True)
EIDS = [{"source": "id5-sync.com", "uids": [{"id": "ID5*xyz", "atype": 1}]}]
USER_WITH_HIDDEN_IDS = {
    "id": "u1",
    "consent": "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA",
    "ext": {
        "consent": "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA",
        "eids": EIDS,
        "data": {"segments": ["sports"]},
        "hem": "5d41402abc4b2a76b9719d911017c592",
        "prebid": {"buyeruids": {"dsp": "b-7"}},
    },
    "sha256_email": "2cf24dba5fb0a30e26e83b2ac5b9e29e",  # unknown to OpenRTB 2.6
    "future_id": {"id": "z"},
}
DEVICE_WITH_HIDDEN_IDS = {
    "ua": "Mozilla/5.0",
    "ifa": "ifa-1",
    "ext": {"idfv": "idfv-1", "atts": 3, "ifa_type": "idfa", "gaid": "g-1"},
    "android_id": "a-1",  # unknown to OpenRTB 2.6
}
USER_KEPT_WHEN_STRIPPED = {
    "consent": "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA",
    "ext": {"consent": "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"},
}
HIDDEN_ID_TABLE = [
    # (case, redaction, user or None, device or None, expected user, expected device)
    (
        "user ids: ext keeps consent only, unknown user fields dropped",
        STRIP_USER_IDS,
        USER_WITH_HIDDEN_IDS,
        None,
        USER_KEPT_WHEN_STRIPPED,
        None,
    ),
    (
        "user data: eids and ext data keys go with it",
        STRIP_USER_DATA,
        USER_WITH_HIDDEN_IDS | {"yob": 1990, "eids": EIDS},
        None,
        {"id": "u1"} | USER_KEPT_WHEN_STRIPPED,
        None,
    ),
    (
        "user ids: customdata (the bidder's cookie data) goes too",
        STRIP_USER_IDS,
        {"customdata": "dsp-cookie-uid-123", "yob": 1980},
        None,
        {"yob": 1980},
        None,
    ),
    (
        "user ext that is not an object is dropped",
        STRIP_USER_IDS,
        {"id": "u1", "ext": ["x"]},
        None,
        {},
        None,
    ),
    (
        "user ext with nothing harmless is dropped",
        STRIP_USER_IDS,
        {"id": "u1", "ext": {"eids": EIDS}},
        None,
        {},
        None,
    ),
    (
        "device ids: ext keeps atts and ifa_type, unknown device fields dropped",
        STRIP_DEVICE_IDS,
        None,
        DEVICE_WITH_HIDDEN_IDS,
        None,
        {"ua": "Mozilla/5.0", "ext": {"atts": 3, "ifa_type": "idfa"}},
    ),
    (
        "device ids stripped leave user ext alone",
        STRIP_DEVICE_IDS,
        {"id": "u1", "ext": {"eids": EIDS}},
        {"ifa": "ifa-1", "ext": {"idfv": "v"}},
        {"id": "u1", "ext": {"eids": EIDS}},
        {},
    ),
    (
        "user ids stripped leave device ext alone",
        STRIP_USER_IDS,
        None,
        DEVICE_WITH_HIDDEN_IDS,
        None,
        DEVICE_WITH_HIDDEN_IDS,
    ),
]


@pytest.mark.parametrize(
    ("redaction", "user", "device", "expected_user", "expected_device"),
    [row[1:] for row in HIDDEN_ID_TABLE],
    ids=[row[0] for row in HIDDEN_ID_TABLE],
)
def test_identifiers_in_ext_and_unknown_fields_are_stripped(
    redaction, user, device, expected_user, expected_device
):
    parts = {name: value for name, value in (("user", user), ("device", device)) if value}
    out = redacted(redaction, **parts)
    assert out.get("user") == expected_user
    assert out.get("device") == expected_device


def test_no_redaction_returns_the_same_request_object():
    request = request_with(user=USER_WITH_HIDDEN_IDS, device=DEVICE_WITH_HIDDEN_IDS)
    assert apply_redaction(request, NO_REDACTION) is request


def test_the_original_request_is_never_changed():
    request = request_with(user=USER_WITH_HIDDEN_IDS, device=DEVICE_WITH_HIDDEN_IDS)
    before = encode(request)
    everything = Redaction(
        strip_user_ids=True,
        strip_device_ids=True,
        strip_user_data=True,
        round_geo=True,
        truncate_ip=True,
    )
    apply_redaction(request, everything)
    assert encode(request) == before


# --- geo ----------------------------------------------------------------------------------

FINE_GEO = {
    "lat": 51.514249,
    "lon": -0.093145,
    "type": 1,
    "accuracy": 20,
    "lastfix": 30,
    "country": "GBR",
    "region": "ENG",
    "metro": "826044",
    "city": "London",
    "zip": "EC2V 7HH",
    "utcoffset": 60,
    "ext": {"street": "Gresham St"},
}
COUNTRY_AND_REGION = {"type": 1, "country": "GBR", "region": "ENG", "utcoffset": 60}
ROUNDED = {k: v for k, v in FINE_GEO.items() if k != "ext"} | {
    "lat": 51.51,
    "lon": -0.09,
    "accuracy": 1000,
}
GEO_TABLE = [
    # (case, redaction, expected device.geo, expected user.geo)
    ("round_geo rounds lat/lon, drops ext", Redaction(round_geo=True), ROUNDED, ROUNDED),
    (
        "strip_fine_geo (COPPA) keeps country and region, drops user.geo",
        Redaction(strip_fine_geo=True, round_geo=True),
        COUNTRY_AND_REGION,
        None,
    ),
    ("strip_user_data leaves geo alone", Redaction(strip_user_data=True), FINE_GEO, FINE_GEO),
]


@pytest.mark.parametrize(
    ("redaction", "device_geo", "user_geo"),
    [row[1:] for row in GEO_TABLE],
    ids=[row[0] for row in GEO_TABLE],
)
def test_geo_redaction(redaction, device_geo, user_geo):
    out = redacted(redaction, device={"geo": FINE_GEO}, user={"geo": FINE_GEO})
    assert out["device"].get("geo") == device_geo
    assert out.get("user", {}).get("geo") == user_geo


def test_round_geo_drops_a_precise_fix_hidden_in_ext_or_unknown_fields():
    hidden = {"country": "GBR", "ext": {"lat": 51.514249}, "gps": [51.514249, -0.093145]}
    out = redacted(Redaction(round_geo=True), device={"geo": hidden}, user={"geo": hidden})
    assert out["device"]["geo"] == {"country": "GBR"}
    assert out["user"]["geo"] == {"country": "GBR"}


def test_coppa_level_redaction_of_a_whole_request():
    coppa = Redaction(
        strip_user_ids=True,
        strip_device_ids=True,
        strip_user_data=True,
        strip_fine_geo=True,
        round_geo=True,
        truncate_ip=True,
    )
    out = redacted(
        coppa,
        device={"ip": "203.0.113.77", "ipv6": "2002:cb00:714d::1", "ifa": "i", "geo": FINE_GEO},
        user={"id": "u", "yob": 2015, "gender": "F", "geo": FINE_GEO, "ext": {"eids": EIDS}},
    )
    assert out["device"] == {
        "geo": COUNTRY_AND_REGION,
        "ip": "203.0.113.0",
        "ipv6": "2002:cb00:7100::",
    }
    assert out["user"] == {}


# --- from the request's signals to what the partner receives --------------------------------

FULL_USER = {"id": "u1", "buyeruid": "b1", "yob": 1990, "keywords": "golf", "eids": EIDS}
FULL_DEVICE = {"ifa": "ifa-1", "ip": "203.0.113.77", "geo": {"lat": 51.514249, "lon": -0.093145}}
SIGNALS_TABLE = [
    # (case, regs, device overrides, expected user, expected device)
    ("no signals", {}, {}, FULL_USER, FULL_DEVICE),
    (
        "usp opt-out: ids, user data and eids go, IP and geo coarse",
        {"us_privacy": "1YYN"},
        {},
        {},
        {"ip": "203.0.113.0", "geo": {"lat": 51.51, "lon": -0.09}},
    ),
    (
        "lmt: ids go, IP and geo coarse, user data stays",
        {},
        {"lmt": 1},
        {"yob": 1990, "keywords": "golf"},
        {"lmt": 1, "ip": "203.0.113.0", "geo": {"lat": 51.51, "lon": -0.09}},
    ),
    ("coppa", {"coppa": 1}, {}, {}, {"ip": "203.0.113.0", "geo": {}}),
]


@pytest.mark.parametrize(
    ("regs", "device", "expected_user", "expected_device"),
    [row[1:] for row in SIGNALS_TABLE],
    ids=[row[0] for row in SIGNALS_TABLE],
)
def test_signals_to_what_the_partner_receives(regs, device, expected_user, expected_device):
    request = request_with(regs=regs, user=FULL_USER, device=FULL_DEVICE | device)
    redaction = redaction_for(ConsentContext.from_request(request), vendor_id=42)
    out = msgspec.json.decode(encode(apply_redaction(request, redaction)))
    assert out.get("user", {}) == expected_user
    assert out["device"] == expected_device


# --- eids outside user: source, imp, site, app ----------------------------------------------

SCHAIN = {"complete": 1, "ver": "1.0", "nodes": [{"asi": "ssp.example", "sid": "42", "hp": 1}]}
BIDDER_PARAMS = {"dsp": {"placementId": 7, "uid": "publisher-slot-uid"}}
IMP_EXT = {
    "prebid": {"bidder": BIDDER_PARAMS},
    "dsp": {"placementId": 7},  # the older form: params under the bidder's name
    "data": {"pbadslot": "/1234/home", "adserver": {"name": "gam", "adslot": "/1234/home"}},
    "gpid": "/1234/home",
    "tid": "t-1",
}
SITE_EXT = {"data": {"section": "sports"}, "amp": 0}
SOURCE_EXT = {"schain": SCHAIN, "omidpn": "vendor", "omidpv": "1.0"}


def with_eids(ext):
    return ext | {"eids": EIDS}


def parts_with_eids_everywhere():
    return dict(
        source={"ext": with_eids(SOURCE_EXT)},
        imp=[{"id": "1", "banner": {"w": 300, "h": 250}, "ext": with_eids(IMP_EXT)}],
        site={"domain": "example.com", "ext": with_eids(SITE_EXT)},
        user={"id": "u1", "eids": EIDS},
    )


@pytest.mark.parametrize(
    "redaction", [STRIP_USER_IDS, STRIP_USER_DATA], ids=["user ids", "user data"]
)
def test_eids_go_from_every_ext_that_carries_them(redaction):
    out = redacted(redaction, **parts_with_eids_everywhere())
    assert out["source"] == {"ext": SOURCE_EXT}  # schain and the rest stay
    assert out["imp"][0]["ext"] == IMP_EXT  # bidder params, slot data, gpid, tid stay
    assert out["site"] == {"domain": "example.com", "ext": SITE_EXT}
    assert "eids" not in out.get("user", {})


def test_eids_go_from_app_ext_too():
    out = redacted(STRIP_USER_IDS, app={"bundle": "com.example", "ext": with_eids(SITE_EXT)})
    assert out["app"] == {"bundle": "com.example", "ext": SITE_EXT}


def test_an_eids_key_spelt_with_json_escapes_goes_too():
    raw = b'{"schain":' + msgspec.json.encode(SCHAIN) + b',"e\\u0069ds":[{"source":"x"}]}'
    request = decode_bid_request(
        b'{"id":"r1","imp":[{"id":"1","banner":{"w":1,"h":1}}],"source":{"ext":' + raw + b"}}"
    )
    out = msgspec.json.decode(encode(apply_redaction(request, STRIP_USER_IDS)))
    assert out["source"] == {"ext": {"schain": SCHAIN}}


def test_an_ext_that_is_not_an_object_and_may_hold_eids_goes_whole():
    out = redacted(
        STRIP_USER_IDS,
        source={"tid": "t", "ext": [{"eids": EIDS}]},
        site={"domain": "example.com", "ext": ["no ids here"]},
    )
    assert out["source"] == {"tid": "t"}
    assert out["site"] == {"domain": "example.com", "ext": ["no ids here"]}


def test_eids_outside_user_stay_when_only_device_ids_go():
    # user.eids stay under strip_device_ids alone, so the others do too.
    parts = parts_with_eids_everywhere()
    out = redacted(STRIP_DEVICE_IDS, **parts)
    assert out["source"] == parts["source"]
    assert out["imp"][0]["ext"] == parts["imp"][0]["ext"]
    assert out["site"] == parts["site"]


def test_exts_without_eids_are_not_rewritten():
    request = request_with(source={"ext": SOURCE_EXT}, site={"ext": SITE_EXT}, user={"id": "u1"})
    request = msgspec.structs.replace(
        request,
        imp=[
            msgspec.structs.replace(request.imp[0], ext=msgspec.Raw(msgspec.json.encode(IMP_EXT)))
        ],
    )
    out = apply_redaction(request, STRIP_USER_IDS)
    assert out.source is request.source
    assert out.site is request.site
    assert out.imp is request.imp


def test_stripping_eids_outside_user_never_changes_the_original():
    request = request_with(**parts_with_eids_everywhere())
    before = encode(request)
    apply_redaction(request, STRIP_USER_IDS)
    assert encode(request) == before


def test_a_us_opt_out_strips_source_and_imp_eids():
    request = request_with(regs={"us_privacy": "1YYN"}, **parts_with_eids_everywhere())
    redaction = redaction_for(ConsentContext.from_request(request), vendor_id=42)
    out = msgspec.json.decode(encode(apply_redaction(request, redaction)))
    assert out["source"] == {"ext": SOURCE_EXT}
    assert out["imp"][0]["ext"] == IMP_EXT


# --- eids in request.ext (and ext.prebid), device.ext, site/app publisher.ext --------------

EID_ID = EIDS[0]["uids"][0]["id"]
REQUEST_EXT = {"prebid": {"debug": True, "targeting": {"pricegranularity": "medium"}}, "x": 1}
DEVICE_EXT = {"atts": 3, "idfv": "idfv-1"}
PUBLISHER_EXT = {"network": "n-1"}


def request_parts_with_eids_outside_user(inventory="site"):
    ext = REQUEST_EXT | {"eids": EIDS}
    ext["prebid"] = REQUEST_EXT["prebid"] | {"eids": EIDS}
    return {
        "ext": ext,
        "device": {"ua": "Mozilla/5.0", "ext": DEVICE_EXT | {"eids": EIDS}},
        inventory: {"id": "i1", "publisher": {"id": "p1", "ext": PUBLISHER_EXT | {"eids": EIDS}}},
        "user": {"id": "u1", "eids": EIDS},
    }


@pytest.mark.parametrize("inventory", ["site", "app", "dooh"])
@pytest.mark.parametrize(
    "redaction", [STRIP_USER_IDS, STRIP_USER_DATA], ids=["user ids", "user data"]
)
def test_eids_go_from_request_ext_device_ext_and_publisher_ext(redaction, inventory):
    request = request_with(**request_parts_with_eids_outside_user(inventory))
    body = encode(apply_redaction(request, redaction))
    assert EID_ID.encode() not in body
    out = msgspec.json.decode(body)
    assert out["ext"] == REQUEST_EXT  # the rest of ext and ext.prebid stay
    assert out["device"] == {"ua": "Mozilla/5.0", "ext": DEVICE_EXT}  # idfv: device ids stay
    assert out[inventory] == {"id": "i1", "publisher": {"id": "p1", "ext": PUBLISHER_EXT}}


def test_eids_go_from_request_ext_prebid_with_json_escapes_and_when_alone():
    request = decode_bid_request(
        b'{"id":"r1","imp":[{"id":"1","banner":{"w":1,"h":1}}],'
        b'"ext":{"prebid":{"e\\u0069ds":[{"source":"x"}]},"eids":[{"source":"y"}]},'
        b'"site":{"publisher":{"ext":{"eids":[]}}}}'
    )
    out = msgspec.json.decode(encode(apply_redaction(request, STRIP_USER_IDS)))
    assert out["ext"] == {"prebid": {}}
    assert out["site"] == {"publisher": {}}


def test_request_ext_that_is_not_an_object_and_may_hold_eids_goes_whole():
    out = redacted(STRIP_USER_IDS, ext=[{"eids": EIDS}])
    assert "ext" not in out
    out = redacted(STRIP_USER_IDS, ext={"prebid": [{"eids": EIDS}], "x": 1})
    assert out["ext"] == {"x": 1}


def test_eids_outside_user_in_request_device_and_publisher_ext_stay_for_device_ids_only():
    parts = request_parts_with_eids_outside_user()
    out = redacted(STRIP_DEVICE_IDS, **parts)
    assert out["ext"] == parts["ext"]
    assert out["site"] == parts["site"]
    assert out["device"]["ext"] == {"atts": 3}  # device.ext allowlisted, eids with the rest


def test_request_device_and_publisher_ext_without_eids_are_not_rewritten():
    request = request_with(
        ext=REQUEST_EXT,
        device={"ua": "Mozilla/5.0", "ext": DEVICE_EXT},
        site={"id": "i1", "publisher": {"id": "p1", "ext": PUBLISHER_EXT}},
        user={"id": "u1"},
    )
    out = apply_redaction(request, STRIP_USER_IDS)
    assert out.ext is request.ext
    assert out.device is request.device
    assert out.site is request.site
    assert out.user is not request.user


# --- user.ext.consent must be a string to be kept ------------------------------------------


@pytest.mark.parametrize(
    ("consent", "kept"),
    [
        ("CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA", True),
        ("", True),
        (1, False),
        (None, False),
        ({"tcf": "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"}, False),
        (["x"], False),
    ],
)
def test_user_ext_consent_is_kept_only_as_a_string(consent, kept):
    out = redacted(STRIP_USER_IDS, user={"id": "u1", "ext": {"consent": consent, "eids": EIDS}})
    assert out.get("user", {}) == ({"ext": {"consent": consent}} if kept else {})
