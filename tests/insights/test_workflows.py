"""The insights jobs as workflows, end to end on a synthetic event log: audience refresh
publishing membership to real Redis (read back with `segments_of`), lookalike training on
its segment, the attribution report, the bandit policy evaluation promoting a better policy;
every run's files and the manifest the console reads; retries with backoff, skips without
retry, settings errors naming the key, and the same jobs from the command line."""

from __future__ import annotations

import json
import secrets

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from openbid.cli import main
from openbid.insights.audiences.synthetic import HOUR_MICROS, write_synthetic_log
from openbid.insights.errors import InsightsError
from openbid.insights.personalize.bandit import ChoicePolicy
from openbid.insights.personalize.simulate import SegmentMarket, write_logged_policy
from openbid.insights.workflows import (
    Job,
    JobResult,
    Manifest,
    jobs,
    load_settings,
    run_job,
    run_with_retries,
)
from openbid.stores import RedisSetStore, SegmentMembership

SPEC = """
segments:
  - id: travel-buyers
    include: [{behaviour: converted, advertisers: [trips.example]}]
  - id: sport-fans
    include: [{behaviour: visited, categories: [IAB17], min_count: 2, within_days: 3}]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("workflows")
    events = root / "events"
    log = write_synthetic_log(events, users=1500, hours=48, visits_per_user=8, seed=5)
    market = SegmentMarket.random(n_segments=3, n_creatives=3, base_ctr=0.05, spread=0.8, seed=2)
    policy = ChoicePolicy(
        "uniform-logging", "camp-p", market.creatives, [*market.segments, ""], [[1 / 3] * 3] * 4
    )
    write_logged_policy(
        events, market, policy, 12_000, start_micros=log.start_micros, spacing_micros=10_000_000
    )
    (root / "audiences.yaml").write_text(SPEC)
    return root, log


def settings_for(root, redis_url="", prefix="", **extra):
    text = f"""
events_dir = "{root / "events"}"
out_dir = "{root / "out"}"
[audiences]
spec = "{root / "audiences.yaml"}"
store = "{redis_url}"
store_prefix = "{prefix}"
[lookalike]
seed_segment = "travel-buyers"
[personalize]
campaigns = ["camp-p"]
min_choices = 1000
"""
    path = root / "insights.toml"
    path.write_text(text)
    return load_settings(path, **extra)


def test_the_jobs_run_in_order_and_write_their_reports(world, redis_url):
    root, log = world
    prefix = f"test:{secrets.token_hex(4)}:"
    settings = settings_for(root, redis_url, prefix)
    now = log.end_micros + HOUR_MICROS

    audiences = run_job("audiences", settings, now_micros=now)
    assert audiences.status == "passed", audiences.reason
    members = pq.read_table(root / "out" / "audiences" / "members.parquet")
    assert members.num_rows == audiences.rows > 0
    buyers = {u for s, u in zip(members["segment"].to_pylist(), members["user_id"].to_pylist(), strict=True) if s == "travel-buyers"}  # fmt: skip
    assert buyers == log.converters
    sizes = {r["segment"]: r for r in pq.read_table(root / "out" / "audiences" / "sizes.parquet").to_pylist()}  # fmt: skip
    assert sizes["travel-buyers"]["members"] == len(log.converters)
    assert (
        sizes["travel-buyers"]["lower_bound"]
        <= len(log.converters)
        <= sizes["travel-buyers"]["upper_bound"]
    )
    assert (root / "out" / "audiences" / "sketches" / "sport-fans.theta").stat().st_size > 0
    store = RedisSetStore(redis_url, prefix=prefix, timeout_s=1.0)
    try:
        membership = SegmentMembership(store)
        for user in sorted(log.converters)[:25]:
            assert "travel-buyers" in membership.segments_of(user)
        outsider = next(u for u in log.interest if u not in buyers)
        assert "travel-buyers" not in membership.segments_of(outsider)
    finally:
        keys = [SegmentMembership.key(u) for u in log.interest]
        store.delete(keys)
        store.close()

    lookalike = run_job("lookalike", settings, now_micros=now)
    assert lookalike.status == "passed", lookalike.reason
    assert lookalike.metrics["lift_at_10pct"] > 2.0
    picked = pq.read_table(root / "out" / "lookalike" / "lookalikes.parquet")["user_id"].to_pylist()
    assert picked and not set(picked) & log.converters

    attribution = run_job("attribution", settings, now_micros=now)
    assert attribution.status == "passed", attribution.reason
    table = pq.read_table(root / "out" / "attribution" / "attribution.parquet")
    assert abs(sum(table["last_touch_conversions"].to_pylist()) - attribution.metrics["attributed_conversions"]) < 1e-6  # fmt: skip

    first = run_job("personalize", settings, now_micros=now)
    assert first.status == "promoted", first.reason  # Thompson beats the uniform logging policy
    evaluation = json.loads((root / "out" / "personalize" / "evaluation-camp-p.json").read_text())
    assert evaluation["current"] == "(the logging policies)"
    assert evaluation["metrics"]["candidate_dr"] > evaluation["metrics"]["current"]
    serving = json.loads((root / "out" / "personalize" / "policy-camp-p.json").read_text())
    assert serving["name"].startswith("ts-")
    second = run_job("personalize", settings, now_micros=now)
    evaluation = json.loads((root / "out" / "personalize" / "evaluation-camp-p.json").read_text())
    assert evaluation["current"] == serving["name"]  # now compared with the serving policy
    assert second.status in ("promoted", "refused")

    manifest = Manifest(root / "out").read()
    assert set(manifest["reports"]) == {"audiences", "lookalike", "attribution", "personalize"}
    latest = manifest["reports"]["audiences"]["latest"]
    assert {f["path"] for f in latest["files"]} >= {
        "audiences/members.parquet",
        "audiences/sizes.parquet",
    }
    assert len(manifest["reports"]["personalize"]["history"]) == 2


def test_a_failed_attempt_is_retried_after_its_backoff_and_recorded(tmp_path):
    settings = load_settings(None, out_dir=str(tmp_path))
    calls = []

    def flaky(settings, now_micros, out):
        calls.append(now_micros)
        if len(calls) == 1:
            raise OSError("disk full")
        out.json("result.json", "A result", {"ok": True})
        return JobResult(purpose="flaky", status="passed", rows=1)

    slept = []
    job = Job("flaky", "Flaky", flaky, interval_s=60, retries=3, retry_backoff_s=30)
    result = run_with_retries(job, settings, now_micros=1, sleep=slept.append)
    assert result.status == "passed" and len(calls) == 2 and slept == [30]
    history = Manifest(tmp_path).read()["reports"]["flaky"]["history"]
    assert [h["status"] for h in history] == ["passed", "failed"]
    assert history[1]["reason"] == "OSError: disk full"
    assert (tmp_path / "flaky" / "result.json").exists()


def test_a_job_failing_every_time_stops_after_its_retries_and_keeps_the_last_report(tmp_path):
    settings = load_settings(None, out_dir=str(tmp_path))
    good = Job("j", "J", lambda s, n, o: JobResult(purpose="j", status="passed", rows=7), 60)
    run_with_retries(good, settings, sleep=lambda s: None)

    def broken(settings, now_micros, out):
        raise InsightsError("the engine is gone")

    slept = []
    bad = Job("j", "J", broken, interval_s=60, retries=2, retry_backoff_s=10)
    result = run_with_retries(bad, settings, sleep=slept.append)
    assert result.status == "failed" and slept == [10, 20]
    entry = Manifest(tmp_path).read()["reports"]["j"]
    assert [h["status"] for h in entry["history"]] == ["failed"] * 3 + ["passed"]
    assert entry["latest"]["status"] == "passed" and entry["latest"]["rows"] == 7


def test_too_little_data_is_a_skip_not_a_retry(tmp_path, world):
    root, _ = world
    settings = load_settings(None, out_dir=str(tmp_path / "out"), events_dir=str(root / "events"))
    slept = []
    result = run_with_retries(jobs()["lookalike"], settings, sleep=slept.append)
    assert result.status == "skipped" and "seed_segment" in result.reason and slept == []
    result = run_with_retries(jobs()["personalize"], settings, sleep=slept.append)
    assert result.status == "skipped" and slept == []


def test_settings_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[personalize]\nepsilon = 2.0\n")
    with pytest.raises(
        InsightsError, match=r"bad.toml: personalize.epsilon: Expected `float` <= 1"
    ):
        load_settings(path)
    path.write_text("[audiences]\nspecs = 'x'\n")
    with pytest.raises(InsightsError, match="audiences: Object contains unknown field `specs`"):
        load_settings(path)
    path.write_text("[jobs.audience]\ninterval_s = 60\n")
    with pytest.raises(InsightsError, match=r"unknown jobs \['audience'\]"):
        load_settings(path)
    path.write_text("[jobs.audiences]\ninterval_s = 600\nretries = 1\n")
    assert jobs()["audiences"].schedule(load_settings(path)) == (600.0, 1, 60.0)


def test_the_jobs_from_the_command_line(world, tmp_path):
    root, log = world
    settings_for(root)  # writes insights.toml (no store)
    out = tmp_path / "out"
    now = "2027-01-17T09:00:00+00:00"
    runner = CliRunner()
    result = runner.invoke(
        main, ["insights", "run", "audiences", "--settings", str(root / "insights.toml"), "--out-dir", str(out), "--now", now]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "audiences: passed" in result.output and "wrote audiences/members.parquet" in result.output
    )
    result = runner.invoke(main, ["insights", "reports", "--out-dir", str(out)])
    assert (
        result.exit_code == 0
        and "audiences: Audience segments; last attempt passed" in result.output
    )
    (root / "broken.toml").write_text(
        f'out_dir = "{out}"\n[audiences]\nspec = "{tmp_path / "missing.yaml"}"\n'
    )
    result = runner.invoke(main, ["insights", "run", "audiences", "--settings", str(root / "broken.toml"), "--retries", "0"])  # fmt: skip
    assert result.exit_code == 1 and "audiences: failed" in result.output
    assert "cannot read the audience spec" in result.output
    result = runner.invoke(main, ["insights", "run", "nope"])
    assert result.exit_code == 2 and "expected one of" in result.output


def test_audiences_and_personalize_commands(world, tmp_path):
    root, log = world
    runner = CliRunner()
    now = "2027-01-17T09:00:00+00:00"
    result = runner.invoke(
        main,
        ["insights", "audiences", "refresh", "--spec", str(root / "audiences.yaml"), "--events-dir",
         str(root / "events"), "--state", str(tmp_path / "state"), "--now", now, "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert {r["segment"]: r["members"] for r in rows}["travel-buyers"] == len(log.converters)
    result = runner.invoke(
        main,
        ["insights", "lookalike", "--events-dir", str(root / "events"), "--seed-segment",
         "travel-buyers", "--state", str(tmp_path / "state"), "--until", now],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "top share   lift   random" in result.output
    result = runner.invoke(
        main,
        ["insights", "personalize", "evaluate", "--events-dir", str(root / "events"), "--campaign",
         "camp-p", "--until", now, "--out", str(tmp_path / "candidate.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "candidate DR" in result.output and "promote: " in result.output
    candidate = json.loads((tmp_path / "candidate.json").read_text())
    assert np.isclose(sum(candidate["probabilities"][0]), 1.0)
    result = runner.invoke(main, ["insights", "personalize", "simulate", "--rounds", "5000"])
    assert result.exit_code == 0 and "thompson" in result.output
