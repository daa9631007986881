"""The shipped Prometheus alert rules and Grafana dashboard are valid: the rules file has
the structure Prometheus loads (groups, rules, durations, labels, annotations), every PromQL
expression in both parses, and every openbid metric they name is one openbid exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "monitoring" / "openbid-alerts.yml"
DASHBOARD = ROOT / "docs" / "monitoring" / "grafana-dashboard.json"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
GROUP_KEYS = {"name", "interval", "rules", "limit"}


def _rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    rules = []
    names = set()
    for group in document["groups"]:
        assert set(group) <= GROUP_KEYS and group["name"] not in names
        names.add(group["name"])
        rules += group["rules"]
    return rules


def _metrics_exported() -> set[str]:
    """Metric names the code registers (counters end in _total on the wire)."""
    names = set()
    for path in (ROOT / "openbid").rglob("*.py"):
        for match in re.finditer(r'"(openbid_[a-z_]+)"', path.read_text()):
            names.add(match.group(1))
    return names | {f"{name}_total" for name in names}


def _metrics_named(expr: str) -> set[str]:
    return set(re.findall(r"\b(openbid_[a-z_]+)\b", expr))


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule["alert"])
def test_each_alert_rule_is_well_formed_and_its_expression_parses(rule):
    assert set(rule) <= RULE_KEYS and {"alert", "expr"} <= set(rule)
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
    promql_parser.parse(rule["expr"])
    if "for" in rule:
        assert DURATION.match(rule["for"])
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"]
    assert _metrics_named(rule["expr"]) <= _metrics_exported()


def test_a_broken_expression_would_be_caught():
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(openbid_alerts_total[5m])")


def test_the_grafana_dashboard_loads_and_every_query_parses():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 8
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m").replace("$arm", ".*")
            promql_parser.parse(expr)
            assert _metrics_named(expr) <= _metrics_exported(), panel["title"]
