"""The simulated users: what they do agrees with the oracle draw for draw, and played over
HTTP against a real exchange (its sim DSPs on loopback ports, a market clock running fast)
every click goes through the exchange's click tracker, every conversion reaches /conv and is
attributed as the truth says, and the click rate matches the oracle's probabilities."""

from __future__ import annotations

import asyncio
import math
import time

import msgspec
import numpy as np
import pyarrow.compute as pc
import pytest

from openbid import clock
from openbid.domain import DemandPartner
from openbid.events import EventReader
from openbid.http.client import FanoutClient
from openbid.sim import Market
from openbid.sim.config import parse_market
from openbid.sim.server import DspServers
from openbid.sim.truth import user_outcome
from openbid.sim.truthlog import TRUTH_SCHEMA, TruthLog, read_truth
from openbid.sim.users import SimUsers, _Seen, click_url

from ..exchange.test_e2e import API_KEY, start, stop


def test_a_users_outcome_is_the_oracles_draw_for_draw(market):
    batch = market.generate(20_000, seed=4)
    outcomes = market.dsp_outcomes(batch)
    seen = market.impressions(batch, outcomes)
    assert len(seen.row) > 1000
    for i, row in enumerate(seen.row[:2000]):
        outcome = user_outcome(
            market, batch.codes[row].tolist(), int(seen.advertiser[i]), int(batch.keys[row])
        )
        assert outcome.click_probability == pytest.approx(seen.click_probability[i], rel=1e-12)
        assert outcome.conversion_probability == pytest.approx(seen.conversion_probability[i])
        assert (outcome.clicked, outcome.converted, outcome.view_converted) == (
            bool(seen.clicked[i]),
            bool(seen.converted[i]),
            bool(seen.view_converted[i]),
        )
        assert not (outcome.converted and outcome.view_converted)
        assert 0 < outcome.conversion_delay_s <= 30 * 86_400 and outcome.value_micros > 0
    # Post-view conversions are a `view_through` share of what clicks would have brought.
    view = market.config.users.conversion.view_through
    assert np.allclose(seen.view_conversion_probability, view * seen.conversion_probability)


def test_conversion_delays_are_minutes_to_days(market):
    batch = market.generate(20_000, seed=5)
    code = market.vocab["advertiser"].code("shoes-online.example")
    delays = np.array(
        [
            user_outcome(market, batch.codes[row].tolist(), code, int(key)).conversion_delay_s
            for row, key in enumerate(batch.keys)
        ]
    )
    delay = market.config.users.conversion.delay
    assert delays.max() <= delay.max_s == 30 * 86_400
    # Log-logistic around two hours: about 10% within ten minutes, 10% after a day.
    for seconds, share in ((600, 0.097), (7_200, 0.5), (86_400, 0.903), (7 * 86_400, 0.982)):
        expected = 1 / (1 + (delay.median_s / seconds) ** delay.shape)
        assert expected == pytest.approx(share, abs=0.001)
        assert np.mean(delays <= seconds) == pytest.approx(expected, abs=0.01)


def test_the_click_url_is_found_as_a_browser_or_player_finds_it():
    assert click_url(
        "<VAST><Ad><ClickThrough><![CDATA[https://ex/t/click?c=1]]></ClickThrough>"
    ) == ("https://ex/t/click?c=1")
    assert click_url('{"native": {"link": {"url": "https://ex/n"}}}') == "https://ex/n"
    assert click_url("<div>no link</div>") == "" and click_url("{bad json") == ""


def test_pending_actions_are_bounded_and_wait_for_the_market_clock(market):
    previous = clock.set_clock(clock.MarketClock(speed=1.0, start_s=1_900_000_000.0))

    async def main():
        users = SimUsers(market, "http://127.0.0.1:9", lambda _: "k", max_pending=2)
        batch = market.generate(400, seed=9)
        code = market.vocab["advertiser"].code("shoes-online.example")
        for row in range(len(batch)):
            outcome = user_outcome(market, batch.codes[row].tolist(), code, int(batch.keys[row]))
            # a click that finds no link in its ad: played without any network
            seen = _Seen(0, "shoes-online.example", "o1", outcome, "", 0.0)
            users._schedule(1_900_000_000.0 + 60 + row, "click", seen)
        assert (users.pending, users.stats.dropped) == (2, 398)
        assert users.play_due() == 0  # a minute of market time has not passed
        clock.set_clock(clock.MarketClock(speed=1.0, start_s=1_900_000_000.0 + 60.5))
        assert users.play_due() == 1 and users.pending == 1
        await users.close()
        return users.stats.click_failures

    try:
        assert asyncio.run(main()) == 1
    finally:
        clock.set_clock(previous)


@pytest.fixture(scope="module")
def clicky_market(tmp_path_factory) -> Market:
    """The default market with users who click and convert often, soon (market time), so
    a few hundred impressions show it with statistical power."""
    from openbid.sim.config import load_market_config

    data = msgspec.to_builtins(load_market_config("default"))
    users = data["users"]
    users["click"]["base_logit"] = -1.6
    users["click"]["delay"] = {"median_s": 5.0, "shape": 2.0, "max_s": 60.0}
    users["conversion"].update(
        base_logit=0.5,
        view_through=0.15,
        delay={"median_s": 60.0, "shape": 1.5, "max_s": 600.0},
        duplicate_share=0.2,
    )
    return Market(parse_market(data, "clicky"))


def test_users_click_and_convert_over_http_as_the_oracle_says(tmp_path, clicky_market):
    market = clicky_market
    previous = clock.set_clock(clock.MarketClock(speed=200.0))

    async def main():
        h = await start(tmp_path, [])
        dsps = await DspServers(market, simulate_latency=False).start()
        client = FanoutClient()
        users = SimUsers(
            market,
            h.base,
            h.platform.exchange_server.conversion_key,
            client=client,
            truth=TruthLog(tmp_path / "truth", flush_rows=200),
            render_rate=1.0,
        )
        playing = asyncio.create_task(users.run())
        try:
            vendors = {d.name: d.vendor_id for d in market.config.dsps}
            for name, url in dsps.urls.items():
                h.platform.catalog.upsert_demand_partner(
                    DemandPartner(name, url, seat=name, vendor_id=vendors[name], timeout_ms=250)
                )
            h.platform.exchange_server.refresh()
            batch = market.generate(1200, seed=11, start_s=clock.now(), span_s=60.0)
            headers = f"x-api-key: {API_KEY}\r\n".encode()
            slots = asyncio.Semaphore(16)

            async def one(row: int, body: bytes) -> None:
                async with slots:
                    reply = await client.post(
                        f"{h.base}/openrtb2/auction", body, timeout_s=5, headers=headers
                    )
                    if reply.status != 200:
                        return
                    response = msgspec.json.decode(reply.body)
                    for seatbid in response["seatbid"]:
                        for bid in seatbid["bid"]:
                            await users.saw(batch, row, bid, response["bidid"])

            await asyncio.gather(*(one(row, body) for row, body in enumerate(batch.bodies)))
            deadline = time.monotonic() + 60
            while not users.idle:  # the market clock runs 200x: minutes pass in seconds
                assert time.monotonic() < deadline, f"{users.pending} actions still pending"
                await asyncio.sleep(0.05)
            return batch, users.stats
        finally:
            playing.cancel()
            await users.close()
            client.close()
            await dsps.stop()
            await stop(h)

    try:
        batch, stats = asyncio.run(main())
    finally:
        clock.set_clock(previous)

    truth = read_truth(tmp_path / "truth")
    assert truth.schema == TRUTH_SCHEMA and truth.num_rows == stats.rendered > 300
    reader = EventReader(tmp_path / "events")
    impressions = reader.read_table("impression")
    assert sorted(impressions.column("bid_id").to_pylist()) == sorted(
        truth.column("bid_id").to_pylist()
    )
    # Clicks: exactly the impressions the truth drew as clicked went through the tracker.
    clicked = truth.filter(truth.column("clicked"))
    clicks = reader.read_table("click")
    assert stats.clicks == clicks.num_rows == clicked.num_rows and stats.click_failures == 0
    assert sorted(clicks.column("bid_id").to_pylist()) == sorted(
        clicked.column("bid_id").to_pylist()
    )
    # ... and their number is what the oracle's probabilities expect (seeded: 4 sigma).
    p = truth.column("click_probability").to_numpy()
    expected, sigma = p.sum(), math.sqrt((p * (1 - p)).sum())
    assert abs(clicked.num_rows - expected) <= 4 * sigma, (clicked.num_rows, expected, sigma)
    # Conversions: every one the truth drew reached /conv once (duplicates answered, not
    # logged); post-click ones attributed to their click, post-view ones to the impression
    # when the browser held our cookie (consent to storage), else unattributed.
    keys = {
        request_id: int(key) for request_id, key in zip(batch.request_ids, batch.keys, strict=True)
    }
    converted = truth.filter(pc.or_(truth.column("converted"), truth.column("view_converted")))
    conversions = {e["conversion_id"]: e for e in reader.read_table("conversion").to_pylist()}
    assert converted.num_rows > 30
    assert sorted(conversions) == sorted(
        f"o{keys[r]:016x}" for r in converted["request_id"].to_pylist()
    )
    for row in converted.to_pylist():
        event = conversions[f"o{keys[row['request_id']]:016x}"]
        if row["converted"]:
            assert event["attribution"] == "click" and event["bid_id"] == row["bid_id"]
            assert event["source"] == ("postback" if row["postback"] else "pixel")
        else:
            assert event["source"] == "pixel"
            assert (event["attribution"], event["reason"]) in (("view", ""), ("none", "no_touch"))
        assert event["value_micros"] == round(row["value_micros"], -4)  # reported in cents
    views = [e for e in conversions.values() if e["attribution"] == "view"]
    assert views and stats.conversions["duplicate"] > 0
    assert stats.conversions["click"] + stats.conversions["view"] + stats.conversions[
        "unattributed"
    ] == len(conversions)
