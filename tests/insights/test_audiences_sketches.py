"""Theta sketches of segments: sizes, unions and intersections estimated within their
bounds of the exact counts, exact below the sketch's capacity, and unchanged by a round
trip through bytes."""

from __future__ import annotations

import numpy as np

from openbid.insights.audiences.sketches import (
    deserialize,
    overlaps_table,
    serialize,
    sizes_table,
    sketch_of,
    union_estimate,
)


def sets(seed: int = 3):
    rng = np.random.default_rng(seed)
    population = np.array([f"user-{i}" for i in range(60_000)])
    a = set(population[rng.random(60_000) < 0.5])
    b = set(population[rng.random(60_000) < 0.3]) | set(list(a)[:5000])
    return a, b


def test_sizes_lie_within_their_bounds_and_near_the_exact_count():
    a, b = sets()
    sketches = {"a": sketch_of(a), "b": sketch_of(b)}
    rows = {r["segment"]: r for r in sizes_table(sketches, {"a": len(a), "b": len(b)}).to_pylist()}
    for name, members in (("a", a), ("b", b)):
        row = rows[name]
        assert row["members"] == len(members)
        assert not row["exact"]  # past 2**12 hashes: estimation mode
        assert row["lower_bound"] <= len(members) <= row["upper_bound"]
        assert abs(row["estimate"] - len(members)) / len(members) < 0.05


def test_small_segments_are_counted_exactly():
    sketch = sketch_of(f"u{i}" for i in range(1000))
    row = sizes_table({"s": sketch}).to_pylist()[0]
    assert row["exact"] and row["estimate"] == 1000 and row["members"] == -1


def test_unions_and_intersections_estimate_the_exact_sets():
    a, b = sets()
    sa, sb = sketch_of(a), sketch_of(b)
    estimate, low, high = union_estimate([sa, sb])
    assert low <= len(a | b) <= high
    overlap = overlaps_table({"a": sa, "b": sb}).to_pylist()[0]
    both = len(a & b)
    assert overlap["both_lower"] <= both <= overlap["both_upper"]
    assert abs(overlap["jaccard"] - both / len(a | b)) < 0.03


def test_a_sketch_survives_serialisation():
    a, _ = sets()
    sketch = sketch_of(a)
    again = deserialize(serialize(sketch))
    assert again.get_estimate() == sketch.get_estimate()
