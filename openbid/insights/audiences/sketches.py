"""Segment sizes and overlaps estimated with Theta sketches (Apache DataSketches).

A segment's sketch keeps at most `2**lg_k` hashes of its members whatever their number
(`lg_k=12`: about 32 KiB serialised, a relative standard error near 1/sqrt(4096) = 1.6%),
and sketches combine: the reach of several segments together (a union) and the users two
segments share (an intersection) are estimated from the sketches alone, with bounds, without
the member lists. The refresh job writes each segment's compact sketch beside its report, so
a planner (or the console) answers "how many users are in A and B" at any scale, and
sketches from several machines (a Spark run) merge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import combinations

import datasketches
import pyarrow as pa

DEFAULT_LG_K = 12
STD_DEVS = 2
"""Bounds at two standard deviations: about 95% confidence."""

SIZES_SCHEMA = pa.schema(
    [
        ("segment", pa.string()),
        ("members", pa.int64()),
        ("estimate", pa.float64()),
        ("lower_bound", pa.float64()),
        ("upper_bound", pa.float64()),
        ("exact", pa.bool_()),
    ]
)
OVERLAPS_SCHEMA = pa.schema(
    [
        ("segment_a", pa.string()),
        ("segment_b", pa.string()),
        ("both", pa.float64()),
        ("both_lower", pa.float64()),
        ("both_upper", pa.float64()),
        ("jaccard", pa.float64()),
    ]
)


def sketch_of(user_ids: Iterable[str], lg_k: int = DEFAULT_LG_K):
    """A compact Theta sketch of a set of user ids."""
    sketch = datasketches.update_theta_sketch(lg_k)
    for user_id in user_ids:
        sketch.update(user_id)
    return sketch.compact()


def sketches_by_segment(
    members: Mapping[str, Iterable[str]], lg_k: int = DEFAULT_LG_K
) -> dict[str, datasketches.compact_theta_sketch]:
    return {segment: sketch_of(users, lg_k) for segment, users in members.items()}


def serialize(sketch) -> bytes:
    return bytes(sketch.serialize())


def deserialize(data: bytes):
    return datasketches.compact_theta_sketch.deserialize(data)


def sizes_table(sketches: Mapping[str, object], exact: Mapping[str, int] | None = None) -> pa.Table:
    """One row per segment: the exact member count (when known, else -1) and the sketch's
    estimate with its bounds."""
    rows = []
    for segment in sorted(sketches):
        sketch = sketches[segment]
        rows.append(
            {
                "segment": segment,
                "members": int((exact or {}).get(segment, -1)),
                "estimate": float(sketch.get_estimate()),
                "lower_bound": float(sketch.get_lower_bound(STD_DEVS)),
                "upper_bound": float(sketch.get_upper_bound(STD_DEVS)),
                "exact": not sketch.is_estimation_mode(),
            }
        )
    return pa.Table.from_pylist(rows, schema=SIZES_SCHEMA)


def union_estimate(
    sketches: Iterable[object], lg_k: int = DEFAULT_LG_K
) -> tuple[float, float, float]:
    """(estimate, lower, upper) of the users in any of the sketches (their reach together)."""
    union = datasketches.theta_union(lg_k)
    for sketch in sketches:
        union.update(sketch)
    result = union.get_result()
    return (
        float(result.get_estimate()),
        float(result.get_lower_bound(STD_DEVS)),
        float(result.get_upper_bound(STD_DEVS)),
    )


def overlaps_table(sketches: Mapping[str, object], max_segments: int = 50) -> pa.Table:
    """Pairwise overlaps of the largest `max_segments` segments (by estimate): users in both,
    with bounds, and the Jaccard similarity."""
    chosen = sorted(sketches, key=lambda s: -sketches[s].get_estimate())[:max_segments]
    rows = []
    for a, b in combinations(sorted(chosen), 2):
        intersection = datasketches.theta_intersection()
        intersection.update(sketches[a])
        intersection.update(sketches[b])
        both = intersection.get_result()
        jaccard = datasketches.theta_jaccard_similarity.jaccard(sketches[a], sketches[b])
        rows.append(
            {
                "segment_a": a,
                "segment_b": b,
                "both": float(both.get_estimate()),
                "both_lower": float(both.get_lower_bound(STD_DEVS)),
                "both_upper": float(both.get_upper_bound(STD_DEVS)),
                "jaccard": float(jaccard[1]),
            }
        )
    return pa.Table.from_pylist(rows, schema=OVERLAPS_SCHEMA)
