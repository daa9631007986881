"""Device, OS and browser of a request, from its own fields, client hints and user agent.

The user agent is parsed with ua-parser (the Rust accelerator `ua-parser-rs` when
installed: ~50 µs a string instead of ~2 ms) behind a cache bounded by entries and bytes
(`openbid.cache`), since a few thousand user agents make most of the traffic. Only the
first `MAX_UA_CHARS` characters are parsed, and they are the cache key: the parser's cost
grows faster than the length (an 8 KiB random string took 8.6 ms, 512 characters 64 µs, a
real one 25-45 µs), real user agents are far shorter (6,936 real ones: median 136, longest
251), and what identifies the OS, device and browser comes first. Values are plain strings,
ready to be logged as features: `device_type` is one of `DEVICE_TYPES`.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import ua_parser

from openbid.cache import BoundedCache, CacheInfo, deep_sizeof

logger = logging.getLogger(__name__)

MAX_UA_CHARS = 512
"""Characters of a user agent that are parsed (and key the cache); the rest is ignored.
Twice the longest of 6,936 real user agents (fake-useragent's database: median 136, p99.9
163, longest 251, an in-app Facebook browser); past it, only hostile or broken clients."""
UA_CACHE_MAX_ENTRIES = 16_384
UA_CACHE_MAX_BYTES = 16 << 20
"""A parsed user agent holds ~0.9 KB (key, `DeviceInfo`, the cache's overhead), one of
`MAX_UA_CHARS` characters ~1.3 KB: the entry bound binds on real traffic, this on floods."""

DEVICE_TYPES = (
    "phone",
    "tablet",
    "desktop",
    "ctv",
    "connected_device",
    "ooh",
    "bot",
    "other",
    "unknown",
)

# AdCOM DeviceType (device.devicetype) to ours; 1 ("mobile/tablet") is refined by the UA.
_ADCOM_DEVICE_TYPE = {
    2: "desktop",
    3: "ctv",
    4: "phone",
    5: "tablet",
    6: "connected_device",
    7: "ctv",
    8: "ooh",
}
_ADCOM_MOBILE_OR_TABLET = 1

_TV_TOKENS = (
    "smart-tv",
    "smarttv",
    "tizen",
    "web0s",
    "webos",
    "roku",
    "appletv",
    "apple tv",
    "crkey",
    "bravia",
    "hbbtv",
    "googletv",
    "android tv",
    "aftb",
    "aftm",
    "afts",
    "aftt",
    "playstation",
    "xbox",
)
_TABLET_TOKENS = ("ipad", "tablet", "kindle", "silk/", "playbook")
_DESKTOP_OS = frozenset(
    {"Windows", "Mac OS X", "Linux", "Ubuntu", "Fedora", "Chrome OS", "FreeBSD", "OpenBSD"}
)
_OS_ALIASES = {
    "macos": "Mac OS X",
    "mac os x": "Mac OS X",
    "mac os": "Mac OS X",
    "os x": "Mac OS X",
    "ios": "iOS",
    "ipados": "iOS",
    "android": "Android",
    "windows": "Windows",
    "chrome os": "Chrome OS",
    "chromeos": "Chrome OS",
    "linux": "Linux",
}
_GENERIC_BRANDS = frozenset({"chromium"})


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What we know of the device; empty strings where nothing said."""

    device_type: str = "unknown"
    os: str = ""
    os_version: str = ""
    browser: str = ""
    browser_version: str = ""
    make: str = ""
    model: str = ""


def normalize_os(name: str) -> str:
    """One spelling per OS family, so features from client hints, the request's own
    `device.os` and the UA agree.

    >>> normalize_os("macOS"), normalize_os("ios"), normalize_os("Tizen")
    ('Mac OS X', 'iOS', 'Tizen')
    """
    return _OS_ALIASES.get(name.strip().lower(), name.strip())


class UserAgentParser:
    """Parses user agents into `DeviceInfo`: the first `max_chars` characters of each,
    memoised in a cache of at most `cache_size` entries and `cache_max_bytes` bytes."""

    def __init__(
        self,
        cache_size: int = UA_CACHE_MAX_ENTRIES,
        cache_max_bytes: int = UA_CACHE_MAX_BYTES,
        max_chars: int = MAX_UA_CHARS,
    ) -> None:
        resolver_type = ua_parser.BestAvailableResolver
        if resolver_type is ua_parser.BasicResolver:
            logger.warning(
                "ua-parser runs on its pure-Python resolver (about 2 ms a new UA): "
                "install ua-parser-rs for the native one"
            )
            matchers = ua_parser.load_builtins()
        else:
            matchers = ua_parser.load_lazy_builtins()
        self._parser = ua_parser.Parser(resolver_type(matchers))
        self._cache: BoundedCache[str, DeviceInfo] = BoundedCache(cache_size, cache_max_bytes)
        self.max_chars = max_chars

    def parse(self, user_agent: str) -> DeviceInfo:
        """The `DeviceInfo` of a user agent, read from its first `max_chars` characters."""
        if len(user_agent) > self.max_chars:
            user_agent = user_agent[: self.max_chars]
        info = self._cache.get(user_agent)
        if info is None:
            info = self._parse_uncached(user_agent)
            self._cache.put(user_agent, info, deep_sizeof(user_agent, info))
        return info

    def cache_info(self) -> CacheInfo:
        """Hits, misses, entries and bytes of the UA cache."""
        return self._cache.info()

    def _parse_uncached(self, user_agent: str) -> DeviceInfo:
        if not user_agent:
            return DeviceInfo()
        result = self._parser.parse(user_agent)
        browser = result.user_agent
        os = result.os
        device = result.device
        os_family = normalize_os(os.family) if os is not None and os.family != "Other" else ""
        return DeviceInfo(
            device_type=classify_user_agent(
                user_agent, os_family, device.family if device is not None else ""
            ),
            os=os_family,
            os_version=_version(os) if os is not None else "",
            browser=browser.family if browser is not None and browser.family != "Other" else "",
            browser_version=_version(browser) if browser is not None else "",
            make=(device.brand or "") if device is not None else "",
            model=(device.model or "") if device is not None else "",
        )


def _version(part: Any) -> str:
    return ".".join(piece for piece in (part.major, part.minor) if piece)


def classify_user_agent(user_agent: str, os_family: str, device_family: str) -> str:
    """The device type a user agent implies.

    >>> classify_user_agent("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X)", "iOS", "iPad")
    'tablet'
    >>> classify_user_agent("Mozilla/5.0 (Linux; Android 14; SM-S918B) Mobile Safari/537.36", "Android", "Samsung SM-S918B")
    'phone'
    """
    text = user_agent.lower()
    if device_family == "Spider":
        return "bot"
    if any(token in text for token in _TV_TOKENS):
        return "ctv"
    if any(token in text for token in _TABLET_TOKENS):
        return "tablet"
    if os_family == "Android":
        return "phone" if "mobile" in text else "tablet"
    if os_family == "iOS" or "mobile" in text or "phone" in text:
        return "phone"
    if os_family in _DESKTOP_OS:
        return "desktop"
    return "other"


@functools.cache
def default_ua_parser() -> UserAgentParser:
    """The process's shared parser (built on first use: loading the rules takes ~1 s)."""
    return UserAgentParser()


def device_info(device: Any, parser: UserAgentParser) -> DeviceInfo:
    """A request device's `DeviceInfo`: its own fields first (`devicetype`, `os`, `osv`,
    `make`, `model`), then client hints (`sua`), then the parsed user agent."""
    if device is None:
        return DeviceInfo()
    parsed = parser.parse(device.ua or "")
    os, os_version = parsed.os, parsed.os_version
    browser, browser_version = parsed.browser, parsed.browser_version
    make, model, device_type = parsed.make, parsed.model, parsed.device_type
    hints = device.sua
    if hints is not None:
        if hints.platform is not None and hints.platform.brand:
            os = normalize_os(hints.platform.brand)
            os_version = ".".join((hints.platform.version or [])[:2])
        brand = _specific_browser(hints.browsers or [])
        if brand is not None:
            browser = brand.brand
            browser_version = ".".join((brand.version or [])[:2])
        model = hints.model or model
        if hints.mobile == 1 and device_type in ("desktop", "other", "unknown"):
            device_type = "phone"
    if device.os:
        os = normalize_os(device.os)
    os_version = device.osv or os_version
    make = device.make or make
    model = device.model or model
    declared = _ADCOM_DEVICE_TYPE.get(device.devicetype)
    if declared is not None:
        device_type = declared
    elif device.devicetype == _ADCOM_MOBILE_OR_TABLET and device_type not in ("phone", "tablet"):
        device_type = "phone"
    return DeviceInfo(device_type, os, os_version, browser, browser_version, make, model)


def _is_grease(brand: str) -> bool:
    lowered = brand.lower()
    return "not" in lowered and "brand" in lowered


def _specific_browser(brands: list[Any]) -> Any:
    """The most specific real brand of client hints: not a GREASE brand ("Not A;Brand"),
    and Chromium only when nothing more specific is listed."""
    real = [item for item in brands if item.brand and not _is_grease(item.brand)]
    specific = [item for item in real if item.brand.lower() not in _GENERIC_BRANDS]
    chosen = specific or real
    return chosen[0] if chosen else None
