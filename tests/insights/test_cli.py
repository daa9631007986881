"""`openbid insights ...` end to end through the real command: attribution from a CSV, a
clean-room collaboration from TOML (query, refusal, log), identity hash and link."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.csv as pacsv
from click.testing import CliRunner

from openbid.cli import main
from openbid.insights.identity import synthetic_crm


def test_attribution_from_a_csv_of_paths(tmp_path):
    path = tmp_path / "paths.csv"
    path.write_text("journey,conv,nulls\n a|b ,3,1\nb,1,5\na | a,0,4\n")
    result = CliRunner().invoke(
        main,
        [
            "insights",
            "attribution",
            "--csv",
            str(path),
            "--sep",
            ",",
            "--path-sep",
            "|",
            "--path-col",
            "journey",
            "--conv-col",
            "conv",
            "--null-col",
            "nulls",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["channel"] for r in rows] == ["a", "b"]
    assert [r["last_touch_conversions"] for r in rows] == [0.0, 4.0]
    assert sum(r["markov_conversions"] for r in rows) == 4.0


def test_attribution_needs_exactly_one_source():
    result = CliRunner().invoke(main, ["insights", "attribution"])
    assert result.exit_code != 0 and "exactly one of" in result.output


def write_collaboration(tmp_path) -> str:
    users = [f"h{u}" for u in range(120)]
    pacsv.write_csv(
        pa.table({"user_key": users, "value": [float(u % 9) for u in range(120)]}),
        tmp_path / "adv.csv",
    )
    pacsv.write_csv(
        pa.table({"user_key": users, "site": ["news"] * 80 + ["sport"] * 30 + ["tiny"] * 10}),
        tmp_path / "pub.csv",
    )
    (tmp_path / "collab.toml").write_text(
        """
name = "acme-x-news"
epsilon_budget = 1.0
ledger = "room.duckdb"

[parties.advertiser]
table = "adv.csv"
join_column = "user_key"
min_distinct_users = 30
aggregates = { value = ["sum"] }
bounds = { value = [0, 10] }

[parties.publisher]
table = "pub.csv"
join_column = "user_key"
dimensions = ["site"]
min_distinct_users = 10
"""
    )
    return str(tmp_path / "collab.toml")


def test_cleanroom_query_refusal_and_log(tmp_path):
    collab = write_collaboration(tmp_path)
    query = json.dumps(
        {
            "aggregates": [{"function": "count_distinct", "column": "users"}],
            "dimensions": ["publisher.site"],
        }
    )
    runner = CliRunner()
    ok = runner.invoke(
        main,
        ["insights", "cleanroom", "query", "--collab", collab, "--query", query, "--as", "ana"],
    )
    assert ok.exit_code == 0, ok.output
    # tiny (10 users) is under 30; hidden alone it would be the total less the rest: sport
    # (the smallest shown) is hidden with it
    assert "news" in ok.output and "sport" not in ok.output and "2 suppressed" in ok.output
    bad = json.dumps({"aggregates": [{"function": "count", "column": "advertiser.user_key"}]})
    refused = runner.invoke(
        main, ["insights", "cleanroom", "query", "--collab", collab, "--query", bad, "--as", "eve"]
    )
    assert refused.exit_code != 0 and "join column" in refused.output
    log = runner.invoke(main, ["insights", "cleanroom", "log", "--collab", collab])
    assert log.exit_code == 0, log.output
    lines = log.output.splitlines()
    assert "ana" in lines[1] and "released" in lines[1]
    assert "eve" in lines[2] and "refused" in lines[2]
    assert "epsilon spent 0 of 1" in log.output


def test_identity_hash_then_link(tmp_path, monkeypatch):
    crm, _ = synthetic_crm(120, seed=5)
    raw = pa.table(
        {
            "record_id": crm["record_id"],
            "email": [f"Person{c}@Example.com " for c in crm["cluster"].to_pylist()],
        }
    )
    pacsv.write_csv(raw, tmp_path / "raw.csv")
    monkeypatch.setenv("OPENBID_IDENTITY_SALT", "a-salt-for-the-cli-test-0123456")
    runner = CliRunner()
    hashed = runner.invoke(
        main,
        [
            "insights",
            "identity",
            "hash",
            "--csv",
            str(tmp_path / "raw.csv"),
            "--out",
            str(tmp_path / "hashed.csv"),
        ],
    )
    assert hashed.exit_code == 0, hashed.output
    text = (tmp_path / "hashed.csv").read_text()
    assert "example" not in text.lower() and "email_hash" in text
    pacsv.write_csv(crm, tmp_path / "crm.csv")
    linked = runner.invoke(
        main,
        [
            "insights",
            "identity",
            "link",
            "--csv",
            str(tmp_path / "crm.csv"),
            "--cluster-col",
            "cluster",
            "--out",
            str(tmp_path / "clusters.csv"),
        ],
    )
    assert linked.exit_code == 0, linked.output
    f1 = float(linked.output.split("F1 ")[1].split()[0])
    assert f1 > 0.9
    assert pacsv.read_csv(tmp_path / "clusters.csv").num_rows == crm.num_rows
