"""The clean room: queries only through the rules (functions, dimensions, join columns never
output), suppression with the stricter party's minimum (and secondary suppression), the
differencing attack refused (or noised under DP), the epsilon budget refused once spent, and
every query logged with its analyst, in a ledger that outlives the process."""

from __future__ import annotations

import contextlib

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.insights.cleanroom import (
    AnalysisRule,
    Collaboration,
    Party,
    QueryError,
    QueryRefused,
    RuleError,
    parse_query,
)

# users 0..259 convert (user 0 buys hats, the rest shoes); publisher exposures: news to users
# 0..199, sport to 200..299, "tiny" to 256..258
CONVERTERS = range(260)


def advertiser_table() -> pa.Table:
    users = list(CONVERTERS)
    return pa.table(
        {
            "user_key": [f"h{u}" for u in users],
            "product": ["hats" if u == 0 else "shoes" for u in users],
            "value": [float(10 + u % 7) for u in users],
            "conversion_id": [f"cv{u}" for u in users],
        }
    )


def publisher_table() -> pa.Table:
    rows = [(u, "news") for u in range(200)] + [(u, "sport") for u in range(200, 300)]
    rows += [(u, "tiny") for u in (256, 257, 258)]
    return pa.table(
        {
            "user_key": [f"h{u}" for u, _ in rows],
            "site": [s for _, s in rows],
            "device": ["mobile" if u % 2 else "desktop" for u, _ in rows],
        }
    )


def collaboration(
    *,
    budget: float = 1.0,
    ledger: str = ":memory:",
    advertiser_min: int = 50,
    publisher_min: int = 20,
    require_dp: bool = False,
    bounds: dict | None = None,
) -> Collaboration:
    advertiser = Party(
        "advertiser",
        advertiser_table(),
        AnalysisRule(
            join_column="user_key",
            dimensions=("product",),
            aggregates={"value": ("sum", "avg"), "conversion_id": ("count", "count_distinct")},
            min_distinct_users=advertiser_min,
            bounds={"value": (0.0, 20.0)} if bounds is None else bounds,
        ),
    )
    publisher = Party(
        "publisher",
        publisher_table(),
        AnalysisRule(
            join_column="user_key",
            dimensions=("site", "device"),
            min_distinct_users=publisher_min,
            require_dp=require_dp,
        ),
    )
    return Collaboration(
        "acme-x-news", [advertiser, publisher], epsilon_budget=budget, ledger_path=ledger
    )


USERS = {"function": "count_distinct", "column": "users"}


def rows(result) -> list[dict]:
    return result.table.to_pylist()


def test_an_allowed_query_returns_the_groups_and_never_the_join_column():
    with collaboration() as room:
        result = room.run(
            {
                "aggregates": [USERS, {"function": "sum", "column": "advertiser.value"}],
                "dimensions": ["publisher.device"],
                "filters": [{"column": "publisher.site", "in": ["news"]}],
            },
            analyst="ana@acme",
        )
    assert result.table.column_names == ["publisher_device", "users", "sum_advertiser_value"]
    assert rows(result) == [
        {
            "publisher_device": "desktop",
            "users": 100,
            "sum_advertiser_value": pytest.approx(sum(10 + u % 7 for u in range(0, 200, 2))),
        },
        {
            "publisher_device": "mobile",
            "users": 100,
            "sum_advertiser_value": pytest.approx(sum(10 + u % 7 for u in range(1, 200, 2))),
        },
    ]
    assert "user_key" not in " ".join(result.table.column_names)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"aggregates": [USERS], "dimensions": ["advertiser.user_key"]}, "$.dimensions[0]"),
        (
            {"aggregates": [{"function": "count", "column": "publisher.user_key"}]},
            "$.aggregates[0].column",
        ),
        ({"aggregates": [{"function": "count", "column": "advertiser.value"}]}, "$.aggregates[0]"),
        ({"aggregates": [USERS], "dimensions": ["advertiser.value"]}, "$.dimensions[0]"),
        (
            {"aggregates": [USERS], "filters": [{"column": "advertiser.value", "in": [10]}]},
            "$.filters[0].column",
        ),
        (
            {"aggregates": [{"function": "median", "column": "advertiser.value"}]},
            "$.aggregates[0].function",
        ),
        ({"aggregates": [USERS], "dimensions": ["nobody.site"]}, "$.dimensions[0]"),
        ({"aggregates": [USERS], "select": "*"}, "select"),
        ({"aggregates": [USERS], "dp": {"epsilon": -1}}, "$.dp.epsilon"),
    ],
)
def test_a_query_outside_the_rules_is_refused_naming_the_field(query, field):
    with collaboration() as room:
        with pytest.raises(QueryRefused) as refused:
            room.run(query, analyst="ana@acme")
        assert field in refused.value.reason
        log = room.query_log().to_pylist()
    assert log[-1]["status"] == "refused" and log[-1]["analyst"] == "ana@acme"


def test_rows_below_the_stricter_minimum_are_suppressed_with_secondary_suppression():
    with collaboration(advertiser_min=50, publisher_min=20) as room:
        result = room.run({"aggregates": [USERS], "dimensions": ["publisher.site"]}, "ana")
        # news 200, sport 60, tiny 3: tiny is under 50 (the advertiser's, stricter than 20);
        # alone it would be sport + tiny - sport... so sport (the smallest) is hidden too
        assert rows(result) == [{"publisher_site": "news", "users": 200}]
        assert result.rows_suppressed == 2 and result.min_users == 50
    with collaboration(advertiser_min=2, publisher_min=2) as room:
        result = room.run({"aggregates": [USERS], "dimensions": ["publisher.site"]}, "ana")
        assert [r["users"] for r in rows(result)] == [200, 60, 3]


def test_the_differencing_attack_is_refused_in_either_order():
    wide = {"aggregates": [USERS], "filters": [{"column": "publisher.site", "in": ["news"]}]}
    narrow = {
        "aggregates": [USERS],
        "filters": [
            {"column": "publisher.site", "in": ["news"]},
            {"column": "advertiser.product", "in": ["shoes"]},
        ],
    }
    for first, second in ((wide, narrow), (narrow, wide)):
        with collaboration() as room:
            released = room.run(first, "ana")
            assert released.table.num_rows == 1
            # 200 news users against 199 who bought shoes: the one who bought hats
            with pytest.raises(QueryRefused, match=f"query {released.query_id} by 1 users"):
                room.run(second, "mallory")
            statuses = [(r["analyst"], r["status"]) for r in room.query_log().to_pylist()]
            assert statuses == [("ana", "released"), ("mallory", "refused")]


def test_a_grouped_query_hides_a_small_group_so_the_total_cannot_reveal_it():
    with collaboration() as room:
        grouped = room.run(
            {
                "aggregates": [USERS],
                "dimensions": ["advertiser.product"],
                "filters": [{"column": "publisher.site", "in": ["news"]}],
            },
            "mallory",
        )
        # hats: 1 user (hidden); shoes 199 would give it away against the total: hidden too
        assert grouped.table.num_rows == 0 and grouped.rows_suppressed == 2
        total = room.run(
            {"aggregates": [USERS], "filters": [{"column": "publisher.site", "in": ["news"]}]},
            "mallory",
        )
        assert rows(total) == [{"users": 200}]


def test_under_differential_privacy_the_pair_is_noised_and_spends_the_budget():
    with collaboration(budget=4.0) as room:
        wide = room.run(
            {
                "aggregates": [USERS],
                "filters": [{"column": "publisher.site", "in": ["news"]}],
                "dp": {"epsilon": 1.0},
            },
            "ana",
        )
        narrow = room.run(
            {
                "aggregates": [USERS, {"function": "avg", "column": "advertiser.value"}],
                "filters": [
                    {"column": "publisher.site", "in": ["news"]},
                    {"column": "advertiser.product", "in": ["shoes"]},
                ],
                "dp": {"epsilon": 3.0},  # three measurements: 1.0 each
            },
            "mallory",
        )
        assert wide.epsilon == 1.0 and 0 < wide.delta <= 1e-6
        # the threshold the delta target needs (noise scale 5: about 75), above the rules' 50
        assert wide.min_users == narrow.min_users > 50
        (w,) = rows(wide)
        (n,) = rows(narrow)
        # noise of scale max_rows_per_user / epsilon share: tens of users at most
        assert abs(w["users"] - 200) < 80 and abs(n["users"] - 199) < 80
        assert 0 <= n["avg_advertiser_value"] <= 20  # clamped to the bounds, then noised
        assert room.epsilon_spent() == pytest.approx(4.0)


def test_the_epsilon_budget_is_refused_once_spent():
    query = {"aggregates": [USERS], "dimensions": ["publisher.device"], "dp": {"epsilon": 0.6}}
    with collaboration(budget=1.0) as room:
        room.run(query, "ana")
        with pytest.raises(QueryRefused, match="budget exhausted: 0.6 of 1 spent"):
            room.run(query, "ana")
        room.run({**query, "dp": {"epsilon": 0.4}}, "bob")
        with pytest.raises(QueryRefused, match="budget exhausted"):
            room.run({**query, "dp": {"epsilon": 0.001}}, "bob")
        assert room.epsilon_spent() == pytest.approx(1.0)
        log = room.query_log().to_pylist()
    assert [(r["analyst"], r["status"], r["epsilon"]) for r in log] == [
        ("ana", "released", 0.6),
        ("ana", "refused", 0.0),
        ("bob", "released", 0.4),
        ("bob", "refused", 0.0),
    ]


def test_a_party_that_requires_dp_refuses_exact_queries_and_sums_need_bounds():
    with collaboration(require_dp=True, bounds={}) as room:
        with pytest.raises(QueryRefused, match="requires differential privacy"):
            room.run({"aggregates": [USERS]}, "ana")
        with pytest.raises(QueryRefused, match="no bounds for 'value'"):
            room.run(
                {
                    "aggregates": [{"function": "sum", "column": "advertiser.value"}],
                    "dp": {"epsilon": 0.1},
                },
                "ana",
            )
        # counts need no bounds: this one is released
        count = {"function": "count", "column": "advertiser.conversion_id"}
        assert room.run({"aggregates": [count], "dp": {"epsilon": 0.1}}, "ana").epsilon == 0.1


def test_the_ledger_outlives_the_process_budget_and_overlaps(tmp_path):
    ledger = str(tmp_path / "room.duckdb")
    wide = {"aggregates": [USERS], "filters": [{"column": "publisher.site", "in": ["news"]}]}
    with collaboration(ledger=ledger, budget=0.5) as room:
        room.run(wide, "ana")
        room.run({"aggregates": [USERS], "dp": {"epsilon": 0.5}}, "ana")
    with collaboration(ledger=ledger, budget=0.5) as room:
        assert room.epsilon_spent() == pytest.approx(0.5)
        with pytest.raises(QueryRefused, match="budget exhausted"):
            room.run({"aggregates": [USERS], "dp": {"epsilon": 0.1}}, "ana")
        narrow = {
            "aggregates": [USERS],
            "filters": [*wide["filters"], {"column": "advertiser.product", "in": ["shoes"]}],
        }
        with pytest.raises(QueryRefused, match="by 1 users"):
            room.run(narrow, "mallory")
        assert [r["query_id"] for r in room.query_log().to_pylist()] == [1, 2, 3, 4]


def test_an_unnamed_analyst_and_bad_rules_are_refused():
    with collaboration() as room, pytest.raises(QueryError, match="analyst"):
        room.run({"aggregates": [USERS]}, analyst=" ")
    with pytest.raises(RuleError, match="join_column 'uid'"):
        Party("p", publisher_table(), AnalysisRule(join_column="uid"))
    with pytest.raises(RuleError, match="min_distinct_users"):
        Party("p", publisher_table(), AnalysisRule(join_column="user_key", min_distinct_users=1))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "aggregates": st.lists(
                    st.dictionaries(st.sampled_from(["function", "column", "x"]), json_values),
                    max_size=3,
                )
            },
            optional={"dimensions": json_values, "filters": json_values, "dp": json_values},
        ),
    )
)
def test_parse_query_raises_only_query_errors(document):
    with contextlib.suppress(QueryError):
        parse_query(document if isinstance(document, dict) else {"aggregates": document})
