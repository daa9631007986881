"""End to end over loopback HTTP: openbid's exchange calling openbid's own
`/bidder/openrtb` as a DSP (the win notice charges the campaign once, the billing notice
after it is a duplicate), the endpoint's 400 naming the field and its 204; and house demand
inside the exchange beating a DSP's dearer open bid by its tier, billed once by our
impression tracker with the bid event naming its campaign."""

from __future__ import annotations

import asyncio
import html
import json
import re

from openbid import clock
from openbid.campaigns.budgets import day_of
from openbid.config import load_config
from openbid.domain import DemandPartner, Placement
from openbid.events import EventReader
from openbid.http.client import FanoutClient
from openbid.platform import Platform
from tests.campaigns.test_house import campaign, campaign_set
from tests.exchange.test_e2e import API_KEY, ScriptedDsp, _free_port, bid_request, poll


async def start(tmp_path, records, *, house_in_exchange: bool, dsps=()) -> Platform:
    for dsp in dsps:
        await dsp.start()
    port = _free_port()
    config = load_config(
        environ={
            "OPENBID_SERVER__PORT": str(port),
            "OPENBID_EXCHANGE__PUBLIC_URL": f"http://127.0.0.1:{port}",
            "OPENBID_EVENTS__DIR": str(tmp_path / "events"),
            "OPENBID_EVENTS__FLUSH_INTERVAL_S": "0.05",
            "OPENBID_STORES__CATALOG_URL": f"sqlite:///{tmp_path}/catalog.db",
            "OPENBID_EXCHANGE__TRACKER_SECRET": "test-secret-0123456789abcdef",
            "OPENBID_EXCHANGE__NOTICE_PRIVATE_HOSTS": "true",
            "OPENBID_CAMPAIGNS__ENABLED": str(house_in_exchange).lower(),
            "OPENBID_CAMPAIGNS__PACING": "false",
            "OPENBID_CAMPAIGNS__SHADING": "false",
        }
    )
    platform = Platform(config)
    platform.open()
    catalog = platform.catalog
    catalog.add_publisher("pub-1", "News", api_key=API_KEY, floor_micros=100_000)
    catalog.add_placement(Placement("pl-1", "pub-1", "top", sizes=((300, 250),)))
    catalog.apply_campaign_set(records)
    if not house_in_exchange:  # openbid's own bidder, called as a DSP over loopback
        catalog.upsert_demand_partner(
            DemandPartner(
                "openbid-dsp", f"http://127.0.0.1:{port}/bidder/openrtb", seat="openbid",
                timeout_ms=250,
            )
        )  # fmt: skip
    for dsp in dsps:
        catalog.upsert_demand_partner(
            DemandPartner(dsp.name, f"http://127.0.0.1:{dsp.port}/bid", seat=dsp.name)
        )
    platform.exchange_server.refresh()
    await platform.serve()
    return platform


async def post(port: int, path: str, body: bytes, key: str = API_KEY) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        + body
    )
    data = await reader.read()
    writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def spent(platform: Platform, campaign_id: str) -> int:
    return platform.house.ledger.spent_micros(campaign_id, day_of(clock.now()))


def test_the_exchange_buys_from_openbids_bidder_and_the_win_charges_the_campaign_once(tmp_path):
    records = campaign_set(campaign("cpm-2", "cpm", 2_000_000), countries=())  # tags: no geo

    async def main():
        platform = await start(tmp_path, records, house_in_exchange=False)
        client = FanoutClient()
        base = f"http://127.0.0.1:{platform.port}"
        try:
            # the bidder alone: a bad request names the field, a request it cannot buy is 204
            status, body = await post(platform.port, "/bidder/openrtb", b'{"id": "r", "imp": 3}')
            assert status == 400 and json.loads(body)["field"].startswith("request.imp")
            video = bid_request(imp=[{"id": "1", "video": {"mimes": ["video/mp4"]}}])
            assert (await post(platform.port, "/bidder/openrtb", json.dumps(video).encode()))[
                0
            ] == 204
            # the exchange's ad tag: our bidder wins at first price, the exchange fires its
            # nurl with ${AUCTION_PRICE} = 2, which records $2 CPM / 1000 once
            page = await client.get(f"{base}/ad?placement=pl-1&uid=u-1", timeout_s=5)
            assert page.status == 200, page.body
            await poll(lambda: spent(platform, "cpm-2") == 2_000)
            pixel = html.unescape(re.search(rb'src="([^"]*/t/imp\?[^"]*)"', page.body)[1].decode())
            for _ in range(2):  # the impression fires the bidder's burl: the same bid id
                assert (await client.get(pixel, timeout_s=5)).status == 200
            await poll(lambda: platform.exchange.notices.in_flight == 0)
            await asyncio.sleep(0.05)
            assert spent(platform, "cpm-2") == 2_000
            account = platform.house.banker.accounts["cpm-2"]
            assert (account.spent_micros, account.held_micros) == (2_000, 0)
        finally:
            client.close()
            await platform.close()

    asyncio.run(main())


def test_house_demand_in_the_exchange_wins_by_its_tier_and_bills_once(tmp_path):
    records = campaign_set(
        campaign("guaranteed", "cpm", 1_000_000, tier="guaranteed"), countries=("DEU",)
    )
    alpha = ScriptedDsp("alpha", 1.5)

    async def main():
        platform = await start(tmp_path, records, house_in_exchange=True, dsps=[alpha])
        client = FanoutClient()
        try:
            status, body = await post(
                platform.port, "/openrtb2/auction", json.dumps(bid_request(at=1)).encode()
            )
            assert status == 200, body
            bid = json.loads(body)["seatbid"][0]["bid"][0]
            assert bid["crid"] == "cr-guaranteed" and bid["price"] == 1.0
            for _ in range(2):
                assert (await client.get(bid["burl"], timeout_s=5)).status == 200
            assert spent(platform, "guaranteed") == 1_000  # $1 CPM, one impression, once
            await poll(lambda: alpha.notices["loss"])  # the DSP lost to a higher tier
            assert alpha.notices["loss"] == ["r=103"]
        finally:
            client.close()
            await platform.close()
            await alpha.stop()
        house_bids = [
            row
            for row in EventReader(tmp_path / "events").read_table("bid").to_pylist()
            if row["dsp"] == "openbid"
        ]
        assert [(b["campaign_id"], b["won"], b["value_micros"]) for b in house_bids] == [
            ("guaranteed", True, 1_000_000)
        ]

    asyncio.run(main())
