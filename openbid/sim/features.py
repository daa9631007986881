"""The request features of the market: names, fixed vocabularies, and the device tables.

Every hidden rule of the market (a DSP's bid model, a user's click model) is a function of
these features only, and each is visible in the OpenRTB request an exchange receives, so a
model trained on logged requests can learn the rules.
"""

from __future__ import annotations

import msgspec

REQUEST_FEATURES: tuple[str, ...] = (
    "publisher",
    "site",
    "category",
    "inventory",
    "format",
    "size",
    "devicetype",
    "os",
    "browser",
    "connection",
    "country",
    "region",
    "hour",
    "hour_bucket",
    "weekday",
    "floor_bucket",
    "consent",
    "user_id",
)
"""Features of a (request, impression): the inputs of every DSP's bid model."""

AD_FEATURES: tuple[str, ...] = ("advertiser", "ad_category")
"""Features of the ad shown: with the request features, the inputs of the click model."""

ALL_FEATURES = REQUEST_FEATURES + AD_FEATURES
COLUMN = {name: index for index, name in enumerate(ALL_FEATURES)}
"""Column of each feature in a code matrix (request features first, then ad features)."""

UNKNOWN = "?"
"""The last value of every vocabulary: what a request carries that the market never sends."""

INVENTORIES = ("site", "app")
FORMATS = ("banner", "video", "native")
DEVICE_TYPES = ("phone", "tablet", "desktop", "ctv")
HOUR_BUCKETS = ("night", "morning", "afternoon", "evening")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FLOOR_BUCKET_EDGES_CPM = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)
FLOOR_BUCKETS = ("0", "0-0.1", "0.1-0.5", "0.5-1", "1-2", "2-5", "5+")
"""Floor CPM buckets: exactly zero, then up to each edge (upper edge inclusive), then above."""
FLOOR_FORMAT_MULTIPLIER = {"banner": 1.0, "video": 4.0, "native": 1.5}
"""How much higher than its banner floor a site sets its video and native floors."""

DEVICE_TYPE_CODES = {"phone": 4, "tablet": 5, "desktop": 2, "ctv": 3}
"""AdCOM DeviceType codes the market sends."""
DEVICE_TYPE_NAMES = {4: "phone", 1: "phone", 5: "tablet", 2: "desktop", 3: "ctv", 7: "ctv"}

CONNECTION_CODES = {"ethernet": 1, "wifi": 2, "cellular": 3, "2g": 4, "3g": 5, "4g": 6, "5g": 7}
"""AdCOM ConnectionType codes."""
CONNECTION_NAMES = {code: name for name, code in CONNECTION_CODES.items()}

OS_NAMES = {
    "android": "Android",
    "ios": "iOS",
    "windows": "Windows",
    "macos": "macOS",
    "linux": "Linux",
    "tvos": "tvOS",
    "roku": "Roku OS",
}
"""Market OS names and the `device.os` string sent for each."""
OS_BY_DEVICE_OS = {value.lower(): name for name, value in OS_NAMES.items()}

APP_BROWSER = "app"
"""The browser of an in-app visit (a webview or an SDK, not a browser the user chose)."""

USER_AGENTS: dict[tuple[str, str, str], str] = {
    (
        "android",
        "chrome",
        "phone",
    ): "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.6312.99 Mobile Safari/537.36",
    (
        "android",
        "samsung",
        "phone",
    ): "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
    (
        "android",
        "firefox",
        "phone",
    ): "Mozilla/5.0 (Android 14; Mobile; rv:124.0) Gecko/124.0 Firefox/124.0",
    (
        "android",
        "chrome",
        "tablet",
    ): "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.6312.99 Safari/537.36",
    (
        "android",
        "samsung",
        "tablet",
    ): "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Safari/537.36",
    (
        "android",
        "firefox",
        "tablet",
    ): "Mozilla/5.0 (Android 13; Tablet; rv:124.0) Gecko/124.0 Firefox/124.0",
    (
        "ios",
        "safari",
        "phone",
    ): "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    (
        "ios",
        "chrome",
        "phone",
    ): "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/123.0.6312.52 Mobile/15E148 Safari/604.1",
    (
        "ios",
        "firefox",
        "phone",
    ): "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/124.0 Mobile/15E148 Safari/605.1.15",
    (
        "ios",
        "safari",
        "tablet",
    ): "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    (
        "ios",
        "chrome",
        "tablet",
    ): "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/123.0.6312.52 Mobile/15E148 Safari/604.1",
    (
        "ios",
        "firefox",
        "tablet",
    ): "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/124.0 Mobile/15E148 Safari/605.1.15",
    (
        "windows",
        "chrome",
        "desktop",
    ): "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
    (
        "windows",
        "edge",
        "desktop",
    ): "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36 Edg/123.0.2420.65",
    (
        "windows",
        "firefox",
        "desktop",
    ): "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:124.0) Gecko/20100101 Firefox/124.0",
    (
        "macos",
        "safari",
        "desktop",
    ): "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    (
        "macos",
        "chrome",
        "desktop",
    ): "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
    (
        "macos",
        "firefox",
        "desktop",
    ): "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:124.0) Gecko/20100101 Firefox/124.0",
    (
        "macos",
        "edge",
        "desktop",
    ): "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36 Edg/123.0.2420.65",
    (
        "linux",
        "chrome",
        "desktop",
    ): "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
    (
        "linux",
        "firefox",
        "desktop",
    ): "Mozilla/5.0 (X11; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0",
    (
        "android",
        APP_BROWSER,
        "phone",
    ): "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240405.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/123.0.6312.99 Mobile Safari/537.36",
    (
        "android",
        APP_BROWSER,
        "tablet",
    ): "Mozilla/5.0 (Linux; Android 13; SM-X710 Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/123.0.6312.99 Safari/537.36",
    (
        "ios",
        APP_BROWSER,
        "phone",
    ): "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    (
        "ios",
        APP_BROWSER,
        "tablet",
    ): "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    (
        "android",
        APP_BROWSER,
        "ctv",
    ): "Mozilla/5.0 (Linux; Android 11; AFTKA Build/RS8101.1849N; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.230 Mobile Safari/537.36",
    (
        "tvos",
        APP_BROWSER,
        "ctv",
    ): "AppleCoreMedia/1.0.0.21L227 (Apple TV; U; CPU OS 17_4 like Mac OS X; en_us)",
    ("roku", APP_BROWSER, "ctv"): "Roku/DVP-12.5 (12.5.0.4174-AE)",
}
"""One real-looking user agent per (os, browser, device type) the market can send."""

BROWSER_BY_USER_AGENT = {ua: browser for (_os, browser, _device), ua in USER_AGENTS.items()}


def hour_bucket(hour: int) -> str:
    """The part of the day of a UTC hour.

    >>> hour_bucket(0), hour_bucket(9), hour_bucket(13), hour_bucket(23)
    ('night', 'morning', 'afternoon', 'evening')
    """
    return HOUR_BUCKETS[hour // 6]


def floor_bucket(floor_cpm: float) -> str:
    """The floor bucket of a floor in CPM.

    >>> floor_bucket(0.0), floor_bucket(0.1), floor_bucket(0.75), floor_bucket(12.0)
    ('0', '0-0.1', '0.5-1', '5+')
    """
    if floor_cpm <= 0:
        return FLOOR_BUCKETS[0]
    for index, edge in enumerate(FLOOR_BUCKET_EDGES_CPM[1:], start=1):
        if floor_cpm <= edge:
            return FLOOR_BUCKETS[index]
    return FLOOR_BUCKETS[-1]


class RequestFeatures(msgspec.Struct, frozen=True, kw_only=True):
    """The features of one (request, impression), as readable values.

    Values the market never sends read as `"?"`. `floor_cpm` is the impression's floor
    (USD CPM), which both buckets the floor and decides whether a price clears it.
    """

    publisher: str
    site: str
    category: str
    inventory: str
    format: str
    size: str
    devicetype: str
    os: str
    browser: str
    connection: str
    country: str
    region: str
    hour: str
    hour_bucket: str
    weekday: str
    floor_bucket: str
    consent: str
    user_id: str
    floor_cpm: float = 0.0
