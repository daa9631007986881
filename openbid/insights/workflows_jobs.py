"""The four insights jobs (`workflows.py` runs them): each reads the event log, runs its
analysis and writes its report files. Analyses are imported inside each job, so listing the
jobs stays cheap.

| job | reads | writes (`<out_dir>/<job>/`) |
| --- | --- | --- |
| `audiences` | segment files not read yet, the spec | `members.parquet`, `sizes.parquet`, `overlaps.parquet`, `sketches/<segment>.theta`; membership to the set store |
| `lookalike` | the seed segment's members, a window of impressions and auctions | `lookalikes.parquet`, `metrics.json` |
| `attribution` | a window of touches and conversions | `attribution.parquet`, `journeys.json` |
| `personalize` | a window of impressions with propensities, clicks | `evaluation-<campaign>.json`, `candidate-<campaign>.json`; `policy-<campaign>.json` when promoted |
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa

from openbid.insights.errors import InsightsError
from openbid.insights.workflows import InsightsSettings, JobResult, JobSkipped, Outputs

DAY_MICROS = 86_400_000_000


def _engine(settings: InsightsSettings):
    from openbid.pipeline.engines import open_engine

    return open_engine(settings.engine, spark_master=settings.spark_master)


def audience_state_dir(settings: InsightsSettings) -> Path:
    return Path(settings.out_dir) / "audiences" / "state"


def audiences_job(settings: InsightsSettings, now_micros: int, out: Outputs) -> JobResult:
    from openbid.insights.audiences.refresh import refresh
    from openbid.insights.audiences.sketches import (
        overlaps_table,
        serialize,
        sizes_table,
        sketches_by_segment,
    )
    from openbid.insights.audiences.spec import load_spec
    from openbid.stores import SegmentMembership, set_store_from_url

    a = settings.audiences
    spec = load_spec(a.spec)
    store = set_store_from_url(a.store, prefix=a.store_prefix, timeout_s=5.0) if a.store else None
    engine = _engine(settings)
    try:
        result = refresh(
            spec,
            settings.events_dir,
            audience_state_dir(settings),
            engine=engine,
            now_micros=now_micros,
            membership=SegmentMembership(store) if store is not None else None,
            segments_url=settings.segments_url,
            join_horizon_s=a.join_horizon_s,
        )
    finally:
        engine.close()
        if store is not None:
            store.close()
    members: dict[str, list[str]] = {s.id: [] for s in spec.segments}
    for segment, user in zip(
        result.members["segment"].to_pylist(), result.members["user_id"].to_pylist(), strict=True
    ):
        members[segment].append(user)
    sketches = sketches_by_segment(members, lg_k=a.sketch_lg_k)
    sizes = sizes_table(sketches, {s: len(u) for s, u in members.items()})
    sizes = sizes.append_column(
        "added", pa.array([len(result.added.get(s, [])) for s in sizes["segment"].to_pylist()], pa.int64())
    ).append_column(
        "removed",
        pa.array([len(result.removed.get(s, [])) for s in sizes["segment"].to_pylist()], pa.int64()),
    )  # fmt: skip
    out.parquet("sizes.parquet", "Segment sizes (exact, and Theta sketch estimates)", sizes)
    out.parquet("members.parquet", "Segment members", result.members)
    out.parquet("overlaps.parquet", "Segment overlaps (Theta sketches)", overlaps_table(sketches))
    for segment, sketch in sketches.items():
        out.binary(f"sketches/{segment}.theta", f"Theta sketch of {segment}", serialize(sketch))
    metrics = {
        "segments": float(len(spec.segments)),
        "members": float(result.members.num_rows),
        "added": float(sum(map(len, result.added.values()))),
        "removed": float(sum(map(len, result.removed.values()))),
        "files_read": float(result.files_read),
        "hits_read": float(result.hits_read),
        "pending": float(result.pending),
        "published_users": float(result.published_users),
        **{f"{k}_s": v for k, v in result.seconds.items()},
    }
    return JobResult(
        purpose="audiences",
        status="passed",
        rows=result.members.num_rows,
        metrics=metrics,
        reason="spec changed: rebuilt from the event log" if result.rebuilt else "",
        window_until_micros=now_micros,
    )


def lookalike_job(settings: InsightsSettings, now_micros: int, out: Outputs) -> JobResult:
    from openbid.insights.audiences.lookalike import train_lookalike, user_features
    from openbid.insights.audiences.refresh import AudienceState
    from openbid.pipeline.source import EventSource

    s = settings.lookalike
    if not s.seed_segment:
        raise JobSkipped("no lookalike.seed_segment configured")
    _, state = AudienceState(audience_state_dir(settings)).load()
    members = state["members"]
    seed = [
        u
        for seg, u in zip(
            members["segment"].to_pylist(), members["user_id"].to_pylist(), strict=True
        )
        if seg == s.seed_segment
    ]
    if not seed:
        raise JobSkipped(f"segment {s.seed_segment!r} has no members (run the audiences job first)")
    since = now_micros - int(s.window_days * DAY_MICROS)
    engine = _engine(settings)
    try:
        source = EventSource(settings.events_dir, segments_url=settings.segments_url)
        features = user_features(
            source, engine, since_micros=since, until_micros=now_micros, hash_bits=s.hash_bits
        )
        result = train_lookalike(
            features,
            seed,
            negatives_per_seed=s.negatives_per_seed,
            holdout_share=s.holdout_share,
            size=s.size,
        )
    except JobSkipped:
        raise
    except InsightsError as exc:  # too few users or seed members: nothing to learn yet
        raise JobSkipped(str(exc)) from None
    finally:
        engine.close()
    out.parquet("lookalikes.parquet", f"Lookalikes of {s.seed_segment}", result.lookalikes)
    out.json("metrics.json", "Lookalike holdout: lift over random", result.metrics)
    return JobResult(
        purpose="lookalike",
        status="passed",
        rows=result.lookalikes.num_rows,
        metrics=result.metrics,
        window_since_micros=since,
        window_until_micros=now_micros,
    )


def attribution_job(settings: InsightsSettings, now_micros: int, out: Outputs) -> JobResult:
    from openbid.insights.attribution import attribute
    from openbid.insights.attribution.journeys import build_journeys
    from openbid.pipeline.source import EventSource

    s = settings.attribution
    since = now_micros - int(s.window_days * DAY_MICROS)
    engine = _engine(settings)
    try:
        journeys = build_journeys(
            EventSource(settings.events_dir, segments_url=settings.segments_url),
            engine,
            since_micros=since,
            until_micros=now_micros,
            by=s.by,
            lookback_s=s.lookback_days * 86400.0,
        )
    except InsightsError as exc:
        if "no journeys" in str(exc):
            raise JobSkipped(str(exc)) from None
        raise
    finally:
        engine.close()
    report = attribute(journeys.paths, order=s.order, time_decay_credit=journeys.time_decay)
    out.parquet("attribution.parquet", f"Attribution by {s.by}", report.table)
    out.json("journeys.json", "Journeys read", journeys.stats)
    return JobResult(
        purpose="attribution",
        status="passed",
        rows=report.table.num_rows,
        metrics={**journeys.stats, **{f"total_{k}": float(v) for k, v in report.totals.items()}},
        window_since_micros=since,
        window_until_micros=now_micros,
    )


def personalize_job(settings: InsightsSettings, now_micros: int, out: Outputs) -> JobResult:
    from openbid.insights.personalize.bandit import BetaPosteriors, ChoicePolicy
    from openbid.insights.personalize.logged import read_choices
    from openbid.insights.personalize.ope import evaluate_candidate
    from openbid.pipeline.source import EventSource

    s = settings.personalize
    if not s.campaigns:
        raise JobSkipped("no personalize.campaigns configured")
    since = now_micros - int(s.window_days * DAY_MICROS)
    statuses, metrics, reasons, rows = [], {}, [], 0
    engine = _engine(settings)
    try:
        for campaign in s.campaigns:
            try:
                choices = read_choices(
                    EventSource(settings.events_dir, segments_url=settings.segments_url),
                    engine,
                    campaign,
                    since_micros=since,
                    until_micros=now_micros,
                    reward_window_s=s.reward_window_s,
                )
            except InsightsError as exc:
                reasons.append(f"{campaign}: {exc}")
                continue
            logged = choices.logged
            posteriors = BetaPosteriors(choices.segments, choices.creatives)
            index = np.array([posteriors.segments.index(x) for x in choices.segments])
            posteriors.update(index[logged.context], logged.action, logged.reward)
            candidate = posteriors.policy(
                campaign, epsilon=s.epsilon, prior_strength=s.prior_strength
            )
            policy_path = out.directory / f"policy-{campaign}.json"
            current = None
            if policy_path.exists():
                current = msgspec.json.decode(policy_path.read_bytes(), type=ChoicePolicy)
            evaluation = evaluate_candidate(
                logged,
                candidate.aligned(choices.segments, choices.creatives),
                current.aligned(choices.segments, choices.creatives) if current else None,
                tolerance=s.tolerance,
                min_choices=s.min_choices,
            )
            report = {
                "campaign": campaign,
                "candidate": candidate.name,
                "current": current.name if current else "(the logging policies)",
                "logged_policies": choices.policies,
                "promote": evaluation.promote,
                "reason": evaluation.reason,
                "metrics": evaluation.metrics(),
            }
            out.json(f"evaluation-{campaign}.json", f"Policy evaluation, {campaign}", report)
            out.json(f"candidate-{campaign}.json", f"Candidate policy, {campaign}", candidate)
            if evaluation.promote:
                out.json(f"policy-{campaign}.json", f"Serving policy, {campaign}", candidate)
            statuses.append("promoted" if evaluation.promote else "refused")
            reasons.append(f"{campaign}: {evaluation.reason}")
            rows += len(logged)
            metrics.update({f"{campaign}.{k}": v for k, v in evaluation.metrics().items()})
    finally:
        engine.close()
    if not statuses:
        raise JobSkipped("; ".join(reasons) or "nothing to evaluate")
    return JobResult(
        purpose="personalize",
        status="promoted" if "promoted" in statuses else "refused",
        rows=rows,
        metrics=metrics,
        reason="; ".join(reasons),
        window_since_micros=since,
        window_until_micros=now_micros,
    )
