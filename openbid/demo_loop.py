"""The demo's learning-loop panel: which models serve (version, age on the market clock),
what the scheduler's last runs did, and what the models change in the live traffic
(callouts saved, CTR, expected / actual clicks of the serving click model on the last
window it was measured on).

Sources: the process's metrics registry (the shaping decisions, impressions, clicks, and
`openbid_model_info` of the models serving; with workers, the supervisor's gathered
totals), the model store's pointers (ages), and the scheduler's run table (read-only, in a
thread, every `REFRESH_S`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Group
from rich.table import Table

from openbid import clock
from openbid.config import Config, EventsConfig, ExchangeConfig, SchedulerConfig
from openbid.experiments.arms import ArmsFile, ensure_arm
from openbid.obs import REGISTRY
from openbid.pipeline.modelstore import ModelStore, Pointer
from openbid.pipeline.runs import Run, open_readonly, short_reason

log = logging.getLogger(__name__)

DEMO_SPEED = 60.0
DEMO_VENDOR_ID = 91
"""openbid's TCF vendor id as a buyer in the demo (`campaigns.vendor_id`, unless the
configuration sets one): the simulated market's consent platform lists it beside the DSPs'
(odd, so only the users who accept all vendors consent to it, about 72% of EU traffic)."""
"""Market seconds per real second: a market hour a real minute, so the loop shows in minutes."""
DEMO_INTERVAL_REAL_S = 30.0
"""Real seconds between two training runs of each model."""
_DEMO_MARK = ".openbid-demo"
REFRESH_S = 2.0
SAVED_WINDOW_S = 30.0
"""Callouts saved and CTR are shown over the last this many real seconds."""
AB_PURPOSE = "shaping"
AB_SHARE = 0.1
"""The demo's A/B test: the shaping `@challenger` on this share of the traffic."""


def demo_config(settings: Config, speed: float | None = None) -> Config:
    """The configuration `openbid up --demo` runs: the simulated DSPs (and their notice URLs)
    on loopback; a market clock (`speed`, else `clock.speed` when set, else `DEMO_SPEED`);
    the scheduler training the shaping and click models every `DEMO_INTERVAL_REAL_S` (unless
    `scheduler.interval_s` was set: market seconds); the
    exchange following both. The demo's state (its training sets, registry, model store,
    run table, and its event log unless `events.dir` was set) lives in `demo/` beside the
    event log's directory (`var/demo/` by default), emptied here when an earlier demo made
    it: every demo starts with no model, and a market clock that starts at today."""
    replace = msgspec.structs.replace
    speed = speed or (settings.clock.speed if settings.clock.speed != 1.0 else DEMO_SPEED)
    demo_dir = Path(settings.events.dir).parent / "demo"
    if (demo_dir / _DEMO_MARK).exists():
        shutil.rmtree(demo_dir)
    demo_dir.mkdir(parents=True, exist_ok=True)
    (demo_dir / _DEMO_MARK).touch()
    events = settings.events
    if events.dir == EventsConfig().dir and not events.segments_url:
        # a market clock restarts at today: last demo's events lie hours in the future
        events = replace(events, dir=str(demo_dir / "events"))
    purposes = ["shaping", "ctr"]
    interval_s = settings.scheduler.interval_s
    if interval_s == SchedulerConfig().interval_s:  # not set: the demo's
        interval_s = DEMO_INTERVAL_REAL_S * speed
    public_url = settings.exchange.public_url
    if public_url == ExchangeConfig().public_url and settings.server.port:
        # the simulated users fetch the trackers: at the port this demo serves on (the
        # default public URL names port 8080, another demo's or nobody's; with port 0,
        # chosen at bind time, set exchange.public_url)
        host = settings.server.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        public_url = f"http://{'[' + host + ']' if ':' in host else host}:{settings.server.port}"
    return replace(
        settings,
        exchange=replace(settings.exchange, notice_private_hosts=True, public_url=public_url),
        campaigns=replace(
            settings.campaigns, vendor_id=settings.campaigns.vendor_id or DEMO_VENDOR_ID
        ),
        clock=replace(settings.clock, speed=speed),
        events=events,
        etl=replace(
            settings.etl,
            out_url=str(demo_dir / "training"),
            # the users click within 5 market minutes; a market minute's wait is a real second
            click_window_s=600.0,
            late_wait_s=60.0,
        ),
        models=replace(
            settings.models,
            tracking_uri=f"sqlite:///{demo_dir / 'mlflow.db'}",
            artifact_location=str(demo_dir / "mlflow-artifacts"),
            store_url=str(demo_dir / "models"),
            cache_dir=str(demo_dir / "models-cache"),
            lock_file=str(demo_dir / "registry.lock"),
            serve=list(dict.fromkeys([*settings.models.serve, *purposes])),
            poll_interval_s=1.0,
        ),
        # FTRL-LR alone: a job takes seconds, and minutes of clicks do not feed an FM
        # 12 market hours (12 real minutes) of history: every click of a short demo, a
        # bounded shaping set; a tenth held out keeps the models fresh
        train=replace(settings.train, history_s=12 * 3600.0, eval_share=0.1, learner="ftrl_lr"),
        scheduler=replace(
            settings.scheduler,
            purposes=list(dict.fromkeys([*settings.scheduler.purposes, *purposes])),
            interval_s=interval_s,
            retry_backoff_s=5.0 * speed,
            runs_db=str(demo_dir / "runs.db"),
        ),
    )


class Snapshot:
    """The metrics registry read once (one `collect()`): a render reads dozens of values,
    and each `get_sample_value` would collect every metric again (8% of the demo's CPU)."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[tuple[dict[str, str], float]]] = collections.defaultdict(list)
        for family in REGISTRY.collect():
            for sample in family.samples:
                self.by_name[sample.name].append((sample.labels, sample.value))

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        return self.by_name.get(name, [])

    def value(self, name: str, **labels: str) -> float:
        """The sample of exactly these labels (0 when none), as `get_sample_value`."""
        for sample_labels, value in self.by_name.get(name, []):
            if sample_labels == labels:
                return value
        return 0.0

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples that carry these labels (any others too)."""
        return sum(
            value
            for sample_labels, value in self.by_name.get(name, [])
            if all(sample_labels.get(k) == v for k, v in labels.items())
        )


class ChallengerArm:
    """The demo's A/B test (issue 16): once a second model of `purpose` has been registered
    (the `challenger` alias names version 2 or later), an arm serves `@challenger` on
    `share` of the traffic (`openbid.experiments.arms.ensure_arm`; an arms file already in
    the store is left as it is). Every training run that passes the gate moves
    `@challenger` to its model, so the arm serves the newest candidate: the same model as
    control when that one was promoted, a model production beat otherwise. `check` reads
    the store (blocking: in a thread)."""

    def __init__(self, config: Config, purpose: str = AB_PURPOSE, share: float = AB_SHARE):
        self.store = ModelStore(config.models.store_url)
        self.purpose = purpose
        self.share = share
        self.arms: ArmsFile | None = None

    def check(self) -> ArmsFile | None:
        """The arms in force once started (None before)."""
        if self.arms is not None:
            return self.arms
        pointer = self.store.read_pointer(self.purpose, "challenger")
        if pointer is None or not pointer.version.isdigit() or int(pointer.version) < 2:
            return None
        self.arms = ensure_arm(self.store, self.purpose, share=self.share)
        log.info(
            "A/B arm started",
            extra={"purpose": self.purpose, "arms": [f"{a.name}={a.model}:{a.share:g}"
                                                     for a in self.arms.arms]},
        )  # fmt: skip
        return self.arms


def market_age(seconds: float) -> str:
    """A market-clock age as `1h05m` / `12m30s` / `40s`.

    >>> market_age(3900), market_age(750), market_age(40.2)
    ('1h05m', '12m30s', '40s')
    """
    seconds = max(seconds, 0.0)
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.0f}s"


class LoopPanel:
    """Reads what the panel shows (`refresh_forever`) and draws it (`render`)."""

    def __init__(self, config: Config, platform: Any = None) -> None:
        self.config = config
        self.platform = platform
        """The demo's `openbid.platform.Platform` (its arms and live calibration), if any."""
        self.purposes = list(dict.fromkeys([*config.models.serve, *config.scheduler.purposes]))
        self.store = ModelStore(config.models.store_url)
        self.pointers: dict[str, Pointer | None] = {}
        self.last_runs: dict[str, Run | None] = {}
        self.last_outcome: dict[str, Run | None] = {}
        self.running: dict[str, Run | None] = {}
        self.runs_seen = 0
        self.challenger = ChallengerArm(config)
        self._history: collections.deque[tuple[float, dict[str, float]]] = collections.deque()

    def _read(self) -> None:
        """Blocking reads (a thread): pointers and the run table."""
        for purpose in self.purposes:
            try:
                self.pointers[purpose] = self.store.read_pointer(purpose, self.config.models.alias)
            except Exception as exc:  # a store problem shows as no pointer, never a crash
                log.debug("pointer unreadable", extra={"purpose": purpose, "error": str(exc)})
                self.pointers[purpose] = None
        table = open_readonly(self.config.scheduler.runs_db)
        if table is None:
            return
        with table:
            recent = table.recent(200)
        self.runs_seen = len(recent)
        for purpose in self.purposes:
            mine = [run for run in recent if run.purpose == purpose]
            self.running[purpose] = next((r for r in mine if r.status == "running"), None)
            done = [r for r in mine if r.status != "running"]
            self.last_runs[purpose] = done[0] if done else None
            self.last_outcome[purpose] = next(
                (r for r in done if r.status in ("promoted", "registered", "refused")), None
            )

    def sample_traffic(self, snapshot: Snapshot | None = None) -> None:
        """Counters now, kept for the windowed rates."""
        snapshot = snapshot or Snapshot()
        now = time.monotonic()
        decisions: dict[str, float] = collections.defaultdict(float)
        for labels, value in snapshot.samples("openbid_shaping_decisions_total"):
            decisions[labels.get("decision", "")] += value
        counters = {
            "filtered": decisions["filtered"],
            "eligible": decisions["called"] + decisions["filtered"] + decisions["explored"],
            "impressions": snapshot.total("openbid_impressions_total", outcome="counted"),
            "clicks": snapshot.total("openbid_clicks_total", outcome="counted"),
        }
        self._history.append((now, counters))
        while self._history and self._history[0][0] < now - SAVED_WINDOW_S:
            self._history.popleft()

    def _window(self) -> dict[str, float]:
        if len(self._history) < 2:
            return {}
        (_, first), (_, last) = self._history[0], self._history[-1]
        return {key: last[key] - first.get(key, 0.0) for key in last}

    async def refresh_forever(self) -> None:
        """Reads what the panel shows, and starts the A/B arm when its time comes."""
        while True:
            with contextlib.suppress(Exception):  # the panel never stops the demo
                await asyncio.to_thread(self._read)
            try:
                await asyncio.to_thread(self.challenger.check)
            except Exception as exc:  # a store problem: tried again at the next refresh
                log.warning("cannot start the A/B arm", extra={"error": str(exc)})
            await asyncio.sleep(REFRESH_S)

    def serving_versions(self, snapshot: Snapshot | None = None) -> dict[str, str]:
        """The registry version each purpose serves (from the servers' own metric)."""
        serving: dict[str, str] = {}
        for labels, value in (snapshot or Snapshot()).samples("openbid_model_info"):
            if value > 0 and labels.get("purpose"):
                serving[labels["purpose"]] = labels.get("version", "")
        return serving

    def render(self, snapshot: Snapshot | None = None) -> Group:
        """The models table, then the A/B arms (once the test runs)."""
        tables: list[Table] = [self._models_table(snapshot or Snapshot())]
        arms = self.ab_table()
        if arms is not None:
            tables.append(arms)
        return Group(*tables)

    def ab_table(self) -> Table | None:
        """The live A/B test of this process: each shaping arm, its model, share, calls
        scored and expected / actual bids (`openbid.monitoring.panel`); None before the
        arm starts."""
        if self.platform is None or self.challenger.arms is None:
            return None
        from openbid.monitoring.panel import PANEL_COLUMNS, panel_rows

        rows = panel_rows(self.platform)
        if not rows:
            return None
        table = Table(
            title=f"A/B test ({AB_PURPOSE}): @challenger on {AB_SHARE:.0%} of the traffic "
            "(`openbid ab report`)",
            expand=False,
        )
        for column in PANEL_COLUMNS:
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(*row)
        return table

    def _models_table(self, snapshot: Snapshot) -> Table:
        self.sample_traffic(snapshot)
        speed = clock.current().speed
        now_s = clock.now()
        serving = self.serving_versions(snapshot)
        models = Table(
            title=f"learning loop (clock x{speed:g}: ages in market time)",
            expand=False,
        )
        for column in ("model", "serving", "trained to", "promoted", "last run", "held out"):
            models.add_column(column, justify="left")
        for purpose in self.purposes:
            pointer = self.pointers.get(purpose)
            version = serving.get(purpose, "")
            if version and pointer is not None and pointer.version == version:
                trained = market_age(now_s - pointer.trained_end_micros / 1e6) + " ago"
                promoted = market_age(now_s - pointer.promoted_at_micros / 1e6) + " ago"
            else:
                trained = promoted = "-"
            models.add_row(
                purpose,
                f"v{version}" if version else "none: every DSP called" if purpose == "shaping"
                else "none",
                trained,
                promoted,
                self._last_run(purpose, now_s),
                self._held_out(purpose),
            )  # fmt: skip
        window = self._window()
        eligible = window.get("eligible", 0.0)
        impressions = window.get("impressions", 0.0)
        saved = f"{window['filtered'] / eligible:.1%}" if eligible else "-"
        ctr = f"{window['clicks'] / impressions:.2%}" if impressions else "-"
        models.caption = (
            f"last {SAVED_WINDOW_S:.0f} s: callouts saved {saved}, CTR {ctr}; "
            f"expected / actual clicks {self._expected_actual()}"
        )
        return models

    def _last_run(self, purpose: str, now_s: float) -> str:
        running = self.running.get(purpose)
        if running is not None:
            return f"running ({market_age(now_s - running.started_micros / 1e6)})"
        run = self.last_runs.get(purpose)
        if run is None:
            return "not yet" if purpose in self.config.scheduler.purposes else "not scheduled"
        text = f"{run.status} {market_age(now_s - run.ended_micros / 1e6)} ago"
        if run.status in ("refused", "skipped", "failed") and run.reason:
            text += f": {short_reason(run.reason)}"
        return text

    def _held_out(self, purpose: str) -> str:
        run = self.last_outcome.get(purpose)
        if run is None:
            return "-"
        metrics = run.metrics
        parts = []
        if "heldout_callouts_saved" in metrics:
            parts.append(f"saves {metrics['heldout_callouts_saved']:.0%}")
        if "heldout_calibration_ratio" in metrics:
            parts.append(f"e/a {metrics['heldout_calibration_ratio']:.2f}")
        if "heldout_normalized_entropy" in metrics:
            parts.append(f"NE {metrics['heldout_normalized_entropy']:.3f}")
        if "heldout_positives" in metrics:
            parts.append(f"{metrics['heldout_positives']:,.0f} pos")
        return ", ".join(parts)

    def _expected_actual(self) -> str:
        """The serving click model's expected / actual clicks on the last window it was
        measured on: the held-out window of the run that promoted it, or of a later run
        (which scored the serving model on rows it never trained on)."""
        run = self.last_outcome.get("ctr")
        if run is None:
            return "- (no click model measured yet)"
        metrics = run.metrics
        if run.promoted:
            ratio, what = metrics.get("heldout_calibration_ratio"), f"v{run.version}"
        else:
            ratio, what = metrics.get("production_calibration_ratio"), "serving model"
        if ratio is None:
            return "- (no click model serving yet)"
        clicks = metrics.get("heldout_positives", 0.0)
        return f"{ratio:.2f} ({what}, {clicks:,.0f} clicks held out)"
