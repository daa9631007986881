"""The scheduler: purposes run on their interval of market time, failed jobs are retried
with backoff (refusals and skips are not), every attempt is a row of the run table, and
jobs run in a real low-priority job process that is killed past its timeout."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from openbid import clock
from openbid.config import Config, EventsConfig, ModelsConfig, SchedulerConfig
from openbid.pipeline.runs import RunTable
from openbid.pipeline.scheduler import JobError, JobRunner, Scheduler

SPEED = 3600.0
"""A market hour a real second: minutes of backoff and intervals pass in milliseconds."""


@pytest.fixture
def fast_clock():
    previous = clock.set_clock(clock.MarketClock(SPEED, start_s=1_800_000_000.0))
    yield
    clock.set_clock(previous)


def scheduler_config(tmp_path, **scheduler) -> Config:
    return Config(
        scheduler=SchedulerConfig(runs_db=str(tmp_path / "runs.db"), **scheduler),
        events=EventsConfig(dir=str(tmp_path / "events")),
        models=ModelsConfig(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            artifact_location=str(tmp_path / "artifacts"),
            store_url=str(tmp_path / "store"),
            cache_dir=str(tmp_path / "cache"),
            lock_file=str(tmp_path / "registry.lock"),
        ),
    )


class Jobs:
    """A stand-in for the job process: answers from a script, notes when each job ran."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = {purpose: list(statuses) for purpose, statuses in script.items()}
        self.calls: list[tuple[str, float]] = []

    async def __call__(self, purpose: str) -> dict:
        self.calls.append((purpose, clock.now()))
        statuses = self.script[purpose]
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return {
            "purpose": purpose,
            "status": status,
            "reason": f"{status} by the script",
            "rows": 10,
            "version": "7" if status == "promoted" else "",
            "promoted": status == "promoted",
            "metrics": {"heldout_logloss": 0.1},
        }


async def run_until(scheduler: Scheduler, done, timeout_s: float = 20.0) -> None:
    task = asyncio.create_task(scheduler.run())
    deadline = time.monotonic() + timeout_s
    try:
        while not done():
            assert time.monotonic() < deadline, "the scheduler did not get there in time"
            assert not task.done(), task.exception()
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_each_purpose_runs_on_its_interval_of_market_time(tmp_path, fast_clock):
    config = scheduler_config(tmp_path, purposes=["shaping", "ctr"], interval_s=1800.0)
    jobs = Jobs({"shaping": ["promoted"], "ctr": ["skipped"]})
    scheduler = Scheduler(config, run_job=jobs)
    asyncio.run(run_until(scheduler, lambda: len(jobs.calls) >= 6))
    for purpose in ("shaping", "ctr"):
        times = [at for p, at in jobs.calls if p == purpose]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        # starts are interval_s apart (the run table write before each job: milliseconds real)
        assert gaps and all(abs(gap - 1800.0) < 0.5 * SPEED for gap in gaps), gaps
    with RunTable(config.scheduler.runs_db) as table:
        runs = table.recent(50)
    assert {run.status for run in runs if run.purpose == "shaping"} <= {"promoted", "running"}
    promoted = next(run for run in runs if run.status == "promoted")
    assert promoted.version == "7" and promoted.promoted and promoted.rows == 10
    assert promoted.metrics == {"heldout_logloss": 0.1}
    assert promoted.ended_micros >= promoted.started_micros > 0


def test_a_failed_job_is_retried_with_backoff_and_each_attempt_is_a_row(tmp_path, fast_clock):
    config = scheduler_config(
        tmp_path, purposes=["ctr"], interval_s=36_000.0, retries=3, retry_backoff_s=60.0
    )
    jobs = Jobs({"ctr": ["failed", "failed", "promoted"]})
    scheduler = Scheduler(config, run_job=jobs)
    asyncio.run(run_until(scheduler, lambda: len(jobs.calls) >= 3))
    times = [at for _, at in jobs.calls]
    assert 60.0 <= times[1] - times[0] < 60.0 + 0.5 * SPEED  # the backoff, then doubling
    assert 120.0 <= times[2] - times[1] < 120.0 + 0.5 * SPEED
    with RunTable(config.scheduler.runs_db) as table:
        runs = list(reversed(table.recent(10)))
    assert [(r.attempt, r.status) for r in runs[:3]] == [
        (1, "failed"),
        (2, "failed"),
        (3, "promoted"),
    ]
    assert runs[0].reason == "failed by the script"


def test_refusals_and_skips_are_not_retried_and_retries_stop_at_the_limit(tmp_path, fast_clock):
    config = scheduler_config(tmp_path, purposes=["shaping", "ctr"], interval_s=36_000.0, retries=1)
    jobs = Jobs({"shaping": ["refused"], "ctr": ["failed"]})
    scheduler = Scheduler(config, run_job=jobs)

    async def one_round() -> None:
        scheduler.runs = RunTable(config.scheduler.runs_db)
        await scheduler.run_purpose("shaping")
        await scheduler.run_purpose("ctr")
        scheduler.runs.close()

    asyncio.run(one_round())
    assert [p for p, _ in jobs.calls] == ["shaping", "ctr", "ctr"]  # 1 retry, then no more


def test_runs_left_running_by_a_stopped_scheduler_are_marked_failed(tmp_path, fast_clock):
    config = scheduler_config(tmp_path, purposes=["ctr"], interval_s=36_000.0)
    with RunTable(config.scheduler.runs_db) as table:
        table.start("ctr", clock.now_micros())
    jobs = Jobs({"ctr": ["skipped"]})
    asyncio.run(run_until(Scheduler(config, run_job=jobs), lambda: len(jobs.calls) >= 1))
    with RunTable(config.scheduler.runs_db) as table:
        first = table.recent(10)[-1]
    assert first.status == "failed" and "interrupted" in first.reason


def test_a_job_runs_in_a_low_priority_process_that_lives_across_jobs(tmp_path, fast_clock):
    """The real job process: no events yet, so the job is skipped (not enough data)."""
    config = scheduler_config(tmp_path, purposes=["ctr"], job_nice=12)
    scheduler = Scheduler(config)

    async def two_jobs() -> tuple[dict, dict, int, int]:
        assert scheduler.runner is not None
        try:
            first = await scheduler._run_job("ctr")
            pid = scheduler.runner.process.pid
            niceness = os.getpriority(os.PRIO_PROCESS, pid)
            second = await scheduler._run_job("ctr")
            assert scheduler.runner.process.pid == pid  # loaded once, used again
            return first, second, niceness, os.getpriority(os.PRIO_PROCESS, 0)
        finally:
            await scheduler.runner.close()

    first, second, niceness, ours = asyncio.run(two_jobs())
    assert first["status"] == "skipped" and "not enough data" in first["reason"], first
    assert second["status"] == "skipped"
    assert niceness >= ours + 12 or niceness == 19


def test_a_job_past_its_timeout_is_killed_and_the_next_gets_a_new_process(tmp_path):
    runner = JobRunner(nice=0, timeout_s=0.2)  # a job process cannot even start in 0.2 s

    async def go() -> tuple[str, int | None]:
        try:
            with pytest.raises(JobError, match="job_timeout_s") as caught:
                await runner.run({"purpose": "ctr", "config": {}, "clock": "real"})
            return str(caught.value), runner.process
        finally:
            await runner.close()

    message, process = asyncio.run(go())
    assert "0.2 s" in message and process is None  # killed, forgotten


def test_openbid_runs_prints_the_run_table_newest_first(tmp_path):
    import json

    from click.testing import CliRunner

    from openbid.cli import main

    runs_db = tmp_path / "runs.db"
    env = {"OPENBID_SCHEDULER__RUNS_DB": str(runs_db)}
    missing = CliRunner().invoke(main, ["runs"], env=env)
    assert missing.exit_code == 1 and "no run table" in missing.output
    with RunTable(runs_db) as table:
        first = table.start("shaping", 1_800_000_000_000_000)
        table.finish(
            first, status="promoted", ended_micros=1_800_000_060_000_000, real_seconds=2.5,
            rows=1200, metrics={"heldout_logloss": 0.1234, "heldout_callouts_saved": 0.7},
            version="3", promoted=True, reason="first model to pass the gate",
        )  # fmt: skip
        second = table.start("ctr", 1_800_000_120_000_000)
        table.finish(
            second, status="refused", ended_micros=1_800_000_130_000_000, real_seconds=1.0,
            reason="calibration: expected / actual is 3.100 (mean prediction 0.03); base rate",
        )  # fmt: skip
    listed = CliRunner().invoke(main, ["runs", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [(r["id"], r["purpose"], r["status"]) for r in rows] == [
        (2, "ctr", "refused"),
        (1, "shaping", "promoted"),
    ]
    assert rows[1]["metrics"]["heldout_callouts_saved"] == 0.7
    wide = {**env, "COLUMNS": "220"}
    shown = CliRunner().invoke(main, ["runs", "--purpose", "shaping"], env=wide)
    assert "2027-01-15T08:00:00Z" in shown.output and "3 (prod)" in shown.output
    assert "saved 70%" in shown.output and "ctr" not in shown.output.split("reason")[-1]
