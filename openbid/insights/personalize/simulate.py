"""A simulated segment market for the bandit: segments of users, a campaign's creatives, and
a true click rate for each (segment, creative) that the policy does not know. Used by the
tests (regret against uniform; unbiased offline estimates), `openbid insights personalize
simulate`, and to write a logged-policy event log for the evaluation job.

Regret is expected regret: the best creative's true rate in the segment minus the chosen
one's, summed over choices (no coin-flip noise in the figure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from openbid.events import ClickEvent, EventLog, ImpressionEvent
from openbid.insights.personalize.bandit import BetaPosteriors, ChoicePolicy
from openbid.insights.personalize.ope import Logged


@dataclass(frozen=True, slots=True)
class SegmentMarket:
    segments: list[str]
    creatives: list[str]
    ctr: np.ndarray
    """True click rate, `[segment, creative]`."""
    share: np.ndarray
    """Share of impressions from each segment."""

    @classmethod
    def random(
        cls,
        n_segments: int = 6,
        n_creatives: int = 4,
        *,
        base_ctr: float = 0.02,
        spread: float = 0.6,
        seed: int = 0,
    ) -> SegmentMarket:
        """Rates `base_ctr * exp(N(0, spread))` per (segment, creative): the best creative
        differs by segment."""
        rng = np.random.default_rng(seed)
        ctr = np.clip(base_ctr * np.exp(rng.normal(0, spread, (n_segments, n_creatives))), 0, 1)
        share = rng.dirichlet(np.full(n_segments, 3.0))
        return cls(
            [f"seg-{i}" for i in range(n_segments)],
            [f"creative-{k}" for k in range(n_creatives)],
            ctr,
            share,
        )

    def draw_segments(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self.segments), size=n, p=self.share)

    def value(self, table: np.ndarray) -> float:
        """The true expected reward per choice of a policy table (rows aligned with
        `segments`; extra rows, such as a default segment's, are ignored)."""
        rows = table[: len(self.segments)]
        return float((self.share[:, None] * rows * self.ctr).sum())

    def best_value(self) -> float:
        return float((self.share * self.ctr.max(axis=1)).sum())


def sample_actions(table: np.ndarray, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One action per context drawn from the table's row (inverse CDF)."""
    cumulative = np.cumsum(table[contexts], axis=1)
    u = rng.random(len(contexts))[:, None] * cumulative[:, -1:]
    return np.minimum((cumulative <= u).sum(axis=1), table.shape[1] - 1)


@dataclass(slots=True)
class BanditRun:
    policy: str
    rounds: int
    regret: float
    clicks: float
    regret_curve: list[float] = field(default_factory=list)
    """Cumulative regret after each batch."""


def run_bandit(
    market: SegmentMarket,
    policy: str,
    *,
    rounds: int = 50_000,
    batch: int = 1000,
    epsilon: float = 0.05,
    seed: int = 0,
) -> BanditRun:
    """Serves `rounds` choices with `policy` (`thompson`, refitted every `batch` choices
    as the job would; `uniform`; `oracle`), returns its regret."""
    rng = np.random.default_rng(seed)
    n_segments, n_creatives = market.ctr.shape
    posteriors = BetaPosteriors(market.segments, market.creatives)
    uniform = np.full((n_segments + 1, n_creatives), 1.0 / n_creatives)
    oracle = np.zeros_like(uniform)
    oracle[np.arange(n_segments), market.ctr.argmax(axis=1)] = 1.0
    oracle[n_segments] = 1.0 / n_creatives
    table = uniform
    best = market.ctr.max(axis=1)
    regret, clicks, curve = 0.0, 0.0, []
    for start in range(0, rounds, batch):
        n = min(batch, rounds - start)
        if policy == "thompson":
            table = posteriors.thompson_table(epsilon=epsilon, seed=seed + start, draws=4000)
        elif policy == "oracle":
            table = oracle
        elif policy != "uniform":
            raise ValueError(f"unknown policy {policy!r}")
        contexts = market.draw_segments(n, rng)
        actions = sample_actions(table, contexts, rng)
        rates = market.ctr[contexts, actions]
        rewards = (rng.random(n) < rates).astype(np.float64)
        posteriors.update(contexts, actions, rewards)
        regret += float((best[contexts] - rates).sum())
        clicks += float(rewards.sum())
        curve.append(regret)
    return BanditRun(policy, rounds, regret, clicks, curve)


def log_choices(
    market: SegmentMarket, table: np.ndarray, n: int, rng: np.random.Generator
) -> Logged:
    """`n` choices made by a logging policy's table, with their propensities and rewards."""
    contexts = market.draw_segments(n, rng)
    actions = sample_actions(table, contexts, rng)
    rewards = (rng.random(n) < market.ctr[contexts, actions]).astype(np.float64)
    return Logged(contexts, actions, rewards, table[contexts, actions])


def write_logged_policy(
    directory: str | Path,
    market: SegmentMarket,
    policy: ChoicePolicy,
    n: int,
    *,
    start_micros: int,
    spacing_micros: int = 1_000_000,
    seed: int = 0,
) -> Logged:
    """Writes `n` impressions chosen by `policy` (its propensity, name and segment on each)
    and the clicks they earn to the event log at `directory`; returns what was logged."""
    rng = np.random.default_rng(seed)
    contexts = market.draw_segments(n, rng)
    table = policy.matrix()
    index = [policy.segments.index(s) for s in market.segments]
    actions = sample_actions(table[index], contexts, rng)
    rates = market.ctr[contexts, actions]
    rewards = (rng.random(n) < rates).astype(np.float64)
    propensity = table[index][contexts, actions]
    with EventLog(directory, roll_interval_s=3600.0) as log:
        for i in range(n):
            ts = start_micros + i * spacing_micros
            auction_id, bid_id = f"pa{seed}-{i}", f"pb{seed}-{i}"
            creative = market.creatives[actions[i]]
            log.emit(
                ImpressionEvent(
                    ts,
                    auction_id,
                    bid_id,
                    dsp="openbid",
                    creative_id=creative,
                    campaign_id=policy.campaign_id,
                    user_id=f"pu{i}",
                    propensity=float(propensity[i]),
                    policy=policy.name,
                    segment=market.segments[contexts[i]],
                )  # fmt: skip
            )
            if rewards[i]:
                log.emit(
                    ClickEvent(
                        ts + 3_000_000,
                        auction_id,
                        bid_id,
                        creative_id=creative,
                        campaign_id=policy.campaign_id,
                        user_id=f"pu{i}",
                        click_id=f"pk{seed}-{i}",
                    )  # fmt: skip
                )
    return Logged(contexts, actions, rewards, propensity)
