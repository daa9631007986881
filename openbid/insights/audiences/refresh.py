"""The incremental audience refresh: each run reads only the event log's segment files no
earlier run read (`hits.py`), folds their behaviours into per-user hourly counts kept between
runs, and recomputes membership at `now` from those counts: a user enters a segment when its
conditions are met in their windows and leaves when they no longer are (time passing alone
can end a membership). Membership changes are published to the set store the exchange reads
(`openbid.stores.SegmentMembership`) before the new state is committed, so a failed publish
is redone by the next run.

The SQL is written once in DuckDB's dialect and run on a pipeline engine (DuckDB by default,
Spark at scale) through SQLGlot, as the attribution journeys are. State between runs is a
directory of Parquet tables (`counts`, `facts`, `pending`, `members`) and `state.json` (the
watermark: the files read), replaced whole by each run (a new `run-<n>` directory, then the
`CURRENT` pointer renamed over). A changed spec rebuilds the state from the log.

A behaviour joins the context of its auction (site, app, categories) by auction id; when its
auction has not been read yet (another worker's log rolled later) it waits in `pending`, for
at most `join_horizon_s`, then counts without context.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openbid import clock
from openbid.insights.attribution.journeys import render
from openbid.insights.audiences.hits import (
    FACTS_SCHEMA,
    HIT_KINDS,
    HITS_SCHEMA,
    LogFiles,
    facts_of,
    hits_of,
    hour_of_path,
)
from openbid.insights.audiences.spec import FILTER_COLUMN, AudienceSpec, Condition
from openbid.insights.errors import InsightsError
from openbid.pipeline.engines import DuckDBEngine, Engine
from openbid.stores.sets import SegmentMembership

log = logging.getLogger(__name__)

HOUR_MICROS = 3_600_000_000
STATE_FORMAT = 1

COUNTS_SCHEMA = pa.schema(
    [
        ("segment", pa.string()),
        ("cond", pa.int64()),
        ("user_id", pa.string()),
        ("hour", pa.int64()),
        ("n", pa.int64()),
    ]
)
MEMBERS_SCHEMA = pa.schema(
    [("segment", pa.string()), ("user_id", pa.string()), ("since_micros", pa.int64())]
)
CONDITIONS_SCHEMA = pa.schema(
    [
        ("segment", pa.string()),
        ("cond", pa.int64()),
        ("include", pa.int64()),
        ("match_all", pa.int64()),
        ("window_hours", pa.int64()),
        ("min_count", pa.int64()),
    ]
)
_TABLES = {
    "counts": COUNTS_SCHEMA,
    "facts": FACTS_SCHEMA,
    "pending": HITS_SCHEMA,
    "members": MEMBERS_SCHEMA,
}


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def condition_sql(condition: Condition) -> str:
    """The predicate (DuckDB's SQL) a resolved behaviour (`ready`) meets for `condition`."""
    terms = [f"behaviour = {_quote(condition.behaviour)}"]
    for name, values in condition.filters().items():
        column = FILTER_COLUMN[name]
        if name == "categories":  # ',IAB17,' itself, or a child ',IAB17-44,'
            hits = [f"STRPOS(categories, {_quote(',' + v + ',')}) > 0" for v in values]
            hits += [f"STRPOS(categories, {_quote(',' + v + '-')}) > 0" for v in values]
            terms.append("(" + " OR ".join(hits) + ")")
        else:
            terms.append(f"{column} IN ({', '.join(_quote(v) for v in values)})")
    return " AND ".join(terms)


def conditions_table(spec: AudienceSpec) -> pa.Table:
    rows = []
    for segment in spec.segments:
        for i, (include, condition) in enumerate(_numbered(segment)):
            rows.append(
                {
                    "segment": segment.id,
                    "cond": i,
                    "include": int(include),
                    "match_all": int(segment.match == "all"),
                    "window_hours": condition.window_hours,
                    "min_count": condition.min_count,
                }
            )
    return pa.Table.from_pylist(rows, schema=CONDITIONS_SCHEMA)


def _numbered(segment) -> list[tuple[bool, Condition]]:
    return [(True, c) for c in segment.include] + [(False, c) for c in segment.exclude]


def _counts_new_sql(spec: AudienceSpec) -> str:
    parts = []
    for segment in spec.segments:
        for i, (_, condition) in enumerate(_numbered(segment)):
            parts.append(
                f"SELECT {_quote(segment.id)} AS segment, CAST({i} AS BIGINT) AS cond, user_id, "
                "CAST(FLOOR(ts_micros / 3600000000.0) AS BIGINT) AS hour "
                f"FROM ready WHERE {condition_sql(condition)}"
            )
    union = "\nUNION ALL\n".join(parts)
    return f"""
SELECT segment, cond, user_id, hour, CAST(COUNT(*) AS BIGINT) AS n
FROM ({union}) AS matched
GROUP BY segment, cond, user_id, hour"""


_FACTS_SQL = """
SELECT auction_id, MIN(ts_micros) AS ts_micros, MIN(site_id) AS site_id, MIN(domain) AS domain,
  MIN(app_bundle) AS app_bundle, MIN(publisher_id) AS publisher_id,
  MIN(categories) AS categories
FROM (SELECT * FROM facts_old UNION ALL SELECT * FROM facts_new) AS f
WHERE ts_micros >= :facts_since_micros
GROUP BY auction_id"""

# one behaviour per dedup key (a tracker firing twice within a run counts once)
_RESOLVE_SQL = """
WITH hits AS (
  SELECT user_id, ts_micros, behaviour, auction_id, campaign_id, creative_id, advertiser,
    dedup_key
  FROM (
    SELECT h.*, ROW_NUMBER() OVER (PARTITION BY h.dedup_key ORDER BY h.ts_micros, h.user_id)
      AS nth
    FROM (SELECT * FROM pending_old UNION ALL SELECT * FROM hits_new) AS h
  ) AS ranked
  WHERE nth = 1
)
SELECT h.user_id AS user_id, h.ts_micros AS ts_micros, h.behaviour AS behaviour,
  h.auction_id AS auction_id, h.campaign_id AS campaign_id, h.creative_id AS creative_id,
  h.advertiser AS advertiser, h.dedup_key AS dedup_key,
  COALESCE(f.site_id, '') AS site_id, COALESCE(f.domain, '') AS domain,
  COALESCE(f.app_bundle, '') AS app_bundle, COALESCE(f.publisher_id, '') AS publisher_id,
  COALESCE(f.categories, ',') AS categories,
  CASE WHEN f.auction_id IS NOT NULL OR h.auction_id = ''
    OR h.ts_micros < :give_up_before_micros THEN 1 ELSE 0 END AS is_ready
FROM hits AS h
LEFT JOIN facts AS f ON f.auction_id = h.auction_id"""

_MERGE_COUNTS_SQL = """
WITH everything AS (SELECT * FROM counts_old UNION ALL SELECT * FROM counts_new),
keep AS (SELECT segment, MAX(window_hours) AS window_hours FROM conditions GROUP BY segment)
SELECT a.segment AS segment, a.cond AS cond, a.user_id AS user_id, a.hour AS hour,
  CAST(SUM(a.n) AS BIGINT) AS n
FROM everything AS a
JOIN keep AS k ON k.segment = a.segment
WHERE a.hour > :now_hour - k.window_hours
GROUP BY a.segment, a.cond, a.user_id, a.hour"""

_MEMBERS_SQL = """
WITH met AS (
  SELECT c.segment AS segment, c.cond AS cond, c.include AS include, k.user_id AS user_id
  FROM counts AS k
  JOIN conditions AS c ON c.segment = k.segment AND c.cond = k.cond
  WHERE k.hour > :now_hour - c.window_hours AND k.hour <= :now_hour
  GROUP BY c.segment, c.cond, c.include, c.min_count, k.user_id
  HAVING SUM(k.n) >= c.min_count
),
needed AS (
  SELECT segment, CASE WHEN MAX(match_all) = 1 THEN SUM(include) ELSE 1 END AS needed
  FROM conditions GROUP BY segment
),
included AS (
  SELECT m.segment AS segment, m.user_id AS user_id
  FROM met AS m JOIN needed AS n ON n.segment = m.segment
  WHERE m.include = 1
  GROUP BY m.segment, m.user_id, n.needed
  HAVING COUNT(*) >= n.needed
),
excluded AS (SELECT DISTINCT segment, user_id FROM met WHERE include = 0)
SELECT i.segment AS segment, i.user_id AS user_id,
  COALESCE(o.since_micros, :now_micros) AS since_micros
FROM included AS i
LEFT JOIN excluded AS x ON x.segment = i.segment AND x.user_id = i.user_id
LEFT JOIN members_old AS o ON o.segment = i.segment AND o.user_id = i.user_id
WHERE x.user_id IS NULL"""

_LEFT_SQL = """
SELECT o.segment AS segment, o.user_id AS user_id
FROM members_old AS o
LEFT JOIN members AS m ON m.segment = o.segment AND m.user_id = o.user_id
WHERE m.user_id IS NULL"""


@dataclass(slots=True)
class RefreshResult:
    """What one refresh did. `members`: (segment, user_id, since_micros) at `now_micros`;
    `added` / `removed`: user ids by segment since the previous run."""

    run: int
    now_micros: int
    members: pa.Table
    added: dict[str, list[str]]
    removed: dict[str, list[str]]
    files_read: int
    hits_read: int
    pending: int
    rebuilt: bool
    published_users: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    skipped_files: dict[str, int] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        """Members per segment (exact)."""
        counts = self.members.group_by("segment").aggregate([("user_id", "count")])
        return dict(
            zip(counts["segment"].to_pylist(), counts["user_id_count"].to_pylist(), strict=True)
        )


class AudienceState:
    """The state directory: `CURRENT` names the run directory holding the tables."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _current(self) -> Path | None:
        pointer = self.directory / "CURRENT"
        if not pointer.exists():
            return None
        return self.directory / pointer.read_text().strip()

    def load(self) -> tuple[dict, dict[str, pa.Table]]:
        current = self._current()
        if current is None:
            return {}, {name: schema.empty_table() for name, schema in _TABLES.items()}
        meta = json.loads((current / "state.json").read_text())
        if meta.get("format") != STATE_FORMAT:
            raise InsightsError(
                f"{current}: audience state format {meta.get('format')!r}, expected "
                f"{STATE_FORMAT}; delete the directory to rebuild it from the event log"
            )
        tables = {
            name: pq.read_table(current / f"{name}.parquet", schema=schema)
            for name, schema in _TABLES.items()
        }
        return meta, tables

    def commit(self, meta: dict, tables: dict[str, pa.Table]) -> None:
        run_dir = self.directory / f"run-{meta['run']:08d}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        temp = self.directory / f".tmp-run-{meta['run']:08d}"
        if temp.exists():
            shutil.rmtree(temp)
        temp.mkdir(parents=True)
        for name, table in tables.items():
            pq.write_table(table.cast(_TABLES[name]), temp / f"{name}.parquet")
        (temp / "state.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(temp, run_dir)
        pointer_temp = self.directory / ".CURRENT.tmp"
        pointer_temp.write_text(run_dir.name)
        os.replace(pointer_temp, self.directory / "CURRENT")
        for old in self.directory.glob("run-*"):
            if old != run_dir:
                shutil.rmtree(old, ignore_errors=True)


def _by_segment(table: pa.Table) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for segment, user in zip(
        table["segment"].to_pylist(), table["user_id"].to_pylist(), strict=True
    ):
        out.setdefault(segment, []).append(user)
    return {segment: sorted(users) for segment, users in out.items()}  # any engine's order


def refresh(
    spec: AudienceSpec,
    events_dir: str | Path,
    state_dir: str | Path,
    *,
    engine: Engine | None = None,
    now_micros: int | None = None,
    membership: SegmentMembership | None = None,
    segments_url: str = "",
    join_horizon_s: float = 2 * 86400.0,
    republish: bool = False,
) -> RefreshResult:
    """One incremental run (module doc). `membership` receives the changes (all members
    with `republish`, e.g. into an empty Redis)."""
    now_micros = clock.now_micros() if now_micros is None else int(now_micros)
    now_hour = now_micros // HOUR_MICROS
    horizon_micros = int(join_horizon_s * 1_000_000)
    state = AudienceState(state_dir)
    meta, old = state.load()
    digest = spec.digest()
    rebuilt = bool(meta) and meta.get("spec") != digest
    if rebuilt:
        log.info("audience spec changed: rebuilding from the event log", extra={"spec": digest})
        members_before = old["members"]
        meta, old = {}, {name: schema.empty_table() for name, schema in _TABLES.items()}
        old["members"] = members_before
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    max_window_hours = max(s.max_window_hours for s in spec.segments)
    since_hour = now_hour - max_window_hours - int(join_horizon_s // 3600) - 1
    consumed = {p for p in meta.get("consumed", []) if (hour_of_path(p) or 0) >= since_hour}
    files = LogFiles(events_dir, segments_url)
    kinds = ["auction", *HIT_KINDS]
    new = files.new_files(kinds, consumed, since_hour=since_hour)
    hits_parts = [HITS_SCHEMA.empty_table()]
    facts_parts = [FACTS_SCHEMA.empty_table()]
    for kind, paths in new.by_kind.items():
        for path in paths:
            table = files.read(path)
            if kind == "auction":
                facts_parts.append(facts_of(table))
            else:
                hits_parts.append(hits_of(kind, table))
    hits_new = pa.concat_tables(hits_parts)
    facts_new = pa.concat_tables(facts_parts)
    seconds["read"] = time.perf_counter() - started

    own_engine = engine is None
    engine = engine or DuckDBEngine()
    started = time.perf_counter()
    try:
        parameters = {
            "now_micros": now_micros,
            "now_hour": now_hour,
            "facts_since_micros": now_micros - horizon_micros - max_window_hours * HOUR_MICROS,
            "give_up_before_micros": now_micros - horizon_micros,
        }

        def run(sql: str) -> pa.Table:
            return engine.query(render(sql, engine.dialect, parameters))

        engine.register("conditions", conditions_table(spec))
        engine.register("facts_old", old["facts"])
        engine.register("facts_new", facts_new)
        facts = run(_FACTS_SQL).cast(FACTS_SCHEMA)
        engine.register("facts", facts)
        engine.register("pending_old", old["pending"])
        engine.register("hits_new", hits_new)
        resolved = run(_RESOLVE_SQL)
        is_ready = pc.equal(resolved["is_ready"], 1)
        ready = resolved.filter(is_ready).drop_columns(["is_ready"])
        pending = resolved.filter(pc.invert(is_ready)).select(HITS_SCHEMA.names).cast(HITS_SCHEMA)
        engine.register("ready", ready)
        counts_new = run(_counts_new_sql(spec)).cast(COUNTS_SCHEMA)
        engine.register("counts_old", old["counts"])
        engine.register("counts_new", counts_new)
        counts = run(_MERGE_COUNTS_SQL).cast(COUNTS_SCHEMA)
        engine.register("counts", counts)
        engine.register("members_old", old["members"])
        members = run(_MEMBERS_SQL).cast(MEMBERS_SCHEMA)
        members = members.sort_by([("segment", "ascending"), ("user_id", "ascending")])
        engine.register("members", members)
        left = run(_LEFT_SQL)
    finally:
        if own_engine:
            engine.close()
    seconds["query"] = time.perf_counter() - started

    joined = pc.binary_join_element_wise(members["segment"], members["user_id"], "\x1f")
    was = pc.binary_join_element_wise(old["members"]["segment"], old["members"]["user_id"], "\x1f")
    entered = members.filter(pc.invert(pc.is_in(joined, value_set=was)))
    added = _by_segment(members if republish else entered)
    removed = _by_segment(left)
    published = 0
    if membership is not None:
        started = time.perf_counter()
        published = membership.update(added=added, removed=removed)
        seconds["publish"] = time.perf_counter() - started
    run_number = int(meta.get("run", 0)) + 1
    state.commit(
        {
            "format": STATE_FORMAT,
            "run": run_number,
            "spec": digest,
            "now_micros": now_micros,
            "consumed": sorted(consumed | set(new.all())),
        },
        {"counts": counts, "facts": facts, "pending": pending, "members": members},
    )
    return RefreshResult(
        run=run_number,
        now_micros=now_micros,
        members=members,
        added=_by_segment(entered),
        removed=removed,
        files_read=len(new.all()),
        hits_read=hits_new.num_rows,
        pending=pending.num_rows,
        rebuilt=rebuilt,
        published_users=published,
        seconds=seconds,
        skipped_files={"too_old": new.too_old, "still_rolling": new.still_rolling},
    )
