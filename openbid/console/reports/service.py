"""The console's reports: keeps the rollups current (a background thread calling
`Rollups.update` every `console.rollup_interval_s`) and answers report queries from them,
holding each grain's rollups in memory (reloaded hour by hour as they change)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from openbid import clock
from openbid.config import Config
from openbid.console.reports.query import ReportRequest, run_report
from openbid.console.reports.rollup import HOUR_MICROS, Rollups
from openbid.console.reports.sql import GRAINS
from openbid.pipeline.engines import open_engine

log = logging.getLogger(__name__)


class Reports:
    def __init__(self, rollups: Rollups, interval_s: float = 60.0) -> None:
        self.rollups = rollups
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._update_lock = threading.Lock()
        self._hours: dict[tuple[str, int], tuple[float, pa.Table]] = {}
        self._tables: dict[str, pa.Table] = {}
        self._loaded_version = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: Config) -> Reports:
        events = config.events
        segments_url = events.segments_url or str(Path(events.dir) / "segments")
        engine = open_engine(
            config.etl.engine,
            duckdb_threads=config.etl.duckdb_threads,
            spark_master=config.etl.spark_master,
        )
        settings = config.console
        rollups = Rollups(
            segments_url,
            engine,
            rollups_url=settings.rollups_url,
            roll_interval_s=events.roll_interval_s,
            grace_s=settings.rollup_grace_s,
            lookback_s=settings.rollup_lookback_s,
        )
        return cls(rollups, settings.rollup_interval_s)

    # --- keeping current
    def update(self) -> None:
        """One update of the rollups now (market time); errors are logged, never raised:
        reports then answer from what is already summarised."""
        with self._update_lock:
            try:
                self.rollups.update(clock.now_micros())
            except Exception as exc:  # a bad segment, a store down: the next round retries
                log.error("report rollup update failed", extra={"error": repr(exc)})

    def start(self) -> None:
        """Updates in a background thread until `close()`."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                self.update()
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=loop, name="openbid-rollups", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.rollups.engine.close()

    # --- reading
    def tables(self) -> dict[str, pa.Table]:
        """Each grain's rollups of every summarised hour, in memory."""
        with self._lock:
            if self._loaded_version == self.rollups.version and self._tables:
                return self._tables
            version = self.rollups.version
            state = dict(self.rollups.state.hours)
            changed = False
            for hour_text, hour_state in state.items():
                hour = int(hour_text)
                for grain in GRAINS:
                    known = self._hours.get((grain, hour))
                    if known is not None and known[0] == hour_state.summarised_at_s:
                        continue
                    table = self.rollups.read(grain, hour)
                    if table is not None:
                        self._hours[(grain, hour)] = (hour_state.summarised_at_s, table)
                        changed = True
            if changed or not self._tables:
                self._tables = {}
                for grain in GRAINS:
                    parts = [t for (g, _), (_, t) in sorted(self._hours.items()) if g == grain]
                    if parts:
                        self._tables[grain] = pa.concat_tables(parts, promote_options="default")
            self._loaded_version = version
            return self._tables

    def report(
        self, request: ReportRequest, budgets: Mapping[str, int] | None = None
    ) -> tuple[list[dict[str, object]], dict[str, object]]:
        return run_report(self.tables(), request, budgets)

    def complete_until_micros(self) -> int:
        """Reports are final before this time (later hours are provisional or missing)."""
        return self.rollups.state.watermark_hour * HOUR_MICROS

    def campaign_spend_micros(self, campaign_id: str, since_micros: int, until_micros: int) -> int:
        """A campaign's spend from the rollups, the hours overlapping [since, until)."""
        since_hour = since_micros // HOUR_MICROS
        until_hour = -(-until_micros // HOUR_MICROS)
        request = ReportRequest(
            since_hour=since_hour,
            until_hour=until_hour,
            grains=("delivery",),
            filters={"campaign": (campaign_id,)},
        )
        _, totals = self.report(request)
        return int(totals.get("spend_micros") or 0)
