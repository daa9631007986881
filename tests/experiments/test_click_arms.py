"""Click A/B arms price house demand: an auction in the `ctr` challenger arm is priced by
the challenger's click model (and its bid logs that model's version), one in control by
production's; stopping the arm at run time returns every auction to production."""

from __future__ import annotations

import asyncio

import pytest

from openbid.campaigns.store import CampaignCatalog
from openbid.config import ModelsConfig
from openbid.events import EventReader
from openbid.experiments.arms import read_arms, start_arm, stop_arm, write_arms
from tests.campaigns.test_house import campaign, campaign_set, click_model

from .conftest import publish, start_server

HOUSE_ENV = {
    "OPENBID_CAMPAIGNS__PACING": "false",
    "OPENBID_CAMPAIGNS__SHADING": "false",
    "OPENBID_CAMPAIGNS__BIDDER": "false",
}


def test_a_click_arm_prices_house_bids_with_its_model_until_it_is_stopped(tmp_path, store):
    publish(store, "ctr", "1", click_model(tmp_path / "made" / "a", 0.01), alias="production")
    publish(store, "ctr", "2", click_model(tmp_path / "made" / "b", 0.03), alias="challenger")
    catalog = CampaignCatalog(f"sqlite:///{tmp_path}/catalog.db")
    catalog.migrate()
    catalog.apply_campaign_set(campaign_set(campaign("cpc", "cpc", 20_000)))
    write_arms(store, start_arm(None, "ctr", "challenger", "@challenger", 0.5))
    models = ModelsConfig(
        store_url=store.root,
        cache_dir=str(tmp_path / "cache"),
        serve=["ctr"],
        poll_interval_s=0.05,
    )
    users = [f"u{i}" for i in range(30)]

    async def main():
        server = await start_server(tmp_path, models, HOUSE_ENV)
        try:
            assert server.platform.arm_sync.serving["ctr"] == ["challenger"]
            for user in users:
                await server.routed(user)
            write_arms(store, stop_arm(read_arms(store, "ctr"), "ctr", None))
            await server.until(lambda: not server.platform.exchange.arms.plan.arms)
            for user in users:
                await server.routed(user)
        finally:
            await server.stop()

    asyncio.run(main())
    reader = EventReader(tmp_path / "events")
    auctions = reader.read_table("auction").to_pylist()
    house = {
        b["auction_id"]: b for b in reader.read_table("bid").to_pylist() if b["dsp"] == "openbid"
    }
    assert len(auctions) == 2 * len(users) and set(house) == {a["auction_id"] for a in auctions}
    priced = [
        (a["ab_arm"], house[a["auction_id"]]["click_model"], house[a["auction_id"]]["price_micros"])
        for a in auctions
    ]
    # CPC $0.02: pCTR 0.01 prices a $0.20 CPM, 0.03 a $0.60 CPM (the same request by arm),
    # under the DSPs' $1 bids: every house bid loses and frees its hold, the budget lasts
    by_arm = {"ctr=challenger": ("ctr-0.03", 6e5), "ctr=control": ("ctr-0.01", 2e5)}
    during = priced[: len(users)]
    assert {arm for arm, _, _ in during} == set(by_arm)
    for arm, version, price in during:
        assert (version, price) == (by_arm[arm][0], pytest.approx(by_arm[arm][1], abs=5))
    assert [(arm, version) for arm, version, _ in priced[len(users) :]] == [("", "ctr-0.01")] * len(
        users
    )
