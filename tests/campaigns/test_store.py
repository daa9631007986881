"""The buy side's catalog on every backend: SQLite file and real PostgreSQL, via migrations."""

import pytest

from openbid.campaigns.model import (
    FULL_WEEK_MASK,
    Advertiser,
    Campaign,
    CampaignSet,
    Creative,
    FrequencyCap,
    LineItem,
    NativeAd,
    Targeting,
)
from openbid.campaigns.store import CampaignCatalog as Catalog
from openbid.campaigns.validate import InvalidRecord
from openbid.stores import StoreError, StoreUnavailable
from tests.conftest import drop_catalog_tables


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/catalog.db"
    else:
        url = request.getfixturevalue("postgres_url")
    catalog = Catalog(url)
    catalog.migrate()
    yield catalog
    if request.param == "postgresql":
        drop_catalog_tables(catalog.engine)
    catalog.close()


ADVERTISER = Advertiser(id="adv-1", name="Brand", domain="brand.example")
BANNER = Creative(
    id="cr-banner",
    advertiser_id="adv-1",
    kind="banner",
    landing_url="https://brand.example/",
    name="Leaderboard",
    sizes=((728, 90), (970, 250)),
    adomain=("brand.example",),
    categories=("IAB18", "IAB18-3"),
    markup="<a href='https://brand.example/'>ad</a>",
    approval="approved",
)
NATIVE = Creative(
    id="cr-native",
    advertiser_id="adv-1",
    kind="native",
    landing_url="https://brand.example/n",
    adomain=("brand.example",),
    native=NativeAd(title="Hello", image_url="https://cdn.example/i.png", image_w=1200),
)
CAMPAIGN = Campaign(
    id="cmp-1",
    advertiser_id="adv-1",
    name="Spring",
    start_micros=1_709_510_400_000_000,
    end_micros=1_712_188_800_000_000,
    total_budget_micros=5_000_000_000_000,  # 5 million: past 32 bits
    daily_budget_micros=250_000_000,
    goal="cpc",
    goal_amount_micros=450_000,
    tier="guaranteed",
    max_bid_cpm_micros=9_000_000,
    min_bid_cpm_micros=100_000,
    timezone="Europe/Paris",
    frequency_caps=(FrequencyCap(5, 604_800),),
)
LINE_ITEM = LineItem(
    id="li-1",
    campaign_id="cmp-1",
    name="Mobile",
    creative_ids=("cr-native", "cr-banner"),
    targeting=Targeting(
        countries=("USA", "CAN"),
        regions_exclude=("USA-TX",),
        device_types=("phone",),
        content_categories=("IAB17",),
        hour_mask=FULL_WEEK_MASK ^ 1,  # the 168th bit set: kept exactly
        hours_timezone="UTC",
        deals=("deal-1",),
    ),
    frequency_caps=(FrequencyCap(2, 86_400), FrequencyCap(1, 3_600)),
    daily_budget_micros=100_000_000,
)
RECORDS = CampaignSet(
    advertisers=(ADVERTISER,),
    campaigns=(CAMPAIGN,),
    line_items=(LINE_ITEM,),
    creatives=(BANNER, NATIVE),
)


def test_records_read_back_equal(catalog):
    counts = catalog.apply_campaign_set(RECORDS)
    assert (counts.created, counts.updated, counts.unchanged) == (5, 0, 0)
    assert catalog.advertiser("adv-1") == ADVERTISER
    assert catalog.campaign("cmp-1") == CAMPAIGN
    assert catalog.line_item("li-1") == LINE_ITEM
    assert catalog.creative("cr-native") == NATIVE
    assert catalog.creatives("adv-1") == [BANNER, NATIVE]
    assert catalog.campaigns("adv-1") == [CAMPAIGN] and catalog.campaigns("other") == []
    assert catalog.line_items("cmp-1") == [LINE_ITEM]
    snapshot = catalog.campaign_set()
    assert msgspec_replace(snapshot, revision=0) == RECORDS
    assert snapshot.revision == catalog.campaign_revision() > 0


def msgspec_replace(records, **changes):
    import msgspec

    return msgspec.structs.replace(records, **changes)


def test_upserts_are_idempotent_and_only_changes_move_the_revision(catalog):
    catalog.apply_campaign_set(RECORDS)
    revision = catalog.campaign_revision()
    again = catalog.apply_campaign_set(RECORDS)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 5)
    assert catalog.campaign_revision() == revision
    changed = msgspec_replace(LINE_ITEM, creative_ids=("cr-banner",))
    counts = catalog.upsert_line_item(changed)
    assert (counts.created, counts.updated) == (0, 1)
    assert catalog.line_item("li-1").creative_ids == ("cr-banner",)
    assert catalog.campaign_revision() == revision + 1


def test_an_invalid_record_is_refused_naming_the_field(catalog):
    catalog.upsert_advertiser(ADVERTISER)
    revision = catalog.campaign_revision()
    over = msgspec_replace(CAMPAIGN, daily_budget_micros=6_000_000_000_000)
    with pytest.raises(InvalidRecord, match="daily_budget_micros: the daily budget"):
        catalog.upsert_campaign(over)
    no_size = msgspec_replace(BANNER, sizes=())
    with pytest.raises(InvalidRecord, match="sizes: a banner creative needs at least one size"):
        catalog.upsert_creative(no_size)
    unknown = msgspec_replace(BANNER, categories=("IAB99",))
    with pytest.raises(InvalidRecord, match="categories: unknown IAB category 'IAB99'"):
        catalog.upsert_creative(unknown)
    assert catalog.campaign("cmp-1") is None and catalog.creatives() == []
    assert catalog.campaign_revision() == revision


def test_line_item_references_are_checked(catalog):
    catalog.apply_campaign_set(msgspec_replace(RECORDS, line_items=()))
    with pytest.raises(InvalidRecord, match="campaign_id: no campaign 'nope'"):
        catalog.upsert_line_item(msgspec_replace(LINE_ITEM, campaign_id="nope"))
    with pytest.raises(InvalidRecord, match="creative_ids: no creative 'cr-x'"):
        catalog.upsert_line_item(msgspec_replace(LINE_ITEM, creative_ids=("cr-x",)))
    other = Advertiser(id="adv-2", name="Other")
    theirs = msgspec_replace(BANNER, id="cr-theirs", advertiser_id="adv-2")
    catalog.apply_campaign_set(CampaignSet(advertisers=(other,), creatives=(theirs,)))
    with pytest.raises(InvalidRecord, match="belongs to advertiser 'adv-2'"):
        catalog.upsert_line_item(msgspec_replace(LINE_ITEM, creative_ids=("cr-theirs",)))
    assert catalog.line_items() == []


def test_a_set_is_applied_whole_or_not_at_all(catalog):
    bad_line_item = msgspec_replace(LINE_ITEM, id="li-2", creative_ids=("cr-missing",))
    with pytest.raises(InvalidRecord, match="li-2"):
        catalog.apply_campaign_set(msgspec_replace(RECORDS, line_items=(LINE_ITEM, bad_line_item)))
    assert catalog.campaign_set() == CampaignSet()


def test_a_campaign_of_an_unknown_advertiser_is_refused(catalog):
    with pytest.raises(StoreError, match="catalog refused"):
        catalog.upsert_campaign(CAMPAIGN)


def test_deletes_cascade(catalog):
    catalog.apply_campaign_set(RECORDS)
    assert catalog.delete_creative("cr-native")
    assert catalog.line_item("li-1").creative_ids == ("cr-banner",)
    revision = catalog.campaign_revision()
    assert catalog.delete_advertiser("adv-1")
    assert catalog.campaign_set() == CampaignSet(revision=revision + 1)
    assert not catalog.delete_campaign("cmp-1")


def test_a_missing_schema_is_store_unavailable(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path}/empty.db")
    for read in (catalog.campaign_revision, catalog.campaign_set, catalog.campaigns):
        with pytest.raises(StoreUnavailable, match="catalog at"):
            read()
    catalog.close()
