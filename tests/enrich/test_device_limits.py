"""What a hostile user agent can cost: the parser sees at most MAX_UA_CHARS characters,
the UA cache stays within its bytes under unique 8 KiB user agents, and real traffic keeps
hitting it meanwhile."""

import importlib.resources
import json
import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.enrich.device import MAX_UA_CHARS, UserAgentParser

WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36"
)


class _RecordingParser:
    """The real ua-parser, recording the length of every string it is given."""

    def __init__(self, parser):
        self._parser = parser
        self.lengths = []

    def parse(self, user_agent):
        self.lengths.append(len(user_agent))
        return self._parser.parse(user_agent)


@pytest.fixture
def small_parser():
    """A parser whose UA cache holds 256 KiB, the real resolver spied on."""
    parser = UserAgentParser(cache_size=16_384, cache_max_bytes=256 << 10)
    parser._parser = _RecordingParser(parser._parser)
    return parser


def _random_user_agents(count, length, seed):
    rng = random.Random(seed)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ;()/._-"
    return ["".join(rng.choices(alphabet, k=length)) for _ in range(count)]


def _real_user_agents():
    """6,936 user agents seen on real traffic, with their share (fake-useragent's data)."""
    data = importlib.resources.files("fake_useragent") / "data" / "browsers.jsonl"
    return [json.loads(line)["useragent"] for line in data.read_text().splitlines() if line]


def test_no_more_than_max_ua_chars_of_an_8_kib_user_agent_reach_the_parser(small_parser):
    for user_agent in _random_user_agents(50, 8192, seed=1):
        small_parser.parse(user_agent)
    assert len(small_parser._parser.lengths) == 50
    assert max(small_parser._parser.lengths) == MAX_UA_CHARS


@pytest.fixture(scope="module")
def spied_parser():
    parser = UserAgentParser(cache_size=64)
    parser._parser = _RecordingParser(parser._parser)
    return parser


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=3 * MAX_UA_CHARS))
def test_any_user_agent_is_read_from_its_first_max_ua_chars_only(spied_parser, user_agent):
    before = len(spied_parser._parser.lengths)
    info = spied_parser.parse(user_agent)
    assert all(length <= MAX_UA_CHARS for length in spied_parser._parser.lengths[before:])
    assert info == spied_parser.parse(user_agent[:MAX_UA_CHARS])


def test_a_real_user_agent_padded_to_8_kib_is_classified_as_the_real_one(ua_parser):
    padded = ANDROID_PHONE + " " + "x" * 8192
    assert ua_parser.parse(padded) == ua_parser.parse(ANDROID_PHONE)
    assert ua_parser.parse(padded).device_type == "phone"


def test_unique_8_kib_user_agents_keep_the_ua_cache_within_its_bytes(small_parser):
    agents = _random_user_agents(1_500, 8192, seed=2)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for user_agent in agents:
            small_parser.parse(user_agent)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    info = small_parser.cache_info()
    assert info.size_bytes <= 256 << 10
    assert info.evictions > 1_000  # the bytes bound held it: 16,384 entries would fit
    assert all(len(key) <= MAX_UA_CHARS for key in small_parser._cache._probation)
    # What stays allocated is what the cache holds (prefixes, DeviceInfos, its slots):
    # the 8 KiB strings themselves were made before and are not kept.
    assert grown <= info.size_bytes + (32 << 10)


def test_real_user_agents_keep_hitting_the_cache_through_a_flood(small_parser):
    normal = [WINDOWS_CHROME, ANDROID_PHONE] + [
        WINDOWS_CHROME.replace("124.0", f"{version}.0") for version in range(60, 120)
    ]
    for user_agent in normal * 2:
        small_parser.parse(user_agent)  # seen twice: normal traffic repeats
    parsed_before = len(small_parser._parser.lengths)
    flood = _random_user_agents(1_000, 8192, seed=3)
    for index, user_agent in enumerate(flood):
        small_parser.parse(user_agent)
        small_parser.parse(normal[index % len(normal)])
    # the parser saw the flood only: every normal user agent was a cache hit
    assert len(small_parser._parser.lengths) - parsed_before == len(flood)


def test_the_cap_truncates_no_real_user_agent():
    agents = _real_user_agents()
    assert len(agents) > 5_000
    assert max(len(user_agent) for user_agent in agents) <= MAX_UA_CHARS
