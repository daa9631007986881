"""The TC string, GPP string and consent-context caches under unique 8 KiB strings: each
stays within its bytes (its own count and tracemalloc agree), decodings are charged what
they hold, and the strings of normal traffic keep hitting."""

import random
import tracemalloc

import pytest

from openbid.cache import deep_sizeof
from openbid.privacy import consent, gpp, tcf
from openbid.privacy.consent import ConsentContext

SMALL_BYTES = 256 << 10
GPP_TCF_HEADER = "DBABMA~"  # a GPP string whose only section is TCF EU v2

CACHES = {
    "tcf": tcf.decode_cached,
    "gpp": gpp.decode_cached,
    "context": consent._context_from_signals,
}


@pytest.fixture
def small_caches():
    """The module's own caches, emptied and held to 256 KiB each for the test."""
    saved = {name: (f.cache.max_entries, f.cache.max_bytes) for name, f in CACHES.items()}
    for function in CACHES.values():
        function.cache.clear()
        function.cache.resize(function.cache.max_entries, SMALL_BYTES)
    yield {name: function.cache for name, function in CACHES.items()}
    for name, function in CACHES.items():
        function.cache.clear()
        function.cache.resize(*saved[name])


def _heavy_tc_strings(count, seed):
    """Distinct valid TC strings of ~7,900 characters: a 47,000-bit vendor consent bitfield
    (its decoding holds the 5.9 KB bitmap), each with other bits set."""
    rng = random.Random(seed)
    base = tcf.encode(
        tcf.TCString(
            purpose_consents=frozenset({1, 2, 3, 4}),
            max_vendor_consent_id=47_000,
            vendor_consents=frozenset(rng.sample(range(1, 47_001), 20_000)),
        )
    )
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    strings = []
    for _ in range(count):
        chars = list(base)
        for position in rng.sample(range(100, len(base) - 100), 8):  # inside the bitfield
            chars[position] = rng.choice(alphabet)
        strings.append("".join(chars))
    return strings


def _traced_growth(work):
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_heavy_strings_are_valid_and_about_8_kib():
    strings = _heavy_tc_strings(3, seed=1)
    assert len(set(strings)) == 3
    assert all(7_000 < len(text) < 8_192 for text in strings)
    assert all(isinstance(tcf.decode_cached(text), tcf.TCString) for text in strings)


def test_unique_8_kib_tc_strings_keep_the_tc_cache_within_its_bytes(small_caches):
    strings = _heavy_tc_strings(200, seed=2)
    grown = _traced_growth(lambda: [tcf.decode_cached(text) for text in strings])
    cache = small_caches["tcf"]
    assert cache.size_bytes <= SMALL_BYTES
    assert cache.info().evictions > 150  # 4,096 entries would have held them all
    assert grown <= SMALL_BYTES + (32 << 10)


def test_unique_8_kib_gpp_strings_keep_the_gpp_cache_within_its_bytes(small_caches):
    strings = [GPP_TCF_HEADER + text for text in _heavy_tc_strings(200, seed=3)]
    grown = _traced_growth(lambda: [gpp.decode_cached(text) for text in strings])
    cache = small_caches["gpp"]
    assert cache.size_bytes <= SMALL_BYTES
    assert cache.info().evictions > 150
    # the GPP decoder decodes the TC section itself (not through tcf.decode_cached)
    assert grown <= SMALL_BYTES + (32 << 10)


def test_requests_with_unique_8_kib_consent_and_gpp_strings_stay_within_all_three_caches(
    small_caches, make_request
):
    consents = _heavy_tc_strings(150, seed=4)
    gpps = [GPP_TCF_HEADER + text for text in _heavy_tc_strings(150, seed=5)]
    requests = [
        make_request(regs={"gdpr": 1, "gpp": gpp_text, "gpp_sid": [2]}, user={"consent": text})
        for text, gpp_text in zip(consents, gpps, strict=True)
    ]
    grown = _traced_growth(lambda: [ConsentContext.from_request(r) for r in requests])
    assert all(cache.size_bytes <= SMALL_BYTES for cache in small_caches.values())
    assert small_caches["context"].info().evictions > 100
    # contexts hold the decoded TC strings the TC cache may have dropped: still bounded
    assert grown <= 3 * SMALL_BYTES + (64 << 10)


def test_a_short_tc_string_that_decodes_big_is_charged_what_it_holds(small_caches):
    rules = tuple(
        tcf.PublisherRestriction(purpose, tcf.RestrictionType(kind), frozenset({purpose}))
        for purpose in range(1, 64)
        for kind in range(3)
    )
    text = tcf.encode(tcf.TCString(publisher_restrictions=rules))
    assert len(text) < 1_500
    decoded = tcf.decode_cached(text)
    assert len(decoded.publisher_restrictions) == 189
    assert small_caches["tcf"].size_bytes >= 30 * len(text)


def test_normal_consent_strings_keep_hitting_through_a_flood(small_caches):
    normal = _heavy_tc_strings(1, seed=6) + [
        tcf.encode(tcf.TCString(cmp_id=cmp, purpose_consents=frozenset({1, 2})))
        for cmp in range(1, 20)
    ]
    for text in normal * 2:
        tcf.decode_cached(text)
    decoded = {text: tcf.decode_cached(text) for text in normal}
    for index, text in enumerate(_heavy_tc_strings(300, seed=7)):
        tcf.decode_cached(text)
        probe = normal[index % len(normal)]
        assert tcf.decode_cached(probe) is decoded[probe]


def test_cached_errors_keep_no_traceback():
    tc_error = tcf.decode_cached("not a tc string at all")
    gpp_error = gpp.decode_cached("DBABMA~not a tc string")
    for error in (tc_error, gpp_error):
        assert isinstance(error, Exception)
        chain = [error, error.__cause__, error.__context__]
        assert all(link.__traceback__ is None for link in chain if link is not None)


def test_a_context_is_charged_its_strings_its_decoding_and_its_vendor_memo(make_request):
    text = _heavy_tc_strings(1, seed=8)[0]
    context = ConsentContext.from_request(make_request(regs={"gdpr": 1}, user={"consent": text}))
    cache = consent._context_from_signals.cache
    key = next(key for key in list(cache._probation) + list(cache._protected) if text in key)
    held = (cache._probation.get(key) or cache._protected.get(key))[1]
    assert held >= deep_sizeof(key, context) + consent.VENDOR_MEMO_ALLOWANCE_BYTES
