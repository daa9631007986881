"""Attribution models on small journeys worked out by hand: the heuristics, the Markov removal
effect against chains solved in closed form (orders 1 to 3, with and without null paths,
conversions and value), and Shapley values (efficiency, symmetry, exact against sampled)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.insights.attribution import (
    Paths,
    attribute,
    markov,
    paths_from_table,
    shapley,
    simulate_paths,
)
from openbid.insights.attribution.heuristics import (
    first_touch,
    last_touch,
    linear,
    position_based,
    time_decay,
)
from openbid.insights.errors import InsightsError


def by_channel(paths: Paths, values: np.ndarray) -> dict[str, float]:
    return {c: round(float(v), 9) for c, v in zip(paths.channels, values, strict=True)}


# ---------------------------------------------------------------- paths


def test_paths_strip_spaces_merge_equal_paths_and_drop_empty_ones():
    p = Paths.from_strings(
        [" a>b ", "a > b", "", "c", "a >  > b"], conversions=[1, 2, 5, 1, 1], nulls=[0, 1, 3, 2, 0]
    )
    assert p.channels == ("a", "b", "c")
    assert [p.path(i) for i in range(p.n_paths)] == [("a", "b"), ("c",)]
    assert p.conversions.tolist() == [4.0, 1.0]
    assert p.nulls.tolist() == [1.0, 2.0]
    assert p.has_nulls and not p.has_value


def test_paths_refuse_negative_counts_naming_the_field():
    with pytest.raises(InsightsError, match="nulls"):
        Paths.from_strings(["a"], conversions=[1], nulls=[-1])


def test_paths_from_table_name_a_missing_column():
    import pyarrow as pa

    with pytest.raises(InsightsError, match="'conv'"):
        paths_from_table(pa.table({"path": ["a"]}), conv_col="conv")


# ---------------------------------------------------------------- heuristics


JOURNEYS = Paths.from_strings(
    ["a > b > c", "b > a", "c", "a > a > b"],
    conversions=[10, 4, 2, 6],
    value=[100, 40, 20, 60],
)


def test_last_and_first_touch_by_hand():
    assert by_channel(JOURNEYS, last_touch(JOURNEYS).conversions) == {"a": 4, "b": 6, "c": 12}
    assert by_channel(JOURNEYS, first_touch(JOURNEYS).conversions) == {"a": 16, "b": 4, "c": 2}
    assert by_channel(JOURNEYS, last_touch(JOURNEYS).value) == {"a": 40, "b": 60, "c": 120}


def test_linear_counts_each_repeated_touch():
    # a > b > c: 10/3 each; b > a: 2 each; c: 2; a > a > b: a 4, b 2
    got = by_channel(JOURNEYS, linear(JOURNEYS).conversions)
    assert got == pytest.approx({"a": 10 / 3 + 2 + 4, "b": 10 / 3 + 2 + 2, "c": 10 / 3 + 2})


def test_position_based_forty_twenty_forty():
    got = by_channel(JOURNEYS, position_based(JOURNEYS).conversions)
    # a>b>c: a 4, b 2, c 4; b>a: 2 + 2; c: 2; a>a>b: a 2.4 + 1.2, b 2.4
    assert got == pytest.approx({"a": 4 + 2 + 3.6, "b": 2 + 2 + 2.4, "c": 4 + 2})


def test_time_decay_halves_per_touch_back_and_by_age():
    p = Paths.from_strings(["a > b > c"], conversions=[7])
    # weights 1/4, 1/2, 1 of 7/4
    assert by_channel(p, time_decay(p).conversions) == pytest.approx({"a": 1, "b": 2, "c": 4})
    # ages in seconds: a 2 days, b 1 day, c 0 with a one-day half-life: same shares
    ages = np.array([2 * 86400.0, 86400.0, 0.0])
    got = time_decay(p, half_life=86400.0, touch_age=ages).conversions
    assert got.tolist() == pytest.approx([1, 2, 4])


def test_heuristics_share_all_conversions():
    p = simulate_paths(5_000, 6, seed=3)
    for model in (last_touch, first_touch, linear, position_based, time_decay):
        assert model(p).conversions.sum() == pytest.approx(p.total_conversions)
        assert model(p).value.sum() == pytest.approx(p.total_value)


# ---------------------------------------------------------------- Markov


def test_markov_order_one_matches_the_closed_form():
    # start -> a (3/4) | b (1/4); a -> b (2/3) | null (1/3); b -> conv (4/6) | null (2/6)
    # paths: "a > b" 2 conv 0 null, "a" 0 conv 1 null, "b" 2 conv 2 null... counted below
    p = Paths.from_strings(["a > b", "a", "b"], conversions=[2, 0, 2], nulls=[0, 1, 2])
    # from the counts: start->a 3/7, start->b 4/7; a->b 2/3, a->null 1/3;
    # b->conv 4/6, b->null 2/6.  P(conv) = 3/7*2/3*4/6 + 4/7*4/6 = 4/21 + 8/21 = 12/21
    r = markov(p)
    assert r.conversion_probability == pytest.approx(12 / 21)
    # without a: only start->b: 4/7 * 4/6 = 8/21 -> effect 1/3; without b: 0 -> effect 1
    assert r.removal_effect.tolist() == pytest.approx([1 / 3, 1.0])
    assert r.conversions.tolist() == pytest.approx([4 * (1 / 3) / (4 / 3), 4 * 1 / (4 / 3)])


def test_markov_value_uses_the_value_of_each_ending_state():
    # a converts 1 worth 10 (1 journey), b converts 1 worth 30; path "a > b" carries b's end
    p = Paths.from_strings(["a", "a > b"], conversions=[1, 1], value=[10, 30], nulls=[1, 1])
    r = markov(p)
    # value chain: start->a 1; a: end conv value 10 (of 2 visits: 1 conv, 1 null... ) see below
    # out(a) = 4 journeys through a: 2 move to b, 1 converts (10), 1 null -> E[a] = 10/4 + 1/2 E[b]
    # out(b) = 2: 1 converts (30), 1 null -> E[b] = 15. E[start] = 2.5 + 7.5 = 10
    # without a: 0 -> effect 1; without b: 2.5 -> effect 0.75
    assert r.removal_effect_value.tolist() == pytest.approx([1.0, 0.75])
    assert r.value.tolist() == pytest.approx([40 * 1 / 1.75, 40 * 0.75 / 1.75])


def test_markov_without_null_paths_every_journey_converts():
    p = Paths.from_strings(["a > b", "b", "c > b"], conversions=[1, 1, 2])
    r = markov(p)
    assert r.conversion_probability == pytest.approx(1.0)
    # without b nothing converts; without a 1/4 lost; without c 1/2 lost
    assert r.removal_effect.tolist() == pytest.approx([0.25, 1.0, 0.5])


def test_markov_order_two_and_three_by_hand():
    # order 2: states are windows of two channels; "a > b > a" visits (a,b) then (b,a)
    p = Paths.from_strings(["a > b > a", "b > a", "a > b"], conversions=[1, 1, 0], nulls=[0, 1, 1])
    r2 = markov(p, order=2)
    # start -> (a,b) 2/4, (b,a) 2/4; (a,b) -> (b,a) 1/2, null 1/2; (b,a) -> conv 2/3, null 1/3
    # P = 1/2 * 1/2 * 2/3 + 1/2 * 2/3 = 1/2; every state holds both a and b: effects 1, 1
    assert r2.conversion_probability == pytest.approx(0.5)
    assert r2.removal_effect.tolist() == pytest.approx([1.0, 1.0])
    q = Paths.from_strings(
        ["a > b > c", "c", "a > b > c > c"], conversions=[1, 1, 1], nulls=[1, 1, 0]
    )
    r3 = markov(q, order=3)
    # start -> (a,b,c) 3/5, (c) 2/5; (a,b,c) -> conv 1/3, null 1/3, (b,c,c) 1/3; (b,c,c) -> conv 1
    # (c) -> conv 1/2. P = 3/5 * 2/3 + 2/5 * 1/2 = 3/5; without a (or b): 1/5 -> effect 2/3;
    # without c: 0 -> effect 1
    assert r3.conversion_probability == pytest.approx(0.6)
    assert r3.removal_effect.tolist() == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert r3.n_states == 3


def test_markov_is_deterministic_and_never_negative():
    p = simulate_paths(20_000, 7, seed=5)
    for order in (1, 2, 3):
        a, b = markov(p, order), markov(p, order)
        assert np.array_equal(a.conversions, b.conversions)
        assert (a.conversions >= 0).all() and (a.removal_effect > 0).all()
        assert a.conversions.sum() == pytest.approx(p.total_conversions)
        assert a.value.sum() == pytest.approx(p.total_value)


def test_markov_refuses_an_order_above_three():
    with pytest.raises(InsightsError, match="order"):
        markov(JOURNEYS, order=4)


# ---------------------------------------------------------------- Shapley


def test_shapley_conversions_game_splits_each_path_among_its_channels():
    # the game v(S) = conversions of journeys inside S: each path's conversions are shared
    # equally by its distinct channels
    p = Paths.from_strings(["a > b > a", "b", "c > a"], conversions=[6, 2, 4])
    r = shapley(p, game="conversions")
    assert r.exact
    assert by_channel(p, r.conversions) == pytest.approx({"a": 3 + 2, "b": 3 + 2, "c": 2})


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from("abcdef"), min_size=1, max_size=5),
            st.integers(0, 20),
            st.integers(0, 20),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_shapley_values_sum_to_the_grand_coalition(rows):
    p = Paths.from_strings(
        [" > ".join(r[0]) for r in rows],
        conversions=[r[1] for r in rows],
        nulls=[r[2] for r in rows],
    )
    if p.total_conversions == 0:
        return
    for game in ("conversions", "conversion_rate"):
        r = shapley(p, game=game)
        grand = p.total_conversions
        if game == "conversion_rate":
            grand /= p.total_conversions + p.nulls.sum()
        assert r.shapley_value.sum() == pytest.approx(grand)
        assert r.conversions.sum() == pytest.approx(p.total_conversions)


def test_shapley_symmetric_channels_get_equal_values():
    # a and b play the same role (swapping them maps the journeys onto themselves)
    p = Paths.from_strings(
        ["a", "b", "a > c", "b > c", "c", "a > b"],
        conversions=[3, 3, 5, 5, 1, 4],
        nulls=[10, 10, 4, 4, 20, 2],
    )
    for game in ("conversions", "conversion_rate"):
        r = shapley(p, game=game)
        assert r.shapley_value[0] == pytest.approx(r.shapley_value[1])
        assert r.shapley_value[2] != pytest.approx(r.shapley_value[0])


def test_shapley_sampled_agrees_with_exact_within_its_standard_error_and_is_seeded():
    p = simulate_paths(20_000, 9, seed=11)
    exact = shapley(p)
    sampled = shapley(p, exact_max_channels=5, permutations=3000, seed=4)
    again = shapley(p, exact_max_channels=5, permutations=3000, seed=4)
    assert not sampled.exact and sampled.permutations == 3000
    assert np.array_equal(sampled.conversions, again.conversions)
    assert sampled.conversions.sum() == pytest.approx(p.total_conversions)
    error = np.abs(sampled.conversions - exact.conversions)
    assert (error <= 5 * sampled.conversions_se + 1e-9).all()


def test_shapley_pools_rare_channels_into_other():
    p = Paths.from_strings(["a", "b", "rare > a"], conversions=[5, 5, 1], nulls=[50, 50, 0])
    r = shapley(p, min_journeys=10)
    assert r.channels == ("a", "b", "(other)")
    assert r.conversions.sum() == pytest.approx(11)


# ---------------------------------------------------------------- the report


def test_report_has_a_row_per_channel_and_every_model_shares_the_total():
    p = simulate_paths(10_000, 5, seed=2)
    report = attribute(p, order=2)
    table = report.table
    assert table["channel"].to_pylist() == list(p.channels)
    for model in (
        "last_touch",
        "first_touch",
        "linear",
        "position_based",
        "time_decay",
        "markov",
        "shapley",
    ):
        assert sum(table[f"{model}_conversions"].to_pylist()) == pytest.approx(p.total_conversions)
    assert report.markov is not None and report.markov.order == 2
