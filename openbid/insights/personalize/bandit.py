"""Thompson sampling over a campaign's creatives per audience segment, served as a table of
choice probabilities so every choice has an exact, logged propensity.

Each (segment, creative) has a Beta posterior over its click rate: a prior centred on the
creative's pooled rate (`prior_strength` pseudo-impressions), plus its logged clicks and
impressions. Thompson sampling picks the creative whose sampled rate is highest; the chance
of that for each creative is computed once per policy version (Monte Carlo over the
posteriors, seeded) and mixed with a uniform floor (`epsilon`) so no creative's propensity
falls to zero, which offline evaluation divides by. Serving then draws from that table:
the same distribution as sampling the posteriors at every request, with the propensity known
exactly and no sampling work on the request path.

The policy is refitted from the log in batches (the personalise job), not per impression:
between two versions the table is fixed.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

import msgspec
import numpy as np

from openbid.insights.errors import InsightsError

DEFAULT_SEGMENT = ""
"""The context of a user in none of the policy's segments."""


class ChoicePolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What serves: per segment (in priority order), the probability of each creative."""

    name: str
    campaign_id: str
    creatives: list[str]
    segments: list[str]
    """Segments the policy knows, first match wins; `DEFAULT_SEGMENT` ("") is the last."""
    probabilities: list[list[float]]
    """`probabilities[i][k]`: creative k in segments[i]; each row sums to 1."""

    def __post_init__(self) -> None:
        if not self.creatives:
            raise InsightsError("a policy needs at least one creative")
        if DEFAULT_SEGMENT not in self.segments:
            raise InsightsError("a policy's segments must include the default segment ''")
        if len(self.probabilities) != len(self.segments):
            raise InsightsError("probabilities: one row per segment")
        for segment, row in zip(self.segments, self.probabilities, strict=True):
            if len(row) != len(self.creatives) or min(row) < 0 or abs(sum(row) - 1) > 1e-6:
                raise InsightsError(
                    f"probabilities[{segment!r}]: {len(self.creatives)} non-negative values "
                    f"summing to 1, got {row}"
                )

    def matrix(self) -> np.ndarray:
        return np.asarray(self.probabilities, dtype=np.float64)

    def aligned(self, segments: Sequence[str], creatives: Sequence[str]) -> np.ndarray:
        """The probabilities over other lists of segments and creatives (a logged log's): a
        segment by its context here, a creative unknown here at 0, rows renormalised (a row
        of unknown creatives only: uniform)."""
        table = np.zeros((len(segments), len(creatives)))
        for i, segment in enumerate(segments):
            row = self.probabilities[self.segments.index(self.context_of({segment}))]
            for k, creative in enumerate(creatives):
                if creative in self.creatives:
                    table[i, k] = row[self.creatives.index(creative)]
        sums = table.sum(axis=1, keepdims=True)
        uniform = np.full_like(table, 1.0 / max(len(creatives), 1))
        return np.divide(table, sums, out=uniform, where=sums > 0)

    def context_of(self, user_segments: frozenset[str] | set[str]) -> str:
        """The first of the policy's segments the user is in (else the default)."""
        for segment in self.segments:
            if segment in user_segments:
                return segment
        return DEFAULT_SEGMENT

    def choose(self, segment: str, u: float) -> tuple[str, float]:
        """The creative for `segment` given a uniform draw `u` in [0, 1), and its propensity.

        >>> p = ChoicePolicy("p", "c", ["a", "b"], ["s", ""], [[0.25, 0.75], [1.0, 0.0]])
        >>> p.choose("s", 0.1), p.choose("s", 0.5), p.choose("other", 0.99)
        (('a', 0.25), ('b', 0.75), ('a', 1.0))
        """
        try:
            row = self.probabilities[self.segments.index(segment)]
        except ValueError:
            row = self.probabilities[self.segments.index(DEFAULT_SEGMENT)]
        cumulative, total = [], 0.0
        for p in row:
            total += p
            cumulative.append(total)
        k = min(bisect.bisect_right(cumulative, u * total), len(row) - 1)
        while row[k] == 0.0:  # u fell on a boundary: never a creative of propensity 0
            k -= 1
        return self.creatives[k], row[k]


def policy_name(prefix: str, body: object) -> str:
    digest = hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()[:10]
    return f"{prefix}-{digest}"


def uniform_policy(campaign_id: str, creatives: Sequence[str]) -> ChoicePolicy:
    k = len(creatives)
    row = [1.0 / k] * k
    return ChoicePolicy(
        policy_name("uniform", [campaign_id, list(creatives)]),
        campaign_id,
        list(creatives),
        [DEFAULT_SEGMENT],
        [row],
    )


class BetaPosteriors:
    """Clicks and impressions per (segment, creative), and the Thompson table from them."""

    def __init__(self, segments: Sequence[str], creatives: Sequence[str]) -> None:
        self.segments = list(dict.fromkeys([*segments, DEFAULT_SEGMENT]))
        self.creatives = list(creatives)
        if not self.creatives:
            raise InsightsError("a bandit needs at least one creative")
        shape = (len(self.segments), len(self.creatives))
        self.clicks = np.zeros(shape)
        self.impressions = np.zeros(shape)

    def update(self, segment_index: np.ndarray, creative_index: np.ndarray, reward: np.ndarray):
        """Adds logged outcomes (arrays of indices into `segments`, `creatives`)."""
        np.add.at(self.impressions, (segment_index, creative_index), 1.0)
        np.add.at(self.clicks, (segment_index, creative_index), reward)

    def alpha_beta(self, prior_strength: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters: a prior of `prior_strength` pseudo-impressions at the creative's
        pooled rate (all segments), plus the segment's own outcomes. The default segment
        holds everyone, so it pools every segment's outcomes."""
        clicks, impressions = self.clicks.copy(), self.impressions.copy()
        d = self.segments.index(DEFAULT_SEGMENT)
        clicks[d] = self.clicks.sum(axis=0)
        impressions[d] = self.impressions.sum(axis=0)
        pooled = (self.clicks.sum(axis=0) + 1.0) / (self.impressions.sum(axis=0) + 2.0)
        alpha = pooled * prior_strength + clicks
        beta = (1.0 - pooled) * prior_strength + (impressions - clicks)
        return alpha, beta

    def thompson_table(
        self,
        *,
        epsilon: float = 0.05,
        prior_strength: float = 20.0,
        draws: int = 20_000,
        seed: int = 0,
    ) -> np.ndarray:
        """P(creative k has the highest sampled rate | segment), floored by `epsilon`."""
        if not 0.0 <= epsilon <= 1.0:
            raise InsightsError(f"epsilon must be in [0, 1], got {epsilon}")
        alpha, beta = self.alpha_beta(prior_strength)
        rng = np.random.default_rng(seed)
        n_segments, n_creatives = alpha.shape
        table = np.empty((n_segments, n_creatives))
        for s in range(n_segments):
            samples = rng.beta(alpha[s], beta[s], size=(draws, n_creatives))
            wins = np.bincount(samples.argmax(axis=1), minlength=n_creatives)
            table[s] = wins / draws
        return (1.0 - epsilon) * table + epsilon / n_creatives

    def policy(self, campaign_id: str, **options) -> ChoicePolicy:
        table = self.thompson_table(**options)
        body = [campaign_id, self.creatives, self.segments, np.round(table, 6).tolist()]
        rows = [list(map(float, row / row.sum())) for row in table]
        return ChoicePolicy(
            policy_name("ts", body), campaign_id, self.creatives, self.segments, rows
        )
