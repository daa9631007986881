"""The run table: one row per training job the scheduler ran (`openbid runs`), in SQLite.

Only the scheduler writes it (one process: the supervisor, or the single serving process);
the demo's panel and `openbid runs` read it. Times are on openbid's clock (market time in
the demo), `real_seconds` is how long the job took in real time. WAL mode: readers never
block the writer.

| column | |
| --- | --- |
| `id`, `purpose`, `attempt` | the run; attempt 1, then 2... when a failed job is retried |
| `status` | `running`, then `promoted`, `registered`, `refused` (by the gate), `skipped` (too little data), `failed` (an error; retried) |
| `started_micros`, `ended_micros`, `real_seconds` | on the clock; real duration |
| `rows`, `positives` | the training set's |
| `metrics` | JSON: the gate's figures on the held-out window, the production model's on the same rows, training figures |
| `version`, `promoted` | the registered version, and whether it became production |
| `reason` | why refused, skipped, failed, or (not) promoted |
| `trained_end_micros`, `window_until_micros` | the last event trained on; the training set's closed window |
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import msgspec

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  purpose TEXT NOT NULL,
  attempt INTEGER NOT NULL DEFAULT 1,
  status TEXT NOT NULL,
  started_micros INTEGER NOT NULL,
  ended_micros INTEGER NOT NULL DEFAULT 0,
  real_seconds REAL NOT NULL DEFAULT 0,
  rows INTEGER NOT NULL DEFAULT 0,
  positives REAL NOT NULL DEFAULT 0,
  metrics TEXT NOT NULL DEFAULT '{}',
  version TEXT NOT NULL DEFAULT '',
  promoted INTEGER NOT NULL DEFAULT 0,
  reason TEXT NOT NULL DEFAULT '',
  trained_end_micros INTEGER NOT NULL DEFAULT 0,
  window_until_micros INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_purpose ON runs (purpose, id);
"""
COLUMNS = (
    "id", "purpose", "attempt", "status", "started_micros", "ended_micros", "real_seconds",
    "rows", "positives", "metrics", "version", "promoted", "reason", "trained_end_micros",
    "window_until_micros",
)  # fmt: skip
FINAL_STATUSES = ("promoted", "registered", "passed", "refused", "skipped", "failed")


class Run(msgspec.Struct, frozen=True):
    """One row of the run table."""

    id: int
    purpose: str
    attempt: int
    status: str
    started_micros: int
    ended_micros: int
    real_seconds: float
    rows: int
    positives: float
    metrics: dict[str, float]
    version: str
    promoted: bool
    reason: str
    trained_end_micros: int
    window_until_micros: int


def short_reason(reason: str) -> str:
    """The first reason of a run, without its explanation, for a table cell.

    >>> short_reason("calibration: expected / actual is 0.383 (mean prediction 0.0059); x")
    'calibration: expected / actual is 0.383'
    >>> short_reason("not enough data yet: only 25 positives in 13,220 rows (a held-out ...)")
    'not enough data yet: only 25 positives in 13,220 rows'
    """
    return reason.split(";")[0].split(" (")[0][:80]


def iso(micros: int) -> str:
    """`2026-11-22T21:00:00Z`, or '-' for 0."""
    if not micros:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(micros // 1_000_000))


class RunTable:
    """The run table in the SQLite file at `path` (created on first write)."""

    def __init__(self, path: str | Path, *, readonly: bool = False, timeout_s: float = 30.0):
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            self._db = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, timeout=timeout_s, check_same_thread=False
            )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
            self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes (the scheduler only)
    def start(self, purpose: str, started_micros: int, attempt: int = 1) -> int:
        """Adds a `running` row; returns its id."""
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO runs (purpose, attempt, status, started_micros) VALUES (?, ?, ?, ?)",
                (purpose, attempt, "running", started_micros),
            )
        return int(cursor.lastrowid)

    def finish(
        self,
        run_id: int,
        *,
        status: str,
        ended_micros: int,
        real_seconds: float,
        rows: int = 0,
        positives: float = 0.0,
        metrics: dict[str, float] | None = None,
        version: str = "",
        promoted: bool = False,
        reason: str = "",
        trained_end_micros: int = 0,
        window_until_micros: int = 0,
    ) -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"status {status!r}: expected one of {FINAL_STATUSES}")
        finite = {k: v for k, v in (metrics or {}).items() if v == v and abs(v) != float("inf")}
        with self._db:
            self._db.execute(
                "UPDATE runs SET status = ?, ended_micros = ?, real_seconds = ?, rows = ?, "
                "positives = ?, metrics = ?, version = ?, promoted = ?, reason = ?, "
                "trained_end_micros = ?, window_until_micros = ? WHERE id = ?",
                (
                    status, ended_micros, real_seconds, rows, positives,
                    msgspec.json.encode(finite).decode(), version, int(promoted), reason,
                    trained_end_micros, window_until_micros, run_id,
                ),
            )  # fmt: skip

    def abandon_running(self, ended_micros: int) -> int:
        """Marks the rows a stopped scheduler left `running` as failed; returns how many."""
        with self._db:
            cursor = self._db.execute(
                "UPDATE runs SET status = 'failed', ended_micros = ?, "
                "reason = 'interrupted: the scheduler stopped during the job' "
                "WHERE status = 'running'",
                (ended_micros,),
            )
        return cursor.rowcount

    # --- reads
    def recent(self, limit: int = 20, purpose: str | None = None) -> list[Run]:
        """The latest runs, newest first."""
        query = f"SELECT {', '.join(COLUMNS)} FROM runs"
        arguments: tuple = ()
        if purpose is not None:
            query += " WHERE purpose = ?"
            arguments = (purpose,)
        query += " ORDER BY id DESC LIMIT ?"
        try:
            rows = self._db.execute(query, (*arguments, limit)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [_run(row) for row in rows]

    def latest(self, purpose: str, statuses: tuple[str, ...] = FINAL_STATUSES) -> Run | None:
        """The newest run of `purpose` with one of `statuses`."""
        for run in self.recent(200, purpose):
            if run.status in statuses:
                return run
        return None


def _run(row: tuple) -> Run:
    values = dict(zip(COLUMNS, row, strict=True))
    with contextlib.suppress(msgspec.DecodeError):
        values["metrics"] = msgspec.json.decode(values["metrics"], type=dict[str, float])
    if not isinstance(values["metrics"], dict):
        values["metrics"] = {}
    values["promoted"] = bool(values["promoted"])
    return Run(**values)


def open_readonly(path: str | Path) -> RunTable | None:
    """The run table for reading, or None when no scheduler has written one yet."""
    if not Path(path).exists():
        return None
    return RunTable(path, readonly=True)
