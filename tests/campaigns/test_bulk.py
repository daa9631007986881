"""Bulk import and export: the row error report, idempotent re-import, round trips through
YAML and CSV, the demo set, and the `openbid campaigns` commands."""

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from openbid.campaigns.bulk import (
    BulkError,
    export_csv,
    export_yaml,
    import_file,
    load_demo_campaigns,
)
from openbid.campaigns.index import compile_index
from openbid.campaigns.store import CampaignCatalog as Catalog
from openbid.campaigns.targeting import imp_facts, request_facts
from openbid.cli import main

DATA = Path(__file__).with_name("data")
NOW = 1_709_726_400_000_000  # 2024-03-06T12:00:00Z


@pytest.fixture
def catalog(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path}/catalog.db")
    catalog.migrate()
    yield catalog
    catalog.close()


def test_bad_rows_are_reported_with_row_field_and_reason(catalog):
    report = import_file(catalog, DATA / "bad_rows.csv", now_micros=NOW)
    found = [(e.row, e.id, e.field, e.reason) for e in report.errors]
    expected = [
        (4, "cr-nosize", "sizes", "a banner creative needs at least one size"),
        (5, "cr-badcat", "categories", "unknown IAB category 'IAB99'"),
        (
            7,
            "cmp-overdaily",
            "daily_budget",
            "the daily budget (1500) exceeds the total budget (1000)",
        ),
        (8, "cmp-baddate", "start", "'next tuesday' is not a date or time (2024-03-04, today+30d)"),
        (9, "cmp-cents", "goal_amount", "'2.0000001' has more than 6 decimals"),
        (
            11,
            "li-badcountry",
            "targeting.countries",
            "'XYZ' is not an ISO 3166 alpha-3 country (USA, DEU ...)",
        ),
        (12, "li-orphan", "campaign", "campaign 'cmp-overdaily' was refused (row 7)"),
        (13, "li-refusedcreative", "creatives", "creative 'cr-nosize' was refused (row 4)"),
        (14, "li-badhours", "targeting.hours", "'25' is not an hour from 00 to 24"),
        (15, "li-ok", "id", "repeats row 10"),
    ]
    assert found[: len(expected)] == expected
    typo, kind = found[len(expected) :]
    assert typo[:3] == (16, "cmp-typo", "colour") and typo[3].startswith("unknown field")
    assert kind[:3] == (17, "x-1", "record") and "unknown record kind 'spaceship'" in kind[3]
    assert (report.read, report.created, report.updated, report.unchanged) == (16, 4, 0, 0)
    line_item = catalog.line_item("li-ok")
    assert line_item.targeting.countries == ("USA", "CAN")  # alpha-2 read leniently
    assert line_item.frequency_caps[0].period_s == 86_400
    assert str(report.errors[0]) == (
        "row 4: creative 'cr-nosize': sizes: a banner creative needs at least one size"
    )


def test_yaml_rows_are_numbered_by_line(catalog, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "advertisers:\n"
        "  - {id: adv-1, name: Brand, domain: brand.example}\n"
        "campaigns:\n"
        "  - id: cmp-1\n"
        "    advertiser: adv-1\n"
        "    name: Spring\n"
        "    start: 2024-03-04\n"
        "    end: 2024-03-01\n"
        "    total_budget: 100\n"
        "    goal_amount: 1\n"
        "    line_items:\n"
        "      - {id: li-1, creatives: [cr-1], targeting: {device_types: [fridge]}}\n"
    )
    report = import_file(catalog, path, now_micros=NOW)
    assert [(e.row, e.record, e.field) for e in report.errors] == [
        (4, "campaign", "end"),
        (12, "line_item", "targeting.device_types"),
    ]
    assert report.errors[0].reason == "the flight must end after it starts"


def test_a_file_that_is_not_campaigns_is_refused_whole(tmp_path, catalog):
    path = tmp_path / "x.csv"
    path.write_text("id,name\n1,a\n")
    with pytest.raises(BulkError, match="needs a 'record' column"):
        import_file(catalog, path)
    path = tmp_path / "x.yaml"
    path.write_text("widgets: []\n")
    with pytest.raises(BulkError, match="unknown section 'widgets'"):
        import_file(catalog, path)


def test_re_importing_the_demo_changes_nothing(catalog):
    first = load_demo_campaigns(catalog, now_micros=NOW)
    assert first.errors == [] and first.created == first.read
    revision = catalog.campaign_revision()
    second = load_demo_campaigns(catalog, now_micros=NOW)
    assert (second.created, second.updated, second.unchanged) == (0, 0, first.read)
    assert catalog.campaign_revision() == revision


@pytest.mark.parametrize("file_format", ["yaml", "csv"])
def test_export_then_import_gives_the_same_catalog(catalog, tmp_path, file_format):
    load_demo_campaigns(catalog, now_micros=NOW)
    exported = catalog.campaign_set()
    text = export_yaml(exported) if file_format == "yaml" else export_csv(exported)
    path = tmp_path / f"campaigns.{file_format}"
    path.write_text(text)
    fresh = Catalog(f"sqlite:///{tmp_path}/fresh.db")
    fresh.migrate()
    report = import_file(fresh, path, now_micros=NOW + 86_400_000_000)  # relative dates resolved
    assert report.errors == []
    assert msgspec.structs.replace(fresh.campaign_set(), revision=0) == msgspec.structs.replace(
        exported, revision=0
    )
    again = import_file(catalog, path)
    assert (again.created, again.updated) == (0, 0)
    fresh.close()


def test_a_changed_row_updates_its_record_only(catalog, tmp_path):
    load_demo_campaigns(catalog, now_micros=NOW)
    text = export_yaml(catalog.campaign_set()).replace("goal_amount: 0.6", "goal_amount: 0.65")
    path = tmp_path / "changed.yaml"
    path.write_text(text)
    report = import_file(catalog, path)
    assert (report.created, report.updated, report.errors) == (0, 1, [])
    assert catalog.campaign("cmp-nw-spring-sale").goal_amount_micros == 650_000


def test_a_dry_run_writes_nothing(catalog):
    report = import_file(
        catalog, Path(__file__).parents[2] / "openbid/campaigns/demo.yaml", dry_run=True
    )
    assert report.created == report.read > 0 and report.errors == []
    assert catalog.campaign_set().campaigns == ()


def test_the_demo_set_buys_the_simulated_market():
    """Every demo line item that is active and not a deal finds requests among the simulated
    market's own traffic (its countries, devices, sizes, categories, hours)."""
    from openbid.enrich import build_auction_context
    from openbid.exchange.features import auction_features
    from openbid.openrtb import decode_bid_request
    from openbid.sim import Market

    market = Market.load("default")
    batch = market.generate(3_000, seed=5)
    start_micros = int(batch.ts_ms[0]) * 1000
    catalog = Catalog("sqlite://")
    catalog.migrate()
    load_demo_campaigns(catalog, now_micros=start_micros)
    index = compile_index(catalog.campaign_set(), start_micros)
    bought = set()
    for body, ts_ms in zip(batch.bodies, batch.ts_ms, strict=True):
        request = decode_bid_request(body)
        # The user's local hour from the request's own time, not the wall clock's.
        moment = datetime.fromtimestamp(int(ts_ms) / 1000, tz=UTC)
        context = build_auction_context(request, now=moment)
        facts = request_facts(
            auction_features(request, context, None), now_micros=int(ts_ms) * 1000
        )
        bought.update(li for li, _ in index.match(facts, imp_facts(request.imp[0])).ids())
    expected = {
        li.id
        for li in catalog.line_items()
        if not li.targeting.deals and li.campaign_id != "cmp-nw-paused"
    }
    assert expected - bought == set()
    assert "li-voy-pmp" not in bought and "li-nw-winter" not in bought
    catalog.close()


def test_the_campaigns_commands(tmp_path):
    url = f"sqlite:///{tmp_path}/cli.db"
    runner = CliRunner()
    demo = str(Path(__file__).parents[2] / "openbid/campaigns/demo.yaml")
    result = runner.invoke(main, ["campaigns", "import", demo, "--catalog", url])
    assert result.exit_code == 0, result.output
    assert "55 new" in result.output
    listed = runner.invoke(main, ["campaigns", "list", "--catalog", url])
    assert "cmp-lumen-cards" in listed.output and "12 campaigns, 16 line items" in listed.output
    out = tmp_path / "export.csv"
    exported = runner.invoke(main, ["campaigns", "export", "--out", str(out), "--catalog", url])
    assert exported.exit_code == 0 and out.read_text().startswith("record,")
    bad = runner.invoke(main, ["campaigns", "import", str(DATA / "bad_rows.csv"), "--catalog", url])
    assert bad.exit_code == 1
    assert "row 4: creative 'cr-nosize': sizes:" in bad.output


def test_the_demo_advertisers_are_advertisers_the_simulated_market_knows():
    """The demo's simulated users click and convert only on ads of advertisers their market
    knows (its oracle draws from them): a house advertiser it does not know would get
    impressions and never a click, and the demo's click model would learn that."""
    import yaml

    from openbid.sim.market import Market

    market = Market.load("default")
    known = {a.domain: a.category for dsp in market.config.dsps for a in dsp.advertisers}
    demo = yaml.safe_load((Path(__file__).parents[2] / "openbid/campaigns/demo.yaml").read_text())
    creatives = demo["creatives"]
    for advertiser in demo["advertisers"]:
        assert advertiser["domain"] in known, advertiser["id"]
        categories = {
            c for cr in creatives if cr["advertiser"] == advertiser["id"] for c in cr["categories"]
        }
        assert known[advertiser["domain"]] in {c.split("-")[0] for c in categories}, advertiser[
            "id"
        ]
