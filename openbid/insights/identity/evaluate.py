"""Pairwise precision, recall and F1 of a clustering against labels: a pair of records is
predicted to match when they share a cluster, and truly matches when they share a label.

>>> s = pairwise_scores(["a", "b", "c", "d"], predicted=[1, 1, 2, 2], truth=[1, 1, 1, 2])
>>> (s.precision, s.recall, round(s.f1, 4))  # predicted pairs ab, cd; true pairs ab, ac, bc
(0.5, 0.3333333333333333, 0.4)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from openbid.insights.errors import InsightsError


@dataclass(frozen=True, slots=True)
class Scores:
    precision: float
    recall: float
    f1: float
    predicted_pairs: int
    true_pairs: int
    correct_pairs: int


def _pairs(sizes: Counter) -> int:
    return sum(n * (n - 1) // 2 for n in sizes.values())


def pairwise_scores(
    record_ids: Sequence[Hashable], *, predicted: Sequence[Hashable], truth: Sequence[Hashable]
) -> Scores:
    """Scores of `predicted` clusters against `truth` labels (all aligned with `record_ids`;
    a record with no label is left out)."""
    if not len(record_ids) == len(predicted) == len(truth):
        raise InsightsError("record ids, predicted clusters and labels must have the same length")
    kept = [(p, t) for p, t in zip(predicted, truth, strict=True) if t is not None]
    predicted_pairs = _pairs(Counter(p for p, _ in kept))
    true_pairs = _pairs(Counter(t for _, t in kept))
    correct = _pairs(Counter(kept))
    precision = correct / predicted_pairs if predicted_pairs else 1.0
    recall = correct / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1, predicted_pairs, true_pairs, correct)
