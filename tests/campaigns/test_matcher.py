"""The matcher keeps the index current: rebuilt when the catalog's revision moves or a flight
boundary passes, paused line items applied to every index it publishes, and the last index
kept serving when the catalog cannot answer."""

import asyncio
import time

import msgspec

from openbid.campaigns.bulk import load_demo_campaigns
from openbid.campaigns.matcher import CampaignMatcher
from openbid.campaigns.store import CampaignCatalog as Catalog
from openbid.campaigns.targeting import ImpFacts, RequestFacts, geo_keys
from tests.conftest import drop_catalog_tables

NOW = 1_709_726_400_000_000  # 2024-03-06T12:00:00Z
DAY = 86_400_000_000
# A phone in Los Angeles on a sports site, Wednesday noon its time.
FACTS = RequestFacts(
    geo=geo_keys("USA", "CA", "Los Angeles"),
    device_type="phone",
    os="ios",
    inventory="site",
    content_categories=("IAB17",),
    hour_of_week=2 * 24 + 12,
    now_micros=NOW,
)
IMP = ImpFacts(slots=("banner:320x50",))


class Clock:
    def __init__(self) -> None:
        self.micros = NOW

    def __call__(self) -> int:
        return self.micros


def _matched(matcher: CampaignMatcher, now_micros: int = NOW) -> set[str]:
    facts = msgspec.structs.replace(FACTS, now_micros=now_micros)
    return {line_item for line_item, _ in matcher.index.match(facts, IMP).ids()}


def _demo_catalog(tmp_path) -> Catalog:
    # A file: an in-memory SQLite database is another, empty one in the refresh thread.
    catalog = Catalog(f"sqlite:///{tmp_path}/catalog.db")
    catalog.migrate()
    load_demo_campaigns(catalog, now_micros=NOW)
    return catalog


def test_a_catalog_change_is_published_and_nothing_else_rebuilds(tmp_path):
    catalog = _demo_catalog(tmp_path)
    matcher = CampaignMatcher(catalog, now_micros=Clock())
    assert matcher.refresh()
    assert "li-nw-mobile-na" in _matched(matcher)
    first = matcher.index
    assert not matcher.refresh() and matcher.index is first
    catalog.delete_line_item("li-nw-mobile-na")
    assert matcher.refresh()
    assert "li-nw-mobile-na" not in _matched(matcher)
    assert matcher.index.revision == catalog.campaign_revision()


def test_paused_line_items_stay_paused_across_rebuilds(tmp_path):
    catalog = _demo_catalog(tmp_path)
    matcher = CampaignMatcher(catalog, now_micros=Clock())
    matcher.refresh()
    everything = _matched(matcher)
    matcher.pause({"li-nw-mobile-na", "li-fc-reach"})
    assert _matched(matcher) == everything - {"li-nw-mobile-na", "li-fc-reach"}
    catalog.delete_line_item("li-lumen-jp")  # any change: a new index is compiled
    matcher.refresh()
    assert _matched(matcher) == everything - {"li-nw-mobile-na", "li-fc-reach"}
    matcher.pause(())
    assert _matched(matcher) == everything


def test_a_flight_that_ends_is_not_matched_and_triggers_a_rebuild(tmp_path):
    catalog = _demo_catalog(tmp_path)
    clock = Clock()
    matcher = CampaignMatcher(catalog, now_micros=clock)
    matcher.refresh()
    ending = _matched(matcher)
    assert ending
    after_flights = NOW + 40 * DAY  # every demo flight lasts 30 days
    assert _matched(matcher, after_flights) == set()  # before any rebuild
    clock.micros = after_flights
    assert matcher.refresh()
    assert len(matcher.index) == 0


def test_an_unavailable_catalog_keeps_the_last_index(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path}/c.db")
    catalog.migrate()
    load_demo_campaigns(catalog, now_micros=NOW)
    matcher = CampaignMatcher(catalog, now_micros=Clock())
    assert asyncio.run(matcher.arefresh())
    published = matcher.index
    drop_catalog_tables(catalog.engine)
    assert not asyncio.run(matcher.arefresh(force=True))
    assert matcher.index is published and _matched(matcher)


def test_run_picks_up_changes(tmp_path):
    catalog = _demo_catalog(tmp_path)
    matcher = CampaignMatcher(catalog, now_micros=Clock(), refresh_s=0.01)

    async def scenario():
        task = asyncio.create_task(matcher.run())
        deadline = time.monotonic() + 10
        while matcher.index.revision == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        catalog.delete_line_item("li-nw-mobile-na")
        revision = catalog.campaign_revision()
        while matcher.index.revision != revision and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        return matcher.index.revision == revision

    assert asyncio.run(scenario())
    assert "li-nw-mobile-na" not in _matched(matcher)
