"""The targeting table (data/targeting_cases.yaml): request features in, eligible line items
out, for the compiled index and the plain rules alike."""

from datetime import datetime
from pathlib import Path

import pytest
import yaml

from openbid.campaigns.bulk import parse_rows, read_rows
from openbid.campaigns.index import compile_index
from openbid.campaigns.model import CampaignSet
from openbid.campaigns.targeting import ImpFacts, eligible_pairs, request_facts

DATA = Path(__file__).with_name("data")
TABLE = yaml.safe_load((DATA / "targeting_cases.yaml").read_text())
BASE = TABLE["base"]


def _micros(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1_000_000)


@pytest.fixture(scope="module")
def catalog() -> CampaignSet:
    records, errors = parse_rows(
        read_rows(DATA / "targeting_catalog.yaml"), CampaignSet(), _micros(BASE["now"])
    )
    assert errors == []
    return records


@pytest.fixture(scope="module")
def index(catalog):
    return compile_index(catalog, _micros(BASE["now"]))


@pytest.mark.parametrize("case", TABLE["cases"], ids=[case["name"] for case in TABLE["cases"]])
def test_targeting_table(case, catalog, index):
    features = {**BASE["features"], **case.get("features", {})}
    blocked = case.get("blocked", {})
    facts = request_facts(
        features,
        now_micros=_micros(case.get("now", BASE["now"])),
        blocked_categories=blocked.get("categories", ()),
        blocked_adomains=blocked.get("adomains", ()),
    )
    imp_doc = case.get("imp", BASE["imp"])
    imp = ImpFacts(
        slots=tuple(imp_doc["slots"]),
        deals=tuple(imp_doc.get("deals", ())),
        private_auction=imp_doc.get("private_auction", False),
    )
    among = set(case["among"])
    from_index = [pair for pair in index.match(facts, imp).ids() if pair[0] in among]
    from_rules = [pair for pair in eligible_pairs(catalog, facts, imp) if pair[0] in among]
    assert from_index == from_rules
    if "pairs" in case:
        assert from_index == [tuple(pair) for pair in case["pairs"]]
    else:
        assert sorted({line_item for line_item, _ in from_index}) == sorted(case["eligible"])


def test_every_line_item_of_the_catalog_is_in_some_case(catalog):
    mentioned = {line_item for case in TABLE["cases"] for line_item in case["among"]}
    assert {li.id for li in catalog.line_items} <= mentioned
