"""Frequency caps: which users may be counted, the pure decisions, and the counters on the
in-process store and on real Redis (shared by several workers)."""

import asyncio
import secrets

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbid.campaigns.caps import (
    CapRule,
    FrequencyCapper,
    anonymous_allowed,
    cap_rules,
    frequency_user_key,
    remaining_impressions,
)
from openbid.campaigns.index import compile_index
from openbid.campaigns.model import (
    Advertiser,
    Campaign,
    CampaignSet,
    Creative,
    FrequencyCap,
    LineItem,
)
from openbid.campaigns.targeting import ImpFacts, RequestFacts
from openbid.openrtb import decode_bid_request
from openbid.privacy import tcf
from openbid.privacy.consent import ConsentContext
from openbid.stores import MemoryCounterStore, RedisCounterStore

OUR_VENDOR_ID = 77
ALL_PURPOSES = frozenset(range(1, 11))


def _tc(purposes, vendors=frozenset({OUR_VENDOR_ID})) -> str:
    return tcf.encode(
        tcf.TCString(
            purpose_consents=frozenset(purposes),
            vendor_consents=frozenset(vendors),
            max_vendor_consent_id=max(vendors, default=0),
        )
    )


# (what the request says, whether a per-user key may be used)
CONSENT_CASES = [
    ("no regulation, user.id", {"user": {"id": "u-1"}}, True),
    ("no regulation, only device.ifa", {"device": {"ifa": "ifa-1"}}, True),
    ("no regulation, only buyeruid", {"user": {"buyeruid": "b-1"}}, True),
    ("no id at all", {}, False),
    ("COPPA", {"user": {"id": "u-1"}, "regs": {"coppa": 1}}, False),
    ("limit ad tracking", {"user": {"id": "u-1"}, "device": {"lmt": 1}}, False),
    ("do not track", {"user": {"id": "u-1"}, "device": {"dnt": 1}}, False),
    ("US opt-out of sale", {"user": {"id": "u-1"}, "regs": {"us_privacy": "1YYN"}}, False),
    ("GDPR without a TC string", {"user": {"id": "u-1"}, "regs": {"gdpr": 1}}, False),
    (
        "GDPR, every purpose and our vendor",
        {"user": {"id": "u-1", "consent": _tc(ALL_PURPOSES)}, "regs": {"gdpr": 1}},
        True,
    ),
    (
        "GDPR, purposes 1 and 2 only",
        {"user": {"id": "u-1", "consent": _tc({1, 2})}, "regs": {"gdpr": 1}},
        True,
    ),
    (
        "GDPR without purpose 1 (storage and access)",
        {"user": {"id": "u-1", "consent": _tc(ALL_PURPOSES - {1})}, "regs": {"gdpr": 1}},
        False,
    ),
    (
        "GDPR without purpose 2 (selecting ads)",
        {"user": {"id": "u-1", "consent": _tc(ALL_PURPOSES - {2})}, "regs": {"gdpr": 1}},
        False,
    ),
    (
        "GDPR, every purpose but not our vendor",
        {"user": {"id": "u-1", "consent": _tc(ALL_PURPOSES, {12})}, "regs": {"gdpr": 1}},
        False,
    ),
]


@pytest.mark.parametrize(
    "parts, usable", [c[1:] for c in CONSENT_CASES], ids=[c[0] for c in CONSENT_CASES]
)
def test_a_user_is_counted_only_where_consent_allows(parts, usable):
    body = {"id": "r", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}], **parts}
    request = decode_bid_request(msgspec.json.encode(body))
    consent = ConsentContext.from_request(request)
    key = frequency_user_key(request, consent, OUR_VENDOR_ID)
    assert (key is not None) == usable
    if usable:  # a hash, never the raw id
        assert len(key) == 32 and set(key) <= set("0123456789abcdef")


def test_user_keys_are_stable_and_distinct():
    def key(user_id):
        body = {
            "id": "r",
            "imp": [{"id": "1", "banner": {"w": 1, "h": 1}}],
            "user": {"id": user_id},
        }
        return frequency_user_key(
            decode_bid_request(msgspec.json.encode(body)), ConsentContext(), None
        )

    assert key("u-1") == key("u-1") != key("u-2")


def test_remaining_impressions_is_the_tightest_cap():
    day = CapRule("li:a:86400", 3, 86_400)
    hour = CapRule("li:a:3600", 1, 3_600)
    assert remaining_impressions((day, hour), [0, 0]) == 1
    assert remaining_impressions((day, hour), [2, 0]) == 1
    assert remaining_impressions((day, hour), [1, 1]) == 0
    assert remaining_impressions((day,), [5]) == 0


@given(st.lists(st.booleans(), max_size=300), st.floats(0.0, 1.0))
def test_anonymous_impressions_stay_within_their_share(arrivals, share):
    """Whatever mix of identified (True) and anonymous (False) requests arrives, serving an
    anonymous one only when allowed keeps anonymous <= share x all, at every step."""
    anonymous = total = 0
    for identified in arrivals:
        if identified:
            total += 1
        elif anonymous_allowed(anonymous, total, share):
            anonymous += 1
            total += 1
        assert anonymous <= share * total + 1e-9


def test_cap_rules_put_the_campaign_first_and_scope_keys():
    campaign = _campaign(caps=(FrequencyCap(5, 604_800),))
    line_item = LineItem(
        id="li-1",
        campaign_id="cmp-1",
        creative_ids=("cr-1",),
        frequency_caps=(FrequencyCap(2, 86_400),),
    )
    assert cap_rules(campaign, line_item) == (
        CapRule("cmp:cmp-1:604800", 5, 604_800),
        CapRule("li:li-1:86400", 2, 86_400),
    )


# The counters, on both backends.


def _campaign(caps=(), campaign_id="cmp-1"):
    return Campaign(
        id=campaign_id,
        advertiser_id="adv",
        name="c",
        start_micros=0,
        end_micros=2**62,
        total_budget_micros=1_000_000,
        goal_amount_micros=1_000_000,
        frequency_caps=caps,
    )


def _index():
    """li-day: 2 a day; li-free: uncapped; li-a and li-b share their campaign's 3 a day."""
    creative = Creative(
        id="cr-1",
        advertiser_id="adv",
        kind="banner",
        landing_url="https://brand.example/",
        sizes=((300, 250),),
        adomain=("brand.example",),
        markup="x",
        approval="approved",
    )
    line_items = (
        LineItem(
            id="li-day",
            campaign_id="cmp-1",
            creative_ids=("cr-1",),
            frequency_caps=(FrequencyCap(2, 86_400),),
        ),
        LineItem(id="li-free", campaign_id="cmp-1", creative_ids=("cr-1",)),
        LineItem(id="li-a", campaign_id="cmp-shared", creative_ids=("cr-1",)),
        LineItem(id="li-b", campaign_id="cmp-shared", creative_ids=("cr-1",)),
    )
    return compile_index(
        CampaignSet(
            advertisers=(Advertiser(id="adv", name="A"),),
            campaigns=(
                _campaign(),
                _campaign(caps=(FrequencyCap(3, 86_400),), campaign_id="cmp-shared"),
            ),
            line_items=line_items,
            creatives=(creative,),
        ),
        now_micros=1,
    )


REQUEST = RequestFacts(now_micros=1)
IMP = ImpFacts(slots=("banner:300x250",))


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield MemoryCounterStore()
        return
    url = request.getfixturevalue("redis_url")
    backend = RedisCounterStore(url, prefix=f"test:{secrets.token_hex(4)}:", timeout_s=1.0)
    yield backend
    backend.close()


async def _allowed_ids(capper, index, user):
    candidates = index.match(REQUEST, IMP)
    allowed = await capper.allowed(candidates, user)
    return [li for (li, _), ok in zip(candidates.ids(), allowed, strict=True) if ok]


async def _serve(capper, index, line_item_id, user):
    await capper.record_impression(index.cap_rules[index.line_item_positions[line_item_id]], user)


def test_a_user_is_capped_per_line_item_and_per_campaign(store):
    index = _index()
    capper = FrequencyCapper(store)

    async def scenario():
        everything = ["li-day", "li-free", "li-a", "li-b"]
        assert await _allowed_ids(capper, index, "user-1") == everything
        await _serve(capper, index, "li-day", "user-1")
        await _serve(capper, index, "li-day", "user-1")
        assert await _allowed_ids(capper, index, "user-1") == ["li-free", "li-a", "li-b"]
        assert await _allowed_ids(capper, index, "user-2") == everything
        # The campaign cap (3 a day) counts impressions of both its line items.
        for line_item in ("li-a", "li-b", "li-a"):
            await _serve(capper, index, line_item, "user-1")
        assert await _allowed_ids(capper, index, "user-1") == ["li-free"]
        assert await _allowed_ids(capper, index, "user-2") == everything
        await capper.store.aclose()

    asyncio.run(scenario())


def test_anonymous_users_get_at_most_their_share_of_a_capped_line_item(store):
    index = _index()
    capper = FrequencyCapper(store, anonymous_share=0.25)

    async def scenario():
        # Nothing served yet in the period: an anonymous impression would be all of it.
        assert await _allowed_ids(capper, index, None) == ["li-free"]
        for number in range(3):
            await _serve(capper, index, "li-day", f"user-{number}")
        # 3 identified: one anonymous more makes 1 of 4 = 25%.
        assert "li-day" in await _allowed_ids(capper, index, None)
        await _serve(capper, index, "li-day", None)
        assert "li-day" not in await _allowed_ids(capper, index, None)
        # Identified users are unaffected by the anonymous share.
        assert "li-day" in await _allowed_ids(capper, index, "user-9")
        await capper.store.aclose()

    asyncio.run(scenario())


def test_caps_hold_across_workers_sharing_redis(redis_url):
    """Four workers (each its own Redis client) serve many users concurrently; each user's
    requests arrive one after another. No user sees the capped line item more than twice."""
    prefix = f"test:{secrets.token_hex(4)}:"
    index = _index()
    workers = [
        FrequencyCapper(RedisCounterStore(redis_url, prefix=prefix, timeout_s=1.0))
        for _ in range(4)
    ]
    served: dict[str, int] = {}

    async def user_visits(number):
        user = f"user-{number}"
        for visit in range(6):
            capper = workers[(number + visit) % len(workers)]
            if "li-day" in await _allowed_ids(capper, index, user):
                await _serve(capper, index, "li-day", user)
                served[user] = served.get(user, 0) + 1

    async def scenario():
        await asyncio.gather(*(user_visits(number) for number in range(40)))
        for capper in workers:
            await capper.store.aclose()

    asyncio.run(scenario())
    assert served == {f"user-{number}": 2 for number in range(40)}


def test_unreadable_counters_leave_capped_line_items_out(unused_tcp_port):
    """A Redis that does not answer: capped line items are not served (never over-served),
    uncapped ones go on; counting an impression fails quietly."""
    store = RedisCounterStore(f"redis://127.0.0.1:{unused_tcp_port}/0", timeout_s=0.05)
    capper = FrequencyCapper(store)
    index = _index()

    async def scenario():
        allowed = await _allowed_ids(capper, index, "user-1")
        await _serve(capper, index, "li-day", "user-1")
        await store.aclose()
        return allowed

    assert asyncio.run(scenario()) == ["li-free"]


@pytest.fixture
def unused_tcp_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
