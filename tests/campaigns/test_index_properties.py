"""Property tests of the compiled index: for random catalogs and requests it returns exactly
the pairs the plain rules (`targeting.eligible_pairs`) return, in the same order; paused
line items match nothing; set bits come back as positions."""

from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.campaigns.bitsets import bit_positions
from openbid.campaigns.index import compile_index
from openbid.campaigns.model import (
    FULL_WEEK_MASK,
    Advertiser,
    Campaign,
    CampaignSet,
    Creative,
    LineItem,
    NativeAd,
    Targeting,
)
from openbid.campaigns.targeting import (
    ImpFacts,
    RequestFacts,
    eligible_pairs,
    geo_keys,
)

NOW = 1_709_726_400_000_000  # 2024-03-06T12:00:00Z
HOUR = 3_600_000_000
COUNTRIES = ["USA", "CAN", "GBR"]
REGIONS = ["USA-CA", "USA-TX", "CAN-ON"]
CITIES = ["USA-CA-Los Angeles", "USA-TX-Austin"]
DEVICES = ["phone", "tablet", "desktop", "ctv"]
OSES = ["ios", "android", "windows", "macos"]
PUBLISHERS = ["p1", "p2"]
SITES = ["s1", "s2", "s3"]
DOMAINS = ["a.example", "b.example"]
CATEGORIES = ["IAB1", "IAB1-2", "IAB8", "IAB8-1"]
SEGMENTS = ["d:1", "d:2"]
DEALS = ["x", "y"]
SIZES = ["300x250", "728x90", "640x360", "1280x720"]
SLOTS = ["banner:300x250", "banner:728x90", "video:640x360", "video:1280x720", "video:", "native"]
ZONES = ["user", "UTC", "America/New_York"]
ADVERTISERS = ["adv-1", "adv-2"]
MOSTLY_FIRST = ["adv-1", "adv-1", "adv-1", "adv-2"]


def some(values):
    return st.lists(st.sampled_from(values), max_size=2, unique=True).map(tuple)


DIMENSIONS = {
    "countries": COUNTRIES,
    "regions": REGIONS,
    "cities": CITIES,
    "device_types": DEVICES,
    "os": OSES,
    "publishers": PUBLISHERS,
    "sites": SITES,
    "domains": DOMAINS,
    "content_categories": CATEGORIES,
    "placement_sizes": SIZES,
    "segments": SEGMENTS,
}


@st.composite
def targetings(draw):
    """A few dimensions targeted (include, exclude or both), so that many pairs still
    match a random request and the rules that do not are all exercised."""
    fields = {}
    for name in draw(st.lists(st.sampled_from(sorted(DIMENSIONS)), max_size=3, unique=True)):
        values = DIMENSIONS[name]
        way = draw(st.sampled_from(["include", "exclude", "both"]))
        if way != "exclude":
            fields[name] = draw(some(values))
        if way != "include":
            fields[f"{name}_exclude"] = draw(some(values))
    if draw(st.integers(0, 9)) == 0:
        fields["inventory"] = draw(some(["site", "app"]))
    if draw(st.integers(0, 9)) == 0:
        fields["formats"] = draw(some(["banner", "video", "native"]))
    if draw(st.integers(0, 5)) == 0:
        fields["deals"] = draw(some(DEALS))
    if draw(st.integers(0, 4)) == 0:
        fields["hour_mask"] = draw(st.integers(1, FULL_WEEK_MASK))
        fields["hours_timezone"] = draw(st.sampled_from(ZONES))
    return Targeting(**fields)


@st.composite
def creatives(draw, number):
    kind = draw(st.sampled_from(["banner", "video", "native"]))
    sizes = ()
    if kind == "banner":
        sizes = draw(
            st.lists(st.sampled_from([(300, 250), (728, 90)]), min_size=1, max_size=2, unique=True)
        )
    elif kind == "video":
        sizes = draw(st.lists(st.sampled_from([(640, 360), (1280, 720)]), max_size=1))
    return Creative(
        id=f"cr-{number}",
        advertiser_id=draw(st.sampled_from(MOSTLY_FIRST)),
        kind=kind,
        landing_url="https://brand.example/",
        sizes=tuple(sizes),
        adomain=draw(some(DOMAINS + ["brand.example"])),
        categories=draw(some(CATEGORIES)),
        markup="x",
        native=NativeAd(title="t", image_url="https://i.example/") if kind == "native" else None,
        approval=draw(st.sampled_from(["approved", "approved", "approved", "pending"])),
    )


@st.composite
def catalogs(draw):
    creative_list = [draw(creatives(n)) for n in range(draw(st.integers(1, 5)))]
    campaigns = []
    for number in range(draw(st.integers(1, 3))):
        start = NOW + draw(st.integers(-3, 1)) * HOUR
        campaigns.append(
            Campaign(
                id=f"cmp-{number}",
                advertiser_id=draw(st.sampled_from(MOSTLY_FIRST)),
                name="c",
                start_micros=start,
                end_micros=start + draw(st.integers(2, 8)) * HOUR,
                total_budget_micros=1,
                goal_amount_micros=1,
                status=draw(st.sampled_from(["active"] * 5 + ["paused"])),
            )
        )
    line_items = [
        LineItem(
            id=f"li-{number}",
            campaign_id=draw(st.sampled_from(campaigns)).id,
            creative_ids=tuple(
                draw(
                    st.lists(st.sampled_from([c.id for c in creative_list]), min_size=1, max_size=3)
                )
            ),
            targeting=draw(targetings()),
            status=draw(st.sampled_from(["active"] * 7 + ["paused"])),
        )
        for number in range(draw(st.integers(1, 8)))
    ]
    advertisers = tuple(
        Advertiser(id=a, name=a, status=draw(st.sampled_from(["active"] * 5 + ["paused"])))
        for a in ADVERTISERS
    )
    return CampaignSet(
        advertisers=advertisers,
        campaigns=tuple(campaigns),
        line_items=tuple(line_items),
        creatives=tuple(creative_list),
    )


def maybe(values):
    """A value, or now and then none (a request without it)."""
    return st.sampled_from(["", *values, *values])


@st.composite
def requests(draw, catalog=None):
    """A random request; for two in three, one aimed at a random line item of `catalog` (its
    included values, a slot of one of its creatives, one of its deals), so that most
    requests match something and each rule decides often."""
    country = draw(maybe(COUNTRIES))
    region = draw(maybe(["CA", "TX", "ON"]))
    city = draw(maybe(["Los Angeles", "austin"]))
    fields = {
        "device_type": draw(maybe(DEVICES)),
        "os": draw(maybe(["ios", "android", "windows", "mac os x"])),
        "inventory": draw(maybe(["site", "app"])),
        "publisher_id": draw(maybe(PUBLISHERS)),
        "site_id": draw(maybe(SITES)),
        "domains": draw(some(DOMAINS)),
        "content_categories": draw(some(CATEGORIES)),
        "segments": draw(some(SEGMENTS)),
        "hour_of_week": draw(st.integers(0, 167)),
    }
    slots = draw(st.lists(st.sampled_from(SLOTS), min_size=1, max_size=3, unique=True))
    deals = draw(some(DEALS))
    if catalog is not None and draw(st.integers(0, 2)) > 0:
        line_item = draw(st.sampled_from(catalog.line_items))
        t = line_item.targeting
        geo = [*t.countries, *t.regions, *t.cities]
        if geo:
            country, _, rest = draw(st.sampled_from(geo)).partition("-")
            region, _, city = rest.partition("-")
        for field, included in (
            ("device_type", t.device_types),
            ("os", t.os),
            ("inventory", t.inventory),
            ("publisher_id", t.publishers),
            ("site_id", t.sites),
        ):
            if included:
                fields[field] = draw(st.sampled_from(included))
        if fields["os"] == "macos":
            fields["os"] = "mac os x"
        for field, included in (
            ("domains", t.domains),
            ("content_categories", t.content_categories),
            ("segments", t.segments),
        ):
            if included:
                fields[field] = (draw(st.sampled_from(included)),)
        if t.hour_mask is not None and t.hours_timezone == "user":
            fields["hour_of_week"] = draw(
                st.sampled_from([h for h in range(168) if t.hour_mask >> h & 1])
            )
        if t.deals:
            deals = (draw(st.sampled_from(t.deals)),)
        own = [c for c in catalog.creatives if c.id in line_item.creative_ids]
        if own:
            creative = draw(st.sampled_from(own))
            if creative.kind == "native":
                slots.append("native")
            elif creative.sizes:
                w, h = draw(st.sampled_from(creative.sizes))
                slots.append(f"{creative.kind}:{w}x{h}")
            else:  # a player of any size, often one the line item names
                named = [
                    f"video:{size}"
                    for size in (*t.placement_sizes, *t.placement_sizes_exclude)
                    if size in ("640x360", "1280x720")
                ]
                players = ["video:", "video:640x360", "video:1280x720", *named * 3]
                slots.append(draw(st.sampled_from(players)))
    facts = RequestFacts(
        geo=geo_keys(country, region, city),
        now_micros=NOW + draw(st.integers(0, 3 * 60)) * 60_000_000,
        blocked_categories=tuple(draw(st.lists(st.sampled_from(CATEGORIES), max_size=1))),
        blocked_adomains=tuple(draw(st.lists(st.sampled_from(DOMAINS), max_size=1))),
        **fields,
    )
    imp = ImpFacts(
        slots=tuple(dict.fromkeys(slots)),
        deals=deals,
        private_auction=draw(st.integers(0, 5)) == 0,
    )
    return facts, imp


@settings(max_examples=250)
@given(st.data())
def test_index_returns_exactly_what_the_plain_rules_return(data):
    catalog = data.draw(catalogs())
    index = compile_index(catalog, NOW)
    for facts, imp in data.draw(st.lists(requests(catalog), min_size=1, max_size=6)):
        assert index.match(facts, imp).ids() == list(eligible_pairs(catalog, facts, imp))


@settings(max_examples=100)
@given(st.data())
def test_paused_line_items_match_nothing_and_the_rest_is_unchanged(data):
    catalog = data.draw(catalogs())
    facts, imp = data.draw(requests(catalog))
    index = compile_index(catalog, NOW)
    paused = set(data.draw(some([li.id for li in catalog.line_items])))
    matched = index.with_paused(paused).match(facts, imp).ids()
    expected = [pair for pair in eligible_pairs(catalog, facts, imp) if pair[0] not in paused]
    assert matched == expected
    assert index.match(facts, imp).ids() == list(eligible_pairs(catalog, facts, imp))


@given(st.sets(st.integers(0, 5_000)))
def test_bit_positions_are_the_set_bits_in_order(positions):
    bits = sum(1 << p for p in positions)
    assert bit_positions(bits).tolist() == sorted(positions)
