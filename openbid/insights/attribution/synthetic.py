"""Simulated journeys with a known cause of conversion, seeded: for benches, tests and a
demo of the attribution report without an event log.

Each journey touches a few channels (some channels reach more users than others); it converts
with a probability that grows with the distinct channels it touched (each channel has its own
lift) and, for clicks-like channels, with being last. Paths are returned aggregated.
"""

from __future__ import annotations

import numpy as np

from openbid.insights.attribution.paths import Paths


def simulate_paths(
    n_journeys: int = 100_000,
    n_channels: int = 8,
    *,
    seed: int = 7,
    mean_touches: float = 3.0,
    max_touches: int = 20,
    base_rate: float = 0.02,
    mean_value: float = 50.0,
) -> Paths:
    """`n_journeys` journeys over `n_channels` channels (`ch0`, `ch1`, ...), aggregated."""
    rng = np.random.default_rng(seed)
    reach = rng.dirichlet(np.full(n_channels, 1.5))
    lift = rng.gamma(2.0, 0.35, n_channels)  # log-odds added by touching the channel
    closing = rng.uniform(0.0, 0.6, n_channels)  # extra when the channel is the last touch
    lengths = np.minimum(rng.geometric(1.0 / mean_touches, n_journeys), max_touches)
    touches = rng.choice(n_channels, size=int(lengths.sum()), p=reach)
    # a channel often repeats: with probability 0.3 a touch repeats the one before it
    repeat = rng.random(len(touches)) < 0.3
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    repeat[starts] = False
    for i in np.flatnonzero(repeat):
        touches[i] = touches[i - 1]
    journey = np.repeat(np.arange(n_journeys), lengths)
    touched = np.zeros((n_journeys, n_channels), dtype=bool)
    touched[journey, touches] = True
    last = touches[np.cumsum(lengths) - 1]
    logit = np.log(base_rate / (1 - base_rate)) + touched @ lift + closing[last]
    converted = rng.random(n_journeys) < 1.0 / (1.0 + np.exp(-logit))
    value = np.where(converted, rng.gamma(2.0, mean_value / 2.0, n_journeys), 0.0).round(2)
    names = [f"ch{c}" for c in range(n_channels)]
    paths = [
        " > ".join(names[c] for c in touches[s : s + n])
        for s, n in zip(starts, lengths, strict=True)
    ]
    return Paths.from_strings(
        paths,
        conversions=converted.astype(np.float64),
        value=value,
        nulls=(~converted).astype(np.float64),
    )
