"""The insights jobs as workflows: audience refresh, lookalike training, attribution report,
bandit policy evaluation. Each is a plain callable with a `Job` description (name, interval,
retries), so any scheduler runs it: the embedded one of `openbid up`, cron or an
orchestrator (`openbid insights run <job>`, exit status 0 when it passed, skipped or was
refused, 1 when it failed after its retries).

Every run writes its results under `<out_dir>/<job>/` (Parquet tables, JSON) and updates
`<out_dir>/manifest.json`, the index the console reads its reports from: per job, the latest
run's status, metrics and files, and the recent attempts (a run table: attempt, status,
times, reason). Files and the manifest are replaced atomically (written aside, renamed).

Settings are one typed object (`InsightsSettings`), read from a TOML file; errors name the
key (`personalize.epsilon: Expected `float` <= 1`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from openbid import clock
from openbid.errors import OpenbidError
from openbid.insights.errors import InsightsError

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
HISTORY = 20
"""Attempts kept per job in the manifest."""


class AudienceSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    spec: str = "audiences.yaml"
    """The segment spec (YAML or JSON; `openbid/insights/audiences/spec.py`)."""
    store: str = ""
    """Where membership is published for the exchange: `memory`, a `redis://` URL, or ""
    (not published; the reports only)."""
    store_prefix: str = "openbid:"
    join_horizon_s: Annotated[float, Meta(gt=0)] = 2 * 86400.0
    sketch_lg_k: Annotated[int, Meta(ge=4, le=21)] = 12


class LookalikeSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    seed_segment: str = ""
    """A segment of the audience spec; "" skips the job."""
    window_days: Annotated[float, Meta(gt=0, le=400)] = 30.0
    size: Annotated[int, Meta(ge=1)] | None = None
    """Lookalikes kept (default: as many as the seed)."""
    negatives_per_seed: Annotated[float, Meta(gt=0)] = 3.0
    holdout_share: Annotated[float, Meta(gt=0, lt=1)] = 0.3
    hash_bits: Annotated[int, Meta(ge=18, le=26)] = 18


class AttributionSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    by: Literal["campaign", "publisher", "dsp", "creative"] = "campaign"
    window_days: Annotated[float, Meta(gt=0, le=400)] = 30.0
    lookback_days: Annotated[float, Meta(gt=0, le=400)] = 30.0
    order: Annotated[int, Meta(ge=1, le=3)] = 1


class PersonalizeSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    campaigns: list[str] = []
    """Campaigns whose creatives a bandit chooses; none: the job skips."""
    window_days: Annotated[float, Meta(gt=0, le=400)] = 7.0
    reward_window_s: Annotated[float, Meta(gt=0)] = 3600.0
    epsilon: Annotated[float, Meta(ge=0, le=1)] = 0.05
    prior_strength: Annotated[float, Meta(gt=0)] = 20.0
    tolerance: Annotated[float, Meta(ge=0, le=1)] = 0.05
    min_choices: Annotated[int, Meta(ge=1)] = 1000


class JobSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    interval_s: Annotated[float, Meta(gt=0)] | None = None
    retries: Annotated[int, Meta(ge=0, le=20)] | None = None
    retry_backoff_s: Annotated[float, Meta(gt=0)] | None = None


class InsightsSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    events_dir: str = "var/events"
    segments_url: str = ""
    out_dir: str = "var/insights"
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark_master: str = "local[*]"
    audiences: AudienceSettings = msgspec.field(default_factory=AudienceSettings)
    lookalike: LookalikeSettings = msgspec.field(default_factory=LookalikeSettings)
    attribution: AttributionSettings = msgspec.field(default_factory=AttributionSettings)
    personalize: PersonalizeSettings = msgspec.field(default_factory=PersonalizeSettings)
    jobs: dict[str, JobSettings] = {}
    """Per job overrides of its interval and retries (`[jobs.audiences] interval_s = 600`)."""


def load_settings(path: str | Path | None = None, **overrides: object) -> InsightsSettings:
    """Settings from a TOML file (defaults without one), then `overrides` of top-level keys."""
    data: dict = {}
    source = str(path) if path else "defaults"
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise InsightsError(f"{source}: cannot read the settings: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise InsightsError(f"{source}: not valid TOML: {exc}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(data, InsightsSettings)
    except msgspec.ValidationError as exc:
        text, sep, where = str(exc).rpartition(" - at `")
        key = where.rstrip("`").removeprefix("$.").removeprefix("$") if sep else ""
        raise InsightsError(f"{source}: {key + ': ' if key else ''}{text or exc}") from None
    unknown = set(settings.jobs) - set(jobs())
    if unknown:
        raise InsightsError(
            f"{source}: jobs: unknown jobs {sorted(unknown)}; expected {sorted(jobs())}"
        )
    return settings


Status = Literal["passed", "promoted", "refused", "skipped", "failed"]


class OutputFile(msgspec.Struct, kw_only=True):
    path: str
    """Relative to the manifest's directory."""
    title: str
    format: Literal["parquet", "json", "theta"]
    rows: int = 0


class JobResult(msgspec.Struct, kw_only=True):
    """What one run did (the fields the run table keeps, as `openbid train`'s results)."""

    purpose: str
    status: Status
    reason: str = ""
    rows: int = 0
    metrics: dict[str, float] = {}
    files: list[OutputFile] = []
    window_since_micros: int = 0
    window_until_micros: int = 0


class JobSkipped(InsightsError):
    """Too little data for the job to say anything: a `skipped` run, not retried."""


@dataclass(frozen=True, slots=True)
class Job:
    """A job as a scheduler sees it: `run(settings, now_micros, out)` does the work and
    returns its result; `out` writes its files."""

    name: str
    title: str
    run: Callable[[InsightsSettings, int, Outputs], JobResult]
    interval_s: float
    retries: int = 3
    retry_backoff_s: float = 60.0

    def schedule(self, settings: InsightsSettings) -> tuple[float, int, float]:
        """(interval_s, retries, retry_backoff_s) with the settings' overrides."""
        o = settings.jobs.get(self.name, JobSettings())
        return (
            o.interval_s if o.interval_s is not None else self.interval_s,
            o.retries if o.retries is not None else self.retries,
            o.retry_backoff_s if o.retry_backoff_s is not None else self.retry_backoff_s,
        )


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


class Outputs:
    """A job's output directory (`<out_dir>/<job>/`); each file written aside and renamed."""

    def __init__(self, out_dir: str | Path, job: str) -> None:
        self.root = Path(out_dir)
        self.directory = self.root / job
        self.files: list[OutputFile] = []

    def _add(self, name: str, title: str, fmt: str, rows: int) -> Path:
        path = self.directory / name
        self.files = [f for f in self.files if f.path != str(path.relative_to(self.root))]
        self.files.append(
            OutputFile(path=str(path.relative_to(self.root)), title=title, format=fmt, rows=rows)
        )
        return path

    def parquet(self, name: str, title: str, table) -> None:
        import io

        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        _atomic_write(self._add(name, title, "parquet", table.num_rows), buffer.getvalue())

    def json(self, name: str, title: str, value: object) -> None:
        rows = len(value) if isinstance(value, list) else 1
        data = msgspec.json.encode(value)
        _atomic_write(self._add(name, title, "json", rows), msgspec.json.format(data))

    def binary(self, name: str, title: str, data: bytes, fmt: str = "theta") -> None:
        _atomic_write(self._add(name, title, fmt, 1), data)


class Manifest:
    """`<out_dir>/manifest.json`: per job its latest run and recent attempts."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / "manifest.json"

    def read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"version": MANIFEST_VERSION, "reports": {}}
        except (OSError, ValueError) as exc:
            log.warning(
                "insights manifest unreadable: starting a new one", extra={"error": str(exc)}
            )
            return {"version": MANIFEST_VERSION, "reports": {}}
        data.setdefault("reports", {})
        return data

    def record(
        self, job: Job, result: JobResult, *, attempt: int, started_micros: int, real_seconds: float
    ) -> None:
        data = self.read()
        now = clock.now_micros()
        entry = data["reports"].setdefault(job.name, {"title": job.title, "history": []})
        entry["title"] = job.title
        entry["history"] = [
            {
                "attempt": attempt,
                "status": result.status,
                "started_micros": started_micros,
                "ended_micros": now,
                "real_seconds": round(real_seconds, 3),
                "reason": result.reason,
            },
            *entry["history"],
        ][:HISTORY]
        if result.status != "failed":  # a failed attempt leaves the last good report shown
            entry["latest"] = msgspec.to_builtins(result)
            entry["latest"]["ended_micros"] = now
        data["updated_micros"] = now
        data["version"] = MANIFEST_VERSION
        _atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True).encode())


def run_once(job: Job, settings: InsightsSettings, now_micros: int | None = None) -> JobResult:
    """One attempt: the job's result, `skipped` on too little data, `failed` on an error
    (with its reason); never raises for the job's own failures."""
    outputs = Outputs(settings.out_dir, job.name)
    now_micros = clock.now_micros() if now_micros is None else now_micros
    try:
        result = job.run(settings, now_micros, outputs)
    except JobSkipped as exc:
        result = JobResult(purpose=job.name, status="skipped", reason=str(exc))
    except (OpenbidError, OSError, ValueError) as exc:
        log.warning("insights job failed", extra={"job": job.name, "error": str(exc)})
        text = str(exc).splitlines()[0][:500] if str(exc) else ""
        result = JobResult(
            purpose=job.name, status="failed", reason=f"{type(exc).__name__}: {text}"
        )
    result.files = outputs.files or result.files
    return result


def run_with_retries(
    job: Job,
    settings: InsightsSettings,
    *,
    now_micros: int | None = None,
    retries: int | None = None,
    sleep: Callable[[float], None] | None = None,
) -> JobResult:
    """Runs `job`, retrying a failed attempt after its backoff (doubling, on the clock),
    recording every attempt in the manifest. What cron or an orchestrator's task calls."""
    _, default_retries, backoff_s = job.schedule(settings)
    retries = default_retries if retries is None else retries
    sleep = sleep or (lambda s: time.sleep(s / max(clock.current().speed, 1e-9)))
    manifest = Manifest(settings.out_dir)
    attempt = 0
    while True:
        attempt += 1
        started_micros = clock.now_micros()
        started = time.perf_counter()
        result = run_once(job, settings, now_micros)
        manifest.record(
            job, result, attempt=attempt, started_micros=started_micros,
            real_seconds=time.perf_counter() - started,
        )  # fmt: skip
        log.info(
            "insights job ran",
            extra={
                "job": job.name,
                "attempt": attempt,
                "status": result.status,
                "reason": result.reason,
            },
        )
        if result.status != "failed" or attempt > retries:
            return result
        sleep(backoff_s * 2.0 ** (attempt - 1))


@functools.cache
def jobs() -> dict[str, Job]:
    """The insights jobs by name: `audiences`, `lookalike`, `attribution`, `personalize`
    (their modules import their analyses only when they run)."""
    from openbid.insights import workflows_jobs as j

    return {
        job.name: job
        for job in (
            Job("audiences", "Audience segments", j.audiences_job, interval_s=3600.0),
            Job("lookalike", "Lookalike audience", j.lookalike_job, interval_s=86400.0),
            Job("attribution", "Media attribution", j.attribution_job, interval_s=86400.0),
            Job("personalize", "Creative policy evaluation", j.personalize_job, interval_s=3600.0),
        )
    }


def run_job(name: str, settings: InsightsSettings, **options) -> JobResult:
    """The job called `name`, with its retries (`run_with_retries`)."""
    registry = jobs()
    if name not in registry:
        raise InsightsError(f"unknown insights job {name!r}; expected one of {sorted(registry)}")
    return run_with_retries(registry[name], settings, **options)
