"""Market files: the shipped markets load, and bad files are refused with the key named."""

from pathlib import Path

import pytest

from openbid.sim import Market, MarketError
from openbid.sim.config import load_market_config, parse_market


def test_shipped_markets_have_the_promised_shape(market, hard_market):
    assert len(market.dsps) == 8
    assert len(hard_market.dsps) > len(market.dsps)
    # `extends: default` keeps the default traffic and replaces the DSP list.
    assert hard_market.config.traffic.countries == market.config.traffic.countries
    assert hard_market.name == "hard" and hard_market.seed != market.seed


def test_a_wrong_type_names_the_key(market_data):
    data = market_data()
    data["dsps"][2]["bid_model"]["base_logit"] = "high"
    with pytest.raises(MarketError) as error:
        parse_market(data, "test.yaml")
    assert (
        str(error.value)
        == "test.yaml: market.dsps[2].bid_model.base_logit: expected float, got str"
    )


def test_an_unknown_key_is_refused(market_data):
    data = market_data()
    data["dsps"][0]["gates"]["continents"] = ["EU"]
    with pytest.raises(MarketError, match=r"market.dsps\[0\].gates.continents: unknown key"):
        parse_market(data)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["dsps"][1]["bid_model"]["weights"].update(country={"XXX": 1.0}),
            r"market.dsps\[1\].bid_model.weights.country.XXX: unknown country",
        ),
        (
            lambda d: d["dsps"][1]["bid_model"]["weights"].update(colour={"red": 1.0}),
            r"market.dsps\[1\].bid_model.weights.colour: unknown feature colour",
        ),
        (
            lambda d: d["dsps"][0]["bid_model"]["interactions"][0]["weights"].update({"USA": 1.0}),
            r"market.dsps\[0\].bid_model.interactions\[0\].weights.USA: expected '<country>,<format>'",
        ),
        (
            lambda d: d["dsps"][3]["gates"].update(countries=["Germany"]),
            r"market.dsps\[3\].gates: unknown country Germany",
        ),
        (
            lambda d: d["dsps"][4].update(name=d["dsps"][0]["name"]),
            r"market.dsps: DSP names must be unique",
        ),
        (
            lambda d: d["traffic"]["devices"]["phone"]["os"].update(symbian=0.1),
            r"market.traffic.devices.phone.os.symbian: unknown OS",
        ),
        (
            lambda d: d["dsps"][5]["faults"].update(timeout=0.6, http_5xx=0.6),
            r"market.dsps\[5\].faults: rates sum to more than 1",
        ),
    ],
)
def test_semantic_errors_name_the_key(market_data, edit, message):
    data = market_data()
    edit(data)
    with pytest.raises(MarketError, match=message):
        Market(parse_market(data))


def test_extends_merges_mappings_and_replaces_lists(tmp_path: Path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: default\nname: child\ntraffic:\n  tmax_ms: 300\n")
    config = load_market_config(child)
    default = load_market_config("default")
    assert config.name == "child"
    assert config.traffic.tmax_ms == 300
    assert config.traffic.devices == default.traffic.devices
    assert config.dsps == default.dsps


def test_missing_and_broken_files_are_named(tmp_path: Path):
    with pytest.raises(MarketError, match="market file not found .*default, hard"):
        load_market_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(MarketError, match="broken.yaml: not valid YAML"):
        load_market_config(broken)
