"""openbid's configuration: one typed object from a TOML file plus `OPENBID_*` overrides.

`load_config()` reads the file named by `--config` or `OPENBID_CONFIG` (or built-in defaults),
then applies environment overrides written as `OPENBID_<SECTION>__<KEY>=<value>` (values in
TOML syntax, bare words as strings). Unknown keys and bad values are refused with a
`ConfigError` that names the key and where it came from.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect
from msgspec import Meta

from openbid.errors import ConfigError

ENV_PREFIX = "OPENBID_"
# Variables with the prefix that are not configuration keys.
RESERVED_ENV = frozenset({"OPENBID_CONFIG", "OPENBID_REQUIRE_SERVICES"})

Port = Annotated[int, Meta(ge=0, le=65535)]
PositiveFloat = Annotated[float, Meta(gt=0)]
PositiveInt = Annotated[int, Meta(gt=0)]
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
MIN_TRACKER_SECRET_BYTES = 16
"""Shorter HMAC keys are refused (`TrackerSigner` would refuse them at start anyway)."""


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section):
    """The exchange's HTTP front door."""

    host: str = "127.0.0.1"
    port: Port = 8080
    engine: Literal["builtin", "granian"] = "builtin"
    """The HTTP/1.1 implementation: `builtin` (ours, `openbid/http/server.py`) or `granian`
    (Rust, the optional extra `openbid[granian]`); the same routes either way
    (`docs/operations.md`: the engines' throughput and conformance)."""
    max_body_bytes: PositiveInt = 65536
    max_in_flight: PositiveInt = 2048
    workers: Annotated[int, Meta(ge=1, le=256)] | Literal["auto"] = 1
    """Serving processes sharing the port; `auto`: one per core this process may use."""

    def worker_count(self) -> int:
        """`workers` as a number (`auto` resolved to the cores this process may run on)."""
        if self.workers == "auto":
            return usable_cores()
        return self.workers

    idle_timeout_s: PositiveFloat = 75.0
    """A keep-alive connection that receives no byte and is owed no answer this long is closed."""
    header_timeout_s: PositiveFloat = 10.0
    """A request's line and headers must arrive within this from their first byte (a new
    connection's first request, from the connect): else 408 and close (slowloris)."""
    request_timeout_s: PositiveFloat = 30.0
    """A whole request, body included, must arrive within this from its first byte (its body:
    from the 100 Continue, when it asked for one): else 408 and close (a trickled body)."""
    max_connections: Annotated[int, Meta(ge=0)] = 0
    """Open connections at most; at the cap the longest-idle ones are shed (logged, counted
    in `openbid_http_connections_dropped_total`). 0: half the process's open-file limit."""
    max_header_bytes: PositiveInt = 32768
    """Request headers past this many bytes get 431."""
    max_header_count: PositiveInt = 100
    """Requests with more header fields get 431."""


class EventsConfig(_Section):
    """The durable event log: a local append-only log rolled into Parquet segments."""

    dir: str = "var/events"
    segments_url: str = ""
    """fsspec URL for Parquet segments (`s3://bucket/events`); empty means `<dir>/segments`."""
    flush_interval_s: PositiveFloat = 1.0
    roll_interval_s: PositiveFloat = 60.0
    roll_max_bytes: PositiveInt = 64 * 1024 * 1024
    buffer_max_events: PositiveInt = 1_000_000
    roll_in_subprocess: bool = True
    """Roll log files into Parquet in a low-priority child process, off the serving GIL."""


class StoresConfig(_Section):
    """Where state lives: in-process and SQLite by default, Redis and PostgreSQL to scale out."""

    counters: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_ms: PositiveInt = 50
    """Per Redis call: past it the call fails (StoreUnavailable) and the server degrades."""
    redis_failure_threshold: PositiveInt = 3
    redis_cooldown_s: PositiveFloat = 2.0
    """After this many failures in a row, Redis is not asked for `redis_cooldown_s`."""
    memory_max_keys: PositiveInt = 500_000
    """Bound of the in-process counter store (about 270 bytes a key); past it the keys
    closest to expiring are evicted."""
    catalog_url: str = "sqlite:///var/openbid.db"


class ExchangeConfig(_Section):
    """The auction server: deadlines, auction rules, trackers, currencies."""

    public_url: str = "http://127.0.0.1:8080"
    """Base URL of our trackers (impression, click, billing) as publishers' pages reach us."""
    tracker_secret: str = ""
    """HMAC key for trackers: set it (or `tracker_secret_file`) in production so every
    worker signs alike; empty means a random key per process."""
    tracker_secret_file: str = ""
    tracker_ttl_s: PositiveFloat = 86_400.0
    default_tmax_ms: PositiveInt = 200
    max_tmax_ms: PositiveInt = 2000
    own_budget_ms: Annotated[int, Meta(ge=0)] = 10
    """Kept back from `tmax` for our own work: DSP deadlines end this much earlier."""
    dsp_timeout_ms: PositiveInt = 150
    """Default per-partner timeout when the catalog sets none."""
    increment_micros: Annotated[int, Meta(ge=0)] = 10_000
    auction_seed: int = 0
    """Seed of the hash that breaks price ties; 0 means a random secret per process (a
    public seed would let a DSP pick bid ids that win ties). Set it to replay auctions."""
    currency_rates: dict[str, PositiveFloat] = msgspec.field(
        default_factory=lambda: {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0067}
    )
    """Value of one unit of each currency in USD, the exchange currency (USD = 1.0 must be
    there). Floors in a currency missing here are refused (400), never read as no floor."""
    breaker_failures: PositiveInt = 5
    breaker_cooldown_s: PositiveFloat = 5.0
    demand_refresh_s: PositiveFloat = 30.0
    geoip_db: str = ""
    """Path of a MaxMind-format database for geo from IP; empty: the request's own geo."""
    max_imps: PositiveInt = 20
    shaping_model: str = ""
    """Directory of a traffic-shaping model (`openbid train shaping`); empty: call every
    eligible partner. SIGHUP reloads it; a bad model is refused and the old one serves on."""
    shaping_url: str = ""
    """A shaping service (`openbid.shaping.service`) to ask instead of an in-process model."""
    exploration_share: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.01
    """Share of calls the model would filter that are sent anyway, to keep learning."""
    notice_private_hosts: bool = False
    """Let URLs a DSP chose (win, billing and loss notices, markup fetched from `nurl`)
    reach loopback and private addresses. Off in production: a DSP must not make us call
    our own network. The demo and tests, whose DSPs run on loopback, turn it on."""
    max_notices_in_flight: PositiveInt = 10_000
    """Notices being sent or retried at once; past it new ones are dropped and counted."""
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    """Networks (CIDR) of the load balancers in front of us: only their `X-Forwarded-For`
    is believed for the user's IP (the right-most address they did not add). Empty: the
    connection's own address, whatever the header says."""
    conversion_window_s: PositiveFloat = 30 * 86_400.0
    """Post-click attribution window (market time): a conversion up to this long after the
    click whose id it carries back (`obclid`) is attributed to that click."""
    view_conversion_window_s: PositiveFloat = 86_400.0
    """Post-view window: a conversion with no click in its window, up to this long after an
    impression of the same advertiser (our view cookie in the user's browser), is attributed
    to that impression. Later ones are logged unattributed, never dropped."""

    def __post_init__(self) -> None:
        secret_bytes = len(self.tracker_secret.encode())
        if 0 < secret_bytes < MIN_TRACKER_SECRET_BYTES:
            raise ValueError(
                f"tracker_secret is {secret_bytes} bytes: an HMAC key needs at least "
                f"{MIN_TRACKER_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
            )
        rates = self.currency_rates
        for code, rate in rates.items():
            if not _CURRENCY_RE.fullmatch(code):
                raise ValueError(f"currency_rates: {code!r} is not an ISO-4217 code like EUR")
            if not math.isfinite(rate):
                raise ValueError(f"currency_rates.{code} must be a finite number, got {rate}")
        if rates.get("USD") != 1.0:
            raise ValueError("currency_rates must hold USD = 1.0: USD is the exchange currency")
        if self.default_tmax_ms > self.max_tmax_ms:
            raise ValueError(
                f"default_tmax_ms ({self.default_tmax_ms}) must not exceed "
                f"max_tmax_ms ({self.max_tmax_ms})"
            )
        if self.own_budget_ms >= self.default_tmax_ms:
            raise ValueError(
                f"own_budget_ms ({self.own_budget_ms}) must be under default_tmax_ms "
                f"({self.default_tmax_ms}), or no partner would ever have time to answer"
            )
        for network in self.trusted_proxies:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {network!r} is not a network like 10.0.0.0/8"
                ) from None


class ModelsConfig(_Section):
    """The model registry (MLflow), the store promotion publishes to, and which promoted
    models the servers follow (hot swap, `docs/registry.md`)."""

    tracking_uri: str = "sqlite:///var/mlflow.db"
    """MLflow tracking and model registry: SQLite by default, or a tracking server URL
    (`http://mlflow:5000`). Only `openbid models` and the training jobs talk to it."""
    artifact_location: str = "var/mlflow-artifacts"
    """Where new MLflow experiments keep run artifacts (a directory or `s3://...`); empty:
    the tracking server's default."""
    store_url: str = "var/models"
    """The model store (a directory or an fsspec URL): promotion publishes the artifact and
    a pointer per purpose and alias there; servers read only this, never MLflow."""
    cache_dir: str = "var/models-cache"
    """Each server's local copies of the models it serves."""
    serve: list[Literal["shaping", "ctr", "cvr"]] = msgspec.field(default_factory=list)
    """Purposes whose promoted model the servers follow and swap in without a restart
    (`["shaping"]`); empty: none (the exchange uses `exchange.shaping_model` alone)."""
    alias: str = "production"
    """The alias the servers follow (a canary fleet could follow `challenger`)."""
    poll_interval_s: PositiveFloat = 5.0
    """How often a server reads the store's pointers (real seconds, not market time)."""
    name_prefix: str = "openbid-"
    """Registered model and experiment names are `<prefix><purpose>`."""
    busy_timeout_s: PositiveFloat = 30.0
    """How long a registry write waits for another writer (the lock, SQLite's busy timeout)."""
    lock_file: str = "var/registry.lock"
    """The file whose lock serialises registry writers on this machine."""
    request_timeout_s: PositiveFloat = 10.0
    request_retries: Annotated[int, Meta(ge=0, le=10)] = 1
    """Per call to a tracking server, and retries after a failed one."""

    def __post_init__(self) -> None:
        if len(set(self.serve)) != len(self.serve):
            raise ValueError(f"serve lists a purpose twice: {self.serve}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.alias) or self.alias in (
            "latest",
        ):
            raise ValueError(
                f"alias {self.alias!r}: letters, digits, '_', '.', '-' ('latest' is MLflow's)"
            )
        if not re.fullmatch(r"[A-Za-z0-9_.-]*", self.name_prefix):
            raise ValueError(f"name_prefix {self.name_prefix!r}: letters, digits, '_', '.', '-'")


class CampaignsConfig(_Section):
    """House demand: the catalog's campaigns bidding inside the exchange and behind
    `POST /bidder/openrtb` (`docs/campaigns.md`)."""

    enabled: bool = True
    """House campaigns compete in the exchange's auctions (no cost while the catalog holds
    no campaign that can serve)."""
    bidder: bool = True
    """Serve `POST /bidder/openrtb`: openbid as a DSP for other exchanges."""
    pacing: bool = True
    """Spread each campaign's daily budget over its day (off: bid the full value while the
    budget lasts)."""
    shading: bool = True
    """Shade first-price bids from our own wins and losses."""
    refresh_s: PositiveFloat = 5.0
    """How often (real seconds) the catalog's revision is polled to rebuild the index."""
    tick_s: PositiveFloat = 1.0
    """Real seconds between pacing updates (pacing itself runs on market time)."""
    hold_s: PositiveFloat = 600.0
    """Real seconds a won bid's cost stays held waiting for its billing event."""
    unwon_hold_s: PositiveFloat = 60.0
    """Real seconds the cost of a bid without an outcome (no win, no loss notice) stays
    held; at most `hold_s`."""
    max_open_holds: PositiveInt = 100_000
    """Held bids per process at most (about 200 bytes each): past it the oldest bids without
    an outcome are let go (`openbid_house_holds_shed_total`)."""
    min_price_share: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.05
    """A second-price win notice is charged at least this share of our bid (and at least
    the floor we met): its price macro is not signed."""
    anonymous_share: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.1
    """A capped line item's share of impressions to users without a usable id."""
    vendor_id: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    """Our TCF vendor id as a buyer: house demand may use a request only as a DSP with this
    id could (consent); unset, house demand does not bid where GDPR applies."""

    def __post_init__(self) -> None:
        if self.unwon_hold_s > self.hold_s:
            raise ValueError(
                f"unwon_hold_s ({self.unwon_hold_s}) must not exceed hold_s ({self.hold_s})"
            )


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class EtlConfig(_Section):
    """The ETL: the event log into training sets (`openbid etl build`, docs/pipeline.md).
    Windows are market time: the one clock's (`openbid.clock`)."""

    engine: Literal["duckdb", "spark"] = "duckdb"
    out_url: str = "var/training"
    """fsspec URL (or directory) the training sets are written under."""
    click_window_s: PositiveFloat = 3600.0
    """An impression is labelled clicked when a click on its bid follows within this."""
    post_click_window_s: PositiveFloat = 7 * 86400.0
    post_view_window_s: PositiveFloat = 86400.0
    """A conversion is attributed to its bid's click within `post_click_window_s`, else to
    its impression within `post_view_window_s`."""
    late_wait_s: Annotated[float, Meta(ge=0.0)] = 300.0
    """How long past a row's window the ETL waits for late events before emitting it."""
    lookback_s: Annotated[float, Meta(ge=0.0)] = 86400.0
    """How far before a window its auctions (and earlier copies of its trackers' hits) are
    looked for: a tracker fires at most `exchange.tracker_ttl_s` after its auction."""
    duckdb_threads: Annotated[int, Meta(ge=0)] = 0
    """0: DuckDB's default (every core)."""
    spark_master: str = "local[*]"
    """Spark master URL (`spark://host:7077`, `yarn`, `k8s://...`); other Spark settings
    come from Spark's own `spark-defaults.conf`."""


class ClockConfig(_Section):
    """The one clock (`openbid.clock`): real time, or a market clock running `speed` times
    faster (the demo, benches). Event timestamps, ETL windows, schedules and model ages read
    it; deadlines within a request never do."""

    speed: PositiveFloat = 1.0
    """Market seconds per real second (1: real time, production)."""
    start: str = ""
    """Market time at start (ISO 8601, UTC when it names no zone); empty: now."""

    def __post_init__(self) -> None:
        if self.start:
            try:
                datetime.fromisoformat(self.start)
            except ValueError:
                raise ValueError(
                    f"start {self.start!r}: not an ISO 8601 time (e.g. 2026-11-22T00:00)"
                ) from None


class TrainConfig(_Section):
    """The training jobs (`openbid train {shaping,ctr,cvr}`, docs/pipeline.md): how much
    history they read, the later window held out for the gate, the gate's bars, and what a
    model that passes becomes. Times are market seconds (the one clock)."""

    history_s: Annotated[float, Meta(ge=0.0)] = 7 * 86400.0
    """Training reads the rows of the last `history_s` before the ETL's closed window (0: all)."""
    eval_share: Annotated[float, Meta(gt=0.0, lt=0.5)] = 0.2
    """Share of the rows (the latest) held out to gate the model, widened until the held-out
    window holds `min_eval_rows` and `min_eval_positives`."""
    min_eval_rows: PositiveInt = 1000
    min_eval_positives: PositiveFloat = 30.0
    """The held-out window's minimum (the gate's `min_rows`, `min_positives`); the rows
    before it must hold as many, or the job is skipped until the data has grown."""
    calibration_band: PositiveFloat = 0.1
    """The gate: expected / actual within 1 +/- this (widened to 3 / sqrt(positives))."""
    shaping_calibration_band: PositiveFloat = 0.5
    """The same for shaping models: their scores feed thresholds chosen on the same scores,
    not prices, and the shaping trainer does not calibrate them (its FTRL learners start
    at 0, not at the base rate): the band catches a broken model, not a mispriced one."""
    production_margin: Annotated[float, Meta(ge=0.0)] = 0.001
    """The gate: log loss at most this share above the production model's, same window."""
    promote: Literal["better", "gate", "never"] = "better"
    """What becomes of a model that passed the gate (it is registered as `challenger`):
    `better`: promoted to production when its held-out log loss is below production's (the
    first model: when it passes); `gate`: always promoted; `never`: left for a person."""
    hash_bits: Annotated[int, Meta(ge=18, le=26)] = 20
    """Hash space of the click and conversion models (2^bits weights)."""
    learner: Literal["auto", "ftrl_lr", "fm"] = "auto"
    """The click and conversion models' learner (`fit_auto`): `auto` searches FTRL-LR and a
    factorization machine and keeps the FM only when it beats LR held out."""
    negative_keep_rate: Annotated[float, Meta(gt=0.0, le=1.0)] = 1.0
    """Click and conversion jobs keep each negative training row with this probability
    (declared to `fit_auto`, so served probabilities stay unbiased); the gate's window is
    never sampled."""
    keep_sets: PositiveInt = 3
    """Training sets a job built that are kept per set (older ones are deleted)."""


class SchedulerConfig(_Section):
    """The scheduler `openbid up` runs (ETL -> train -> gate -> register -> promote on an
    interval, docs/pipeline.md). It runs in the supervisor (or the single serving process),
    each job in a low-priority child process; `openbid runs` shows its run table."""

    purposes: list[Literal["shaping", "ctr", "cvr"]] = msgspec.field(default_factory=list)
    """Models trained on the interval; empty: no scheduler (cron or an orchestrator runs
    `openbid train` instead)."""
    interval_s: PositiveFloat = 3600.0
    """Market seconds between two runs of a purpose (start to start)."""
    first_run_s: Annotated[float, Meta(ge=0.0)] = 0.0
    """Market seconds after start before the first runs."""
    retries: Annotated[int, Meta(ge=0, le=20)] = 3
    """A failed job (an error, not a refusal by the gate) is tried again this many times ..."""
    retry_backoff_s: PositiveFloat = 60.0
    """... after this many market seconds, doubling each time (never past the next run)."""
    runs_db: str = "var/runs.db"
    """SQLite file of the run table (`openbid runs`); only the scheduler writes it."""
    job_timeout_s: PositiveFloat = 3600.0
    """Real seconds a job may take before its process is killed (counted as a failure)."""
    job_nice: Annotated[int, Meta(ge=0, le=19)] = 10
    """`nice` of the job process: the exchange keeps the CPU when it needs it."""

    def __post_init__(self) -> None:
        if len(set(self.purposes)) != len(self.purposes):
            raise ValueError(f"purposes lists a purpose twice: {self.purposes}")
class ArmConfig(_Section):
    """One arm of a live A/B test: a share of a purpose's traffic served by another model."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")]
    model: Annotated[str, Meta(pattern=r"^(@[A-Za-z0-9][A-Za-z0-9_.-]{0,63}|[0-9]{1,12})$")]
    """A registered version (`"7"`) or an alias (`"@challenger"`)."""
    share: Annotated[float, Meta(gt=0.0, lt=1.0)]


class ExperimentsConfig(_Section):
    """Live A/B tests (`docs/experiments.md`): arms per purpose, used while the model store
    holds no arms file for that purpose (`openbid ab start|resize|stop` writes one, and
    every server follows it without a restart)."""

    shaping: list[ArmConfig] = msgspec.field(default_factory=list)
    ctr: list[ArmConfig] = msgspec.field(default_factory=list)
    cvr: list[ArmConfig] = msgspec.field(default_factory=list)
    experiment: str = "config"
    """Salts the assignment hash: a new name deals the users out again."""

    def __post_init__(self) -> None:
        for purpose in ("shaping", "ctr", "cvr"):
            arms = getattr(self, purpose)
            names = [arm.name for arm in arms]
            if len(set(names)) != len(names) or "control" in names:
                raise ValueError(f"{purpose}: arm names must be unique and not 'control'")
            if sum(arm.share for arm in arms) >= 1.0:
                raise ValueError(f"{purpose}: the arms' shares must leave some traffic to control")


class MonitoringConfig(_Section):
    """Calibration, drift and staleness watch, and its alerts (`docs/experiments.md`)."""

    check_interval_s: PositiveFloat = 10.0
    """How often each server judges its live calibration and model ages (market seconds)."""
    window_s: PositiveFloat = 600.0
    """Live calibration is judged over this much recent market time."""
    calibration_band: Annotated[float, Meta(gt=0.0, lt=1.0)] = 0.2
    """Alert when expected / actual leaves 1 +/- this ..."""
    z: PositiveFloat = 4.0
    """... and the gap is this many standard deviations of the actual count (not noise)."""
    min_expected: PositiveFloat = 20.0
    """A slice is judged once it expects this many positives."""
    max_model_age_s: PositiveFloat = 3 * 86400.0
    """Alert when a serving model's training window ended longer ago (market seconds)."""
    max_slice_values: Annotated[int, Meta(ge=1, le=200)] = 30
    """Values kept per slice dimension in /metrics; the rest count as `other`."""
    label_shift_max_change: Annotated[float, Meta(gt=0.0)] = 0.5
    """Training halts when the recent label rate differs from the earlier one by more than
    this share (and significantly, `z`)."""
    label_shift_recent_share: Annotated[float, Meta(gt=0.0, lt=1.0)] = 0.2
    """The most recent share of a training window compared with the rest."""
    webhook_url: str = ""
    """Alerts are also POSTed here as JSON (Slack-compatible `text` included); empty: none."""
    webhook_timeout_s: PositiveFloat = 5.0
    webhook_retries: Annotated[int, Meta(ge=0, le=10)] = 3


class ConsoleConfig(_Section):
    """The console: the advertiser and publisher REST API (and its web pages) on a port of its
    own, in a process of its own beside the serving ones (`docs/console.md`)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 8090
    public_url: str = "http://127.0.0.1:8090"
    """Base URL of the console as browsers and ad pages reach it (uploaded images are served
    from `<public_url>/assets/<id>`)."""
    secure_cookies: bool = False
    """Mark session cookies `Secure` on every response (behind a TLS-terminating proxy);
    they are anyway on requests that arrive over https."""
    session_ttl_s: PositiveFloat = 8 * 3600.0
    """A web session lasts this long from the login (real seconds)."""
    login_max_failures: PositiveInt = 5
    """Wrong passwords in a row before an account is locked for `login_lockout_s`."""
    login_lockout_s: PositiveFloat = 900.0
    login_ip_max_failures: PositiveInt = 50
    """Failed logins from one address within `login_lockout_s` before it is refused (429)."""
    max_upload_bytes: PositiveInt = 1024 * 1024
    """Largest creative upload accepted (images, HTML, VAST)."""
    rollups_url: str = ""
    """Where the hourly report rollups are written (a directory or fsspec URL); empty:
    `<segments>/_rollups`, beside the event log's segments."""
    rollup_interval_s: PositiveFloat = 60.0
    """How often the console summarises the hours whose segments became final (real s)."""
    rollup_grace_s: Annotated[float, Meta(ge=0.0)] = 300.0
    """An hour is final this long (market time) after its end plus `events.roll_interval_s`:
    its segments are all written by then. A segment arriving later re-summarises its hour."""
    rollup_lookback_s: Annotated[float, Meta(ge=0.0)] = 86_400.0
    """How far before a tracker's hour its auction (publisher, country, device) is looked for."""


class Config(_Section):
    """The whole effective configuration of an openbid process."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    events: EventsConfig = msgspec.field(default_factory=EventsConfig)
    stores: StoresConfig = msgspec.field(default_factory=StoresConfig)
    exchange: ExchangeConfig = msgspec.field(default_factory=ExchangeConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    etl: EtlConfig = msgspec.field(default_factory=EtlConfig)
    models: ModelsConfig = msgspec.field(default_factory=ModelsConfig)
    clock: ClockConfig = msgspec.field(default_factory=ClockConfig)
    train: TrainConfig = msgspec.field(default_factory=TrainConfig)
    scheduler: SchedulerConfig = msgspec.field(default_factory=SchedulerConfig)
    experiments: ExperimentsConfig = msgspec.field(default_factory=ExperimentsConfig)
    monitoring: MonitoringConfig = msgspec.field(default_factory=MonitoringConfig)
    console: ConsoleConfig = msgspec.field(default_factory=ConsoleConfig)
    campaigns: CampaignsConfig = msgspec.field(default_factory=CampaignsConfig)


_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")


def _describe(error: msgspec.ValidationError) -> tuple[str, str]:
    """Splits a msgspec error into (dotted key, reason)."""
    text = str(error)
    match = _PATH_RE.search(text)
    path = match.group("path").lstrip(".") if match else ""
    reason = text[: match.start()] if match else text
    unknown = _UNKNOWN_RE.match(reason)
    if unknown:
        path = f"{path}.{unknown.group('field')}" if path else unknown.group("field")
        reason = "unknown key"
    return path or "(root)", reason.replace("`", "")


def _parse_env_value(raw: str, section: str = "", key: str = "") -> Any:
    """An environment value as TOML (`8080`, `true`, `["a"]`), except for string keys, which
    take the text verbatim: a secret may well be all digits or look like a date."""
    if _is_string_key(section, key):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _is_string_key(section: str, key: str) -> bool:
    sections = {field.encode_name: field.type for field in msgspec.inspect.type_info(Config).fields}
    section_type = sections.get(section)
    if not isinstance(section_type, msgspec.inspect.StructType):
        return False
    for field in section_type.fields:
        if field.encode_name == key:
            kind = field.type
            return isinstance(kind, msgspec.inspect.StrType) or (
                isinstance(kind, msgspec.inspect.LiteralType)
                and all(isinstance(value, str) for value in kind.values)
            )
    return False


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The overrides as a nested dict, and which variable set each dotted key."""
    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"environment variable {name}: expected OPENBID_<SECTION>__<KEY>, "
                f"for example OPENBID_SERVER__PORT"
            )
        overrides.setdefault(parts[0], {})[parts[1]] = _parse_env_value(raw, *parts)
        sources[".".join(parts)] = name
    return overrides, sources


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Loads the configuration from `path` (or `OPENBID_CONFIG`) and the environment.

    >>> load_config(environ={"OPENBID_SERVER__PORT": "9090"}).server.port
    9090
    >>> load_config(environ={"OPENBID_SERVER__PROT": "9090"})
    Traceback (most recent call last):
    ...
    openbid.errors.ConfigError: OPENBID_SERVER__PROT: server.prot: unknown key
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get("OPENBID_CONFIG") or None
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{source}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        msgspec.convert(data, Config, strict=True)
    except msgspec.ValidationError as exc:
        key, reason = _describe(exc)
        raise ConfigError(f"{source}: {key}: {reason}") from None
    overrides, sources = _env_overrides(environ)
    try:
        config = msgspec.convert(_merge(data, overrides), Config, strict=True)
    except msgspec.ValidationError as exc:
        key, reason = _describe(exc)
        origin = sources.get(key) or next(
            (var for dotted, var in sources.items() if key.startswith(dotted.split(".")[0])),
            source,
        )
        raise ConfigError(f"{origin}: {key}: {reason}") from None
    problem = _across_sections(config)
    if problem is not None:
        key, reason = problem
        raise ConfigError(f"{sources.get(key, source)}: {key}: {reason}")
    return config


def _across_sections(config: Config) -> tuple[str, str] | None:
    """A rule between sections that one section's checks cannot see, as (key, reason)."""
    workers = config.server.worker_count()
    if workers > 1 and config.stores.counters != "redis":
        return (
            "server.workers",
            f'{workers} workers need stores.counters = "redis": notice idempotency and '
            "QPS caps must be shared by every worker, and memory counters live in one process",
        )
    return None


def config_to_toml(config: Config) -> str:
    """The effective configuration as TOML text (what `openbid config show` prints), with
    every credential masked: see `mask_credentials`."""
    lines: list[str] = []
    for section, values in msgspec.to_builtins(config).items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:  # TOML has no null: unset keys read back as their default
                lines.append(f"# {key} = (not set)")
                continue
            lines.append(f"{key} = {_toml_value(mask_credentials(key, value))}")
        lines.append("")
    return "\n".join(lines)


_SECRET_KEY_RE = re.compile(r"secret|token|passw(or)?d|credential|api_?key|private_?key", re.I)
_SECRET_QUERY_RE = re.compile(
    r"(?P<name>[^&=?#\s]*(?:secret|token|passw(?:or)?d|credential|api_?key)[^&=#\s]*)="
    r"(?P<value>[^&#\s]*)",
    re.I,
)
MASK = "(set, not shown)"


def mask_credentials(key: str, value: Any) -> Any:
    """`value` with its credentials masked, for display.

    A key named like a secret (`*secret*`, `*token*`, `*password*`, ...) shows only whether it
    is set, except a `*_file` key, whose value is a path; in every string, a URL's password
    (`scheme://user:PASSWORD@host`) and secret-named query parameters become `***`. Lists and
    tables are masked item by item.

    >>> mask_credentials("catalog_url", "postgresql://app:s3cret@db.example/openbid")
    'postgresql://app:***@db.example/openbid'
    >>> mask_credentials("redis_url", "redis://:s3cret@cache:6379/0?password=x&db=1")
    'redis://:***@cache:6379/0?password=***&db=1'
    >>> mask_credentials("reload_token", "abc"), mask_credentials("tracker_secret", "")
    ('(set, not shown)', '')
    """
    if isinstance(value, dict):
        return {k: mask_credentials(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_credentials(key, v) for v in value]
    if not isinstance(value, str) or not value:
        return value
    if _SECRET_KEY_RE.search(key) and not key.endswith("_file"):
        return MASK
    return _mask_in_text(value)


def _mask_in_text(text: str) -> str:
    scheme_end = text.find("://")
    if scheme_end >= 0:
        # The user information ends at the last "@": a password may hold an unescaped "@"
        # or "/", and masking too much is harmless where showing too much is not.
        start = scheme_end + 3
        at = text.rfind("@", start)
        colon = text.find(":", start, at) if at >= 0 else -1
        if colon >= 0:
            text = f"{text[: colon + 1]}***{text[at:]}"
    return _SECRET_QUERY_RE.sub(lambda m: f"{m.group('name')}=***", text)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return msgspec.json.encode(str(value)).decode()
