"""The incremental audience refresh against a brute-force oracle over the same events (the
events written through the real EventLog): membership after each of several runs equals
the oracle's at that time, equals a one-shot run over the whole log, windows expire
members, late-rolled segments and behaviours whose auction comes later are counted, a
changed spec rebuilds, and membership changes reach the set store `segments_of` reads."""

from __future__ import annotations

import shutil

import pytest

from openbid.events import AuctionEvent, ClickEvent, ConversionEvent, EventLog, ImpressionEvent
from openbid.insights.audiences.refresh import HOUR_MICROS, AudienceState, refresh
from openbid.insights.audiences.spec import FILTER_COLUMN, parse_spec
from openbid.insights.audiences.synthetic import T0_MICROS, write_synthetic_log
from openbid.insights.errors import InsightsError
from openbid.stores import MemorySetStore, SegmentMembership

SPEC = parse_spec(
    {
        "segments": [
            {
                "id": "sport-fans",
                "include": [
                    {
                        "behaviour": "visited",
                        "categories": ["IAB17"],
                        "min_count": 3,
                        "within_days": 1,
                    }
                ],
            },
            {
                "id": "travel-buyers",
                "include": [{"behaviour": "converted", "advertisers": ["trips.example"]}],
            },
            {
                "id": "news-clickers-not-auto",
                "match": "all",
                "include": [
                    {"behaviour": "clicked", "within_days": 2},
                    {"behaviour": "visited", "sites": ["news-0.example", "news-1.example"]},
                ],
                "exclude": [{"behaviour": "visited", "categories": ["IAB2"], "within_days": 0.5}],
            },
            {
                "id": "food-or-auto-sites",
                "match": "any",
                "include": [
                    {"behaviour": "visited", "domains": ["food-2.example"], "min_count": 2},
                    {"behaviour": "visited", "publishers": ["pub-auto"], "min_count": 4},
                ],
            },
        ]
    }
)


def oracle(events, spec, now_micros):
    """Membership at `now_micros` from the events, by brute force."""
    facts = {}
    for e in events:
        if isinstance(e, AuctionEvent) and e.outcome == "won":
            f = e.features
            cats = f",{f.get('categories', '')},{f.get('content_categories', '')},"
            facts[e.auction_id] = {
                "site_id": f.get("site_id", ""),
                "domain": f.get("domain", ""),
                "app_bundle": f.get("app_bundle", ""),
                "publisher_id": e.publisher_id,
                "categories": cats,
            }
    hits, seen = [], set()
    for e in events:
        if isinstance(e, ImpressionEvent | ClickEvent | ConversionEvent) and e.user_id:
            behaviour = {ImpressionEvent: "visited", ClickEvent: "clicked"}.get(
                type(e), "converted"
            )
            key = (
                (behaviour, e.conversion_id)
                if behaviour == "converted"
                else (behaviour, e.auction_id, e.bid_id)
            )
            if key in seen:
                continue
            seen.add(key)
            hit = {
                "user_id": e.user_id,
                "hour": e.ts_micros // HOUR_MICROS,
                "behaviour": behaviour,
                "campaign_id": e.campaign_id,
                "creative_id": getattr(e, "creative_id", ""),
                "advertiser": e.advertiser,
                **facts.get(e.auction_id, {"categories": ","}),
            }
            hits.append(hit)
    now_hour = now_micros // HOUR_MICROS

    def met(condition, user_hits):
        n = 0
        for h in user_hits:
            if h["behaviour"] != condition.behaviour:
                continue
            if not now_hour - condition.window_hours < h["hour"] <= now_hour:
                continue
            ok = True
            for name, values in condition.filters().items():
                value = h.get(FILTER_COLUMN[name], "")
                if name == "categories":
                    ok &= any(f",{v}," in value or f",{v}-" in value for v in values)
                else:
                    ok &= value in values
            n += ok
        return n >= condition.min_count

    by_user = {}
    for h in hits:
        by_user.setdefault(h["user_id"], []).append(h)
    members = set()
    for segment in spec.segments:
        for user, user_hits in by_user.items():
            results = [met(c, user_hits) for c in segment.include]
            included = all(results) if segment.match == "all" else any(results)
            if included and not any(met(c, user_hits) for c in segment.exclude):
                members.add((segment.id, user))
    return members


def members_of(result):
    return set(
        zip(
            result.members["segment"].to_pylist(),
            result.members["user_id"].to_pylist(),
            strict=True,
        )
    )


@pytest.fixture(scope="module")
def phased_log(tmp_path_factory):
    """Three 12-hour phases of the same 400 users, written one after the other."""
    directory = tmp_path_factory.mktemp("audiences")
    phases = []
    for k in range(3):
        phases.append(
            write_synthetic_log(
                directory,
                users=400,
                hours=12,
                visits_per_user=4,
                seed=7,
                start_micros=T0_MICROS + k * 12 * HOUR_MICROS,
                event_tag=f"p{k}",
            )
        )
    return directory, phases


def test_incremental_runs_equal_the_oracle_and_a_one_shot_run(tmp_path):
    """The log grows by a phase between runs; each run reads only the new files."""
    log_dir, state = tmp_path / "log", tmp_path / "state"
    membership = SegmentMembership(MemorySetStore())
    events = []
    for k in range(3):
        phase = write_synthetic_log(
            log_dir,
            users=400,
            hours=12,
            visits_per_user=4,
            seed=7,
            start_micros=T0_MICROS + k * 12 * HOUR_MICROS,
            event_tag=f"p{k}",
        )
        events.extend(phase.events)
        now = phase.end_micros + HOUR_MICROS
        result = refresh(SPEC, log_dir, state, now_micros=now, membership=membership)
        assert result.run == k + 1
        assert 0 < result.hits_read < len(events)  # only this phase's
        expected = oracle(events, SPEC, now)
        assert members_of(result) == expected, f"run {k + 1}"
    sizes = result.sizes()
    assert all(sizes.get(s.id, 0) > 0 for s in SPEC.segments), sizes
    one_shot = refresh(SPEC, log_dir, tmp_path / "fresh", now_micros=now)
    assert members_of(one_shot) == members_of(result)
    # the store holds exactly the members, no stale entry after the removals on the way
    users = {e.user_id for e in events if getattr(e, "user_id", "")}
    members = members_of(result)
    for user in users:
        assert membership.segments_of(user) == {s for s, u in members if u == user}


def test_time_alone_ends_memberships_and_reads_nothing_again(tmp_path, phased_log):
    directory, phases = phased_log
    state = tmp_path / "state"
    end = phases[-1].end_micros
    first = refresh(SPEC, directory, state, now_micros=end)
    assert first.files_read > 0
    later = refresh(SPEC, directory, state, now_micros=end + 30 * HOUR_MICROS)
    assert later.files_read == 0 and later.hits_read == 0
    assert later.removed["sport-fans"]  # a 1-day window, 30 hours on
    assert "sport-fans" not in later.sizes()
    assert later.sizes()["travel-buyers"] == first.sizes()["travel-buyers"]  # 30 days
    every = set().union(*map(set, later.removed.values()))
    assert every, "some members left"
    events = [e for p in phases for e in p.events]
    assert members_of(later) == oracle(events, SPEC, end + 30 * HOUR_MICROS)


def write(directory, events):
    with EventLog(directory, roll_interval_s=3600) as log:
        for e in events:
            log.emit(e)


def test_a_behaviour_whose_auction_rolls_later_waits_then_counts(tmp_path):
    spec = parse_spec(
        {"segments": [{"id": "s", "include": [{"behaviour": "visited", "sites": ["x.example"]}]}]}
    )
    t = T0_MICROS
    imp = ImpressionEvent(t + 1, "a1", "b1", user_id="u1")
    auction = AuctionEvent(t, "a1", "r1", features={"site_id": "x.example"}, outcome="won")
    write(tmp_path / "log", [imp])  # worker B's log rolled first
    first = refresh(spec, tmp_path / "log", tmp_path / "state", now_micros=t + HOUR_MICROS)
    assert first.pending == 1 and first.members.num_rows == 0
    write(tmp_path / "log", [auction])  # worker A's, later, into the same (older) hour
    second = refresh(spec, tmp_path / "log", tmp_path / "state", now_micros=t + HOUR_MICROS)
    assert second.files_read == 1 and second.pending == 0
    assert members_of(second) == {("s", "u1")}


def test_a_behaviour_whose_auction_never_comes_counts_without_context(tmp_path):
    spec = parse_spec(
        {
            "segments": [
                {"id": "any-visit", "include": [{"behaviour": "visited"}]},
                {"id": "x", "include": [{"behaviour": "visited", "sites": ["x.example"]}]},
            ]
        }
    )
    t = T0_MICROS
    write(tmp_path / "log", [ImpressionEvent(t, "a1", "b1", user_id="u1")])
    state = tmp_path / "state"
    assert refresh(spec, tmp_path / "log", state, now_micros=t, join_horizon_s=3600).pending == 1
    late = refresh(
        spec, tmp_path / "log", state, now_micros=t + 2 * HOUR_MICROS, join_horizon_s=3600
    )
    assert late.pending == 0
    assert members_of(late) == {("any-visit", "u1")}


def test_a_tracker_firing_twice_counts_once(tmp_path):
    spec = parse_spec(
        {"segments": [{"id": "twice", "include": [{"behaviour": "visited", "min_count": 2}]}]}
    )
    t = T0_MICROS
    write(
        tmp_path / "log",
        [
            ImpressionEvent(t, "a1", "b1", user_id="u1"),
            ImpressionEvent(t + 5, "a1", "b1", user_id="u1"),
        ],
    )
    result = refresh(spec, tmp_path / "log", tmp_path / "state", now_micros=t + 10)
    assert result.members.num_rows == 0


def test_a_changed_spec_rebuilds_and_removes_dropped_segments(tmp_path, phased_log):
    directory, phases = phased_log
    end = phases[-1].end_micros
    store = MemorySetStore()
    membership = SegmentMembership(store)
    refresh(SPEC, directory, tmp_path / "state", now_micros=end, membership=membership)
    smaller = parse_spec(
        {"segments": [{"id": "travel-buyers", "include": [{"behaviour": "converted"}]}]}
    )
    result = refresh(smaller, directory, tmp_path / "state", now_micros=end, membership=membership)
    assert result.rebuilt and result.files_read > 0
    assert set(result.sizes()) == {"travel-buyers"}
    assert result.removed.get("sport-fans")
    events = [e for p in phases for e in p.events]
    assert members_of(result) == oracle(events, smaller, end)
    for user in result.removed["sport-fans"][:20]:
        assert "sport-fans" not in membership.segments_of(user)


def test_a_failed_publish_leaves_the_state_for_the_next_run(tmp_path, phased_log):
    directory, phases = phased_log
    end = phases[-1].end_micros

    class Failing(MemorySetStore):
        def apply(self, adds, removes=None, ttl_s=None):
            from openbid.stores import StoreUnavailable

            raise StoreUnavailable("redis down")

    from openbid.stores import StoreUnavailable

    with pytest.raises(StoreUnavailable):
        refresh(
            SPEC,
            directory,
            tmp_path / "state",
            now_micros=end,
            membership=SegmentMembership(Failing()),
        )
    assert AudienceState(tmp_path / "state").load()[0] == {}  # nothing committed
    store = MemorySetStore()
    result = refresh(
        SPEC, directory, tmp_path / "state", now_micros=end, membership=SegmentMembership(store)
    )
    assert result.run == 1 and sum(map(len, result.added.values())) == result.members.num_rows


def test_a_state_of_another_format_is_refused_by_name(tmp_path):
    state = tmp_path / "state"
    (state / "run-00000001").mkdir(parents=True)
    (state / "run-00000001" / "state.json").write_text('{"format": 99}')
    (state / "CURRENT").write_text("run-00000001")
    with pytest.raises(InsightsError, match="audience state format 99"):
        AudienceState(state).load()


def test_spark_gives_the_same_members_as_duckdb(tmp_path, spark):
    """The refresh's SQL, transpiled by SQLGlot, on a real local Spark: from the state of a
    first DuckDB run, an incremental run with new files and a time step that ends
    memberships gives DuckDB's members and removals (one Spark run: each costs seconds)."""
    log_dir = tmp_path / "log"
    first = write_synthetic_log(log_dir, users=150, hours=12, visits_per_user=5, seed=3)
    refresh(SPEC, log_dir, tmp_path / "duck", now_micros=first.end_micros)
    shutil.copytree(tmp_path / "duck", tmp_path / "spark")
    write_synthetic_log(
        log_dir, users=150, hours=12, visits_per_user=5, seed=3,
        start_micros=first.end_micros, event_tag="p1",
    )  # fmt: skip
    later = first.end_micros + 30 * HOUR_MICROS
    duck = refresh(SPEC, log_dir, tmp_path / "duck", now_micros=later)
    on_spark = refresh(SPEC, log_dir, tmp_path / "spark", engine=spark, now_micros=later)
    assert on_spark.files_read == duck.files_read > 0
    assert members_of(on_spark) == members_of(duck)
    def removed(result):
        return {segment: set(users) for segment, users in result.removed.items()}

    assert removed(on_spark) == removed(duck) and duck.removed  # memberships did end
