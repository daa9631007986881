"""Device, OS and browser from user agents, client hints and the request's own fields."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.enrich.device import DEVICE_TYPES, DeviceInfo, device_info

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
MAC_FIREFOX = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0"
ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.6367.82 Safari/537.36"
)
SAMSUNG_TV = (
    "Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 "
    "(KHTML, like Gecko) 76.0.3809.146/6.0 TV Safari/537.36"
)
ROKU = "Roku/DVP-9.10 (519.10E04111A)"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.mark.parametrize(
    ("user_agent", "device_type", "os", "browser"),
    [
        (IPHONE, "phone", "iOS", "Mobile Safari"),
        (IPAD, "tablet", "iOS", "Mobile Safari"),
        (WINDOWS_CHROME, "desktop", "Windows", "Chrome"),
        (MAC_FIREFOX, "desktop", "Mac OS X", "Firefox"),
        (ANDROID_PHONE, "phone", "Android", "Chrome Mobile"),
        (ANDROID_TABLET, "tablet", "Android", "Chrome"),
        (SAMSUNG_TV, "ctv", "Tizen", None),
        (ROKU, "ctv", None, None),
        (GOOGLEBOT, "bot", None, "Googlebot"),
        ("", "unknown", "", ""),
    ],
)
def test_user_agents_are_classified(ua_parser, user_agent, device_type, os, browser):
    info = ua_parser.parse(user_agent)
    assert info.device_type == device_type
    if os is not None:
        assert info.os == os
    if browser is not None:
        assert info.browser == browser


def test_versions_make_and_model_come_from_the_user_agent(ua_parser):
    info = ua_parser.parse(ANDROID_PHONE)
    assert (info.os_version, info.browser_version) == ("14", "124.0")
    assert (info.make, info.model) == ("Samsung", "SM-S918B")
    assert ua_parser.parse(IPHONE).os_version == "17.4"


def test_parses_are_cached_by_user_agent(ua_parser):
    user_agent = WINDOWS_CHROME + " openbid-cache-probe"
    before = ua_parser.cache_info()
    first = ua_parser.parse(user_agent)
    assert ua_parser.parse(user_agent) is first
    after = ua_parser.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)


def test_request_fields_and_client_hints_take_precedence(ua_parser, make_device):
    device = make_device(
        {
            "ua": WINDOWS_CHROME,
            "sua": {
                "browsers": [
                    {"brand": "Not A(Brand", "version": ["99"]},
                    {"brand": "Chromium", "version": ["124", "0", "6367"]},
                    {"brand": "Microsoft Edge", "version": ["124", "0", "2478"]},
                ],
                "platform": {"brand": "Windows", "version": ["15", "0", "0"]},
                "mobile": 0,
            },
        }
    )
    info = device_info(device, ua_parser)
    assert (info.browser, info.browser_version) == ("Microsoft Edge", "124.0")
    assert (info.os, info.os_version) == ("Windows", "15.0")  # Windows 11: the UA says 10
    assert info.device_type == "desktop"

    app_device = make_device(
        {"ua": ANDROID_PHONE, "os": "android", "osv": "14.1", "make": "Google", "model": "Pixel 8"}
    )
    info = device_info(app_device, ua_parser)
    assert (info.os, info.os_version, info.make, info.model) == (
        "Android",
        "14.1",
        "Google",
        "Pixel 8",
    )


@pytest.mark.parametrize(
    ("devicetype", "user_agent", "expected"),
    [
        (3, WINDOWS_CHROME, "ctv"),  # AdCOM connected TV wins over the UA
        (5, IPHONE, "tablet"),
        (2, IPHONE, "desktop"),
        (1, IPAD, "tablet"),  # "mobile/tablet": the UA says which
        (1, WINDOWS_CHROME, "phone"),
        (8, "", "ooh"),
        (None, IPHONE, "phone"),
        (500, IPHONE, "phone"),  # vendor-specific codes are left to the UA
    ],
)
def test_declared_device_type(ua_parser, make_device, devicetype, user_agent, expected):
    device = make_device({"ua": user_agent, "devicetype": devicetype})
    assert device_info(device, ua_parser).device_type == expected


def test_mobile_client_hint_marks_a_phone(ua_parser, make_device):
    device = make_device({"ua": "", "sua": {"mobile": 1, "platform": {"brand": "Android"}}})
    info = device_info(device, ua_parser)
    assert (info.device_type, info.os) == ("phone", "Android")


def test_no_device_gives_unknown(ua_parser):
    assert device_info(None, ua_parser) == DeviceInfo()


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=120))
def test_any_user_agent_parses_to_known_values(ua_parser, user_agent):
    info = ua_parser.parse(user_agent)
    assert info.device_type in DEVICE_TYPES
    assert all(
        isinstance(value, str)
        for value in (info.os, info.os_version, info.browser, info.make, info.model)
    )
