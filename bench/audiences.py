"""Audiences and personalisation: the incremental refresh against rebuilding from the whole
log (the baseline a non-incremental job pays every run), the `segments_of` lookup the
exchange would call (memory and real Redis), publishing membership to Redis, the lookalike's
holdout lift and the bandit's regret against uniform.

    python bench/audiences.py [--quick] [--redis redis://127.0.0.1:6379/15]

A seeded synthetic log (`openbid.insights.audiences.synthetic`): users with one interest
each over `hours`; then one more hour arrives and both the incremental run and a rebuild
compute membership at its end. Timings are wall seconds on a shared machine: noisy.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import tempfile
import time
from pathlib import Path

import numpy as np

from openbid.insights.audiences.lookalike import train_lookalike, user_features
from openbid.insights.audiences.refresh import HOUR_MICROS, refresh
from openbid.insights.audiences.spec import parse_spec
from openbid.insights.audiences.synthetic import write_synthetic_log
from openbid.insights.personalize.simulate import SegmentMarket, run_bandit
from openbid.pipeline import DuckDBEngine, EventSource
from openbid.stores import MemorySetStore, RedisSetStore, SegmentMembership

SPEC = parse_spec(
    {
        "segments": [
            {"id": f"{topic}-fans", "include": [{"behaviour": "visited", "categories": [cat], "min_count": 3, "within_days": 7}]}
            for topic, cat in (("sport", "IAB17"), ("news", "IAB12"), ("auto", "IAB2"), ("travel", "IAB20"), ("food", "IAB8"))
        ]
        + [
            {"id": "travel-buyers", "include": [{"behaviour": "converted", "advertisers": ["trips.example"]}]},
            {"id": "clickers", "include": [{"behaviour": "clicked", "within_days": 3}]},
        ]
    }
)  # fmt: skip


def _lookups_us(membership: SegmentMembership, users: list[str], n: int) -> tuple[float, float]:
    times = []
    for i in range(n):
        started = time.perf_counter_ns()
        membership.segments_of(users[i % len(users)])
        times.append((time.perf_counter_ns() - started) / 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    users, hours = (3000, 48) if args.quick else (20000, 168)
    root = Path(tempfile.mkdtemp(prefix="bench-audiences-"))
    log = write_synthetic_log(
        root / "events", users=users, hours=hours, visits_per_user=hours / 4, seed=1
    )
    refresh(SPEC, root / "events", root / "state", now_micros=log.end_micros)
    more = write_synthetic_log(
        root / "events", users=users, hours=1, visits_per_user=0.25, seed=1,
        start_micros=log.end_micros, event_tag="next",
    )  # fmt: skip
    now = more.end_micros
    started = time.perf_counter()
    incremental = refresh(SPEC, root / "events", root / "state", now_micros=now)
    incremental_s = time.perf_counter() - started
    started = time.perf_counter()
    rebuilt = refresh(SPEC, root / "events", root / "rebuild", now_micros=now)
    rebuild_s = time.perf_counter() - started
    same = ["segment", "user_id"]  # `since_micros` differs: a rebuild starts memberships now
    assert rebuilt.members.select(same).equals(incremental.members.select(same)), "they differ"

    memory = SegmentMembership(MemorySetStore())
    memory.update(added=incremental.added)
    members = sorted(set(incremental.members["user_id"].to_pylist()))
    memory_p50, memory_p99 = _lookups_us(memory, members, 20_000)
    redis_store = RedisSetStore(args.redis, prefix=f"bench:{secrets.token_hex(4)}:", timeout_s=2.0)
    redis_membership = SegmentMembership(redis_store)
    grouped: dict[str, list[str]] = {}
    for segment, user in zip(
        incremental.members["segment"].to_pylist(),
        incremental.members["user_id"].to_pylist(),
        strict=True,
    ):
        grouped.setdefault(segment, []).append(user)
    started = time.perf_counter()
    touched = redis_membership.update(added=grouped)
    publish_s = time.perf_counter() - started
    redis_p50, redis_p99 = _lookups_us(redis_membership, members, 5_000)
    redis_store.delete([SegmentMembership.key(u) for u in members])
    redis_store.close()

    engine = DuckDBEngine()
    features = user_features(
        EventSource(root / "events"), engine, since_micros=0, until_micros=now + HOUR_MICROS
    )
    engine.close()
    lookalike = train_lookalike(features, log.converters, seed=0)
    market = SegmentMarket.random(seed=0)
    rounds = 20_000 if args.quick else 100_000
    thompson = run_bandit(market, "thompson", rounds=rounds, seed=1)
    uniform = run_bandit(market, "uniform", rounds=rounds, seed=1)

    # (work, baseline, ours, higher is better): the ratio is how many times better ours is
    rows = [
        ("refresh after 1 new hour, rebuild / incremental (s)", rebuild_s, incremental_s, False),
        ("segments_of p50, Redis / memory (us)", redis_p50, memory_p50, False),
        ("lookalike lift at top 10%, random / model", lookalike.metrics["random_lift_at_10pct"], lookalike.metrics["lift_at_10pct"], True),
        (f"regret over {rounds:,} choices, uniform / Thompson", uniform.regret, thompson.regret, False),
    ]  # fmt: skip
    print(f"{'work':<52} {'baseline':>10} {'ours':>10} {'ratio':>8}")
    for work, baseline, ours, higher in rows:
        ratio = (
            (ours / baseline if higher else baseline / ours) if ours and baseline else float("nan")
        )
        print(f"{work:<52} {baseline:>10.3f} {ours:>10.3f} {ratio:>8.2f}")
    print(
        f"{users:,} users, {incremental.members.num_rows:,} memberships; incremental read "
        f"{incremental.files_read} files ({incremental.hits_read:,} behaviours), the rebuild "
        f"{rebuilt.files_read} ({rebuilt.hits_read:,}); Redis publish {touched:,} users in "
        f"{publish_s:.2f} s; Redis lookup p99 {redis_p99:.0f} us"
    )
    print(
        json.dumps(
            {
                "bench": "audiences",
                "quick": args.quick,
                "users": users,
                "memberships": incremental.members.num_rows,
                "incremental_s": round(incremental_s, 3),
                "rebuild_s": round(rebuild_s, 3),
                "ratio": round(rebuild_s / incremental_s, 2),
                "incremental_behaviours": incremental.hits_read,
                "rebuild_behaviours": rebuilt.hits_read,
                "lookup_memory_us_p50": round(memory_p50, 2),
                "lookup_memory_us_p99": round(memory_p99, 2),
                "lookup_redis_us_p50": round(redis_p50, 1),
                "lookup_redis_us_p99": round(redis_p99, 1),
                "publish_users_per_s": round(touched / publish_s),
                "lookalike_lift_at_10pct": round(lookalike.metrics["lift_at_10pct"], 3),
                "random_lift_at_10pct": round(lookalike.metrics["random_lift_at_10pct"], 3),
                "lookalike_holdout_auc": round(lookalike.metrics["holdout_auc"], 4),
                "thompson_regret": round(thompson.regret, 1),
                "uniform_regret": round(uniform.regret, 1),
                "regret_ratio": round(thompson.regret / uniform.regret, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
