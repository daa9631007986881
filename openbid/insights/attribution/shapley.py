"""Shapley-value attribution over the sets of channels journeys touched (order and repeats
ignored): exact for up to `exact_max_channels` channels, estimated from seeded random
permutations above.

The coalition value v(S) is computed from the journeys whose channels all lie in S (the
journeys a world with only the channels of S would have kept):

| game | v(S) | needs |
| --- | --- | --- |
| `conversions` | their conversions (value: their value) | nothing more |
| `conversion_rate` | their conversions / their journeys (value per journey) | null paths |

The Shapley values sum to v(all channels) (efficiency), and channels that play the same role
get the same value (symmetry). Credit is then scaled so the channels share the total
conversions (value); under `conversion_rate` a channel whose journeys convert worse than
the journeys without it can get negative credit, which is what the game says.

Channels touched by fewer than `min_journeys` journeys are pooled into `(other)` first (Ads
Data Hub drops touchpoints with fewer than 50 users); pooling keeps efficiency.

>>> from openbid.insights.attribution.paths import Paths
>>> p = Paths.from_strings(["a", "a > b"], conversions=[2, 4])
>>> shapley(p, game="conversions").conversions.tolist()  # a: 2 + 4/2, b: 4/2
[4.0, 2.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from openbid.insights.attribution.paths import Paths
from openbid.insights.errors import InsightsError

GAMES: tuple[str, ...] = ("conversions", "conversion_rate")
EXACT_MAX_CHANNELS = 15
HARD_EXACT_LIMIT = 22
"""Above this an exact run needs 2^n coalitions in memory (2^22: 32 MiB per array)."""
OTHER = "(other)"


@dataclass(frozen=True, slots=True)
class ShapleyResult:
    """Per channel (aligned with `channels`): Shapley values of the game, and conversions and
    value credited in proportion. `exact` is false for a permutation estimate, whose
    standard errors (of the conversion credit) are in `conversions_se`."""

    channels: tuple[str, ...]
    game: str
    shapley_value: np.ndarray
    conversions: np.ndarray
    value: np.ndarray
    exact: bool
    permutations: int
    conversions_se: np.ndarray


@dataclass(frozen=True, slots=True)
class _Coalitions:
    """Distinct channel sets (CSR of channel ids) with their summed journeys."""

    offsets: np.ndarray
    members: np.ndarray
    masks: np.ndarray | None
    conversions: np.ndarray
    value: np.ndarray
    journeys: np.ndarray


def _channel_sets(paths: Paths, channel_map: np.ndarray, n: int) -> _Coalitions:
    sets: dict[tuple[int, ...], int] = {}
    row_set = np.empty(paths.n_paths, dtype=np.int64)
    mapped = channel_map[paths.touches]
    for i in range(paths.n_paths):
        key = tuple(sorted(set(mapped[paths.offsets[i] : paths.offsets[i + 1]].tolist())))
        row_set[i] = sets.setdefault(key, len(sets))
    keys = list(sets)
    lengths = np.array([len(k) for k in keys], dtype=np.int64)
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    members = np.fromiter((c for k in keys for c in k), dtype=np.int64, count=int(offsets[-1]))
    masks = None
    if n <= HARD_EXACT_LIMIT:
        masks = np.array([sum(1 << c for c in k) for k in keys], dtype=np.int64)
    journeys = paths.conversions + (paths.nulls if paths.has_nulls else 0.0)
    size = len(keys)
    return _Coalitions(
        offsets=offsets,
        members=members,
        masks=masks,
        conversions=np.bincount(row_set, weights=paths.conversions, minlength=size),
        value=np.bincount(row_set, weights=paths.value, minlength=size),
        journeys=np.bincount(row_set, weights=journeys, minlength=size),
    )


def _pool(paths: Paths, min_journeys: float) -> tuple[tuple[str, ...], np.ndarray]:
    """Channel names after pooling the rare ones, and each original channel's new index."""
    n = paths.n_channels
    if min_journeys <= 0:
        return paths.channels, np.arange(n)
    journeys = paths.conversions + (paths.nulls if paths.has_nulls else 0.0)
    path_of_touch = np.repeat(np.arange(paths.n_paths), paths.lengths)
    # journeys per channel, counting a path once however often it repeats the channel
    pairs = np.unique(np.stack([paths.touches, path_of_touch]), axis=1)
    reach = np.bincount(pairs[0], weights=journeys[pairs[1]], minlength=n)
    kept = [c for c in range(n) if reach[c] >= min_journeys]
    if len(kept) == n:
        return paths.channels, np.arange(n)
    names = tuple(paths.channels[c] for c in kept) + (OTHER,)
    mapping = np.full(n, len(kept), dtype=np.int64)
    mapping[kept] = np.arange(len(kept))
    return names, mapping


def _exact(coalitions: _Coalitions, n: int, game: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact Shapley values of the conversion and value games over 2^n coalitions."""
    size = 1 << n
    totals = []
    for payload in (coalitions.conversions, coalitions.value, coalitions.journeys):
        table = np.bincount(coalitions.masks, weights=payload, minlength=size)
        # subset sums (zeta transform): table[S] = sum over T subset of S
        for bit in range(n):
            view = table.reshape(-1, 2, 1 << bit)
            view[:, 1, :] += view[:, 0, :]
        totals.append(table)
    conversions, value, journeys = totals
    if game == "conversion_rate":
        with np.errstate(invalid="ignore", divide="ignore"):
            conversions = np.where(journeys > 0, conversions / journeys, 0.0)
            value = np.where(journeys > 0, value / journeys, 0.0)
    sizes = np.zeros(size, dtype=np.int64)
    for bit in range(n):
        sizes.reshape(-1, 2, 1 << bit)[:, 1, :] += 1
    # weight of a coalition S of size s not holding i: s! (n - s - 1)! / n!
    weights = np.array(
        [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    )
    phi = np.zeros((2, n))
    for bit in range(n):
        w = weights[sizes.reshape(-1, 2, 1 << bit)[:, 0, :]]
        for g, game_value in enumerate((conversions, value)):
            pairs = game_value.reshape(-1, 2, 1 << bit)
            phi[g, bit] = float((w * (pairs[:, 1, :] - pairs[:, 0, :])).sum())
    return phi[0], phi[1]


def _sampled(
    coalitions: _Coalitions, n: int, game: str, permutations: int, seed: int, batch: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shapley values averaged over random permutations: in a permutation, a channel set is
    complete once its last channel arrives, so v(prefix) is a cumulative sum by that step."""
    rng = np.random.default_rng(seed)
    starts = coalitions.offsets[:-1]
    nonempty = np.diff(coalitions.offsets) > 0
    sum_phi = np.zeros((2, n))
    sum_sq = np.zeros(n)
    done = 0
    while done < permutations:
        b = min(batch, permutations - done)
        order = np.argsort(rng.random((b, n)), axis=1)  # order[k, j]: channel at step j
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(n)[None, :].repeat(b, axis=0), axis=1)
        complete = np.maximum.reduceat(rank[:, coalitions.members], starts[nonempty], axis=1)
        steps = np.zeros((b, n, 3))
        for g, payload in enumerate(
            (coalitions.conversions, coalitions.value, coalitions.journeys)
        ):
            flat = (complete + (np.arange(b) * n)[:, None]).ravel()
            weights = np.broadcast_to(payload[nonempty], complete.shape).ravel()
            steps[:, :, g] = np.bincount(flat, weights=weights, minlength=b * n).reshape(b, n)
        prefix = np.cumsum(steps, axis=1)
        games = [prefix[:, :, 0], prefix[:, :, 1]]
        if game == "conversion_rate":
            with np.errstate(invalid="ignore", divide="ignore"):
                games = [np.where(prefix[:, :, 2] > 0, g / prefix[:, :, 2], 0.0) for g in games]
        for g, game_value in enumerate(games):
            marginal = np.diff(game_value, axis=1, prepend=0.0)  # by step
            by_channel = np.take_along_axis(marginal, rank, axis=1)  # by channel
            sum_phi[g] += by_channel.sum(axis=0)
            if g == 0:
                sum_sq += (by_channel**2).sum(axis=0)
        done += b
    mean = sum_phi / permutations
    variance = np.maximum(sum_sq / permutations - mean[0] ** 2, 0.0)
    se = np.sqrt(variance / max(permutations - 1, 1))
    return mean[0], mean[1], se


def shapley(
    paths: Paths,
    *,
    game: str | None = None,
    exact_max_channels: int = EXACT_MAX_CHANNELS,
    permutations: int = 2000,
    seed: int = 0,
    min_journeys: float = 0.0,
) -> ShapleyResult:
    """Shapley attribution of `paths`. `game` defaults to `conversion_rate` when the paths
    carry null journeys, else `conversions`."""
    game = game or ("conversion_rate" if paths.has_nulls else "conversions")
    if game not in GAMES:
        raise InsightsError(f"unknown Shapley game {game!r}; expected one of {list(GAMES)}")
    if game == "conversion_rate" and not paths.has_nulls:
        raise InsightsError(
            "the conversion_rate game needs null paths (journeys that did not convert)"
        )
    if exact_max_channels > HARD_EXACT_LIMIT:
        raise InsightsError(f"exact_max_channels above {HARD_EXACT_LIMIT} needs too much memory")
    if permutations < 1:
        raise InsightsError(f"permutations must be at least 1, got {permutations}")
    channels, mapping = _pool(paths, min_journeys)
    n = len(channels)
    coalitions = _channel_sets(paths, mapping, n)
    if n <= exact_max_channels:
        phi_conv, phi_value = _exact(coalitions, n, game)
        exact, used, se = True, 0, np.zeros(n)
    else:
        phi_conv, phi_value, se = _sampled(coalitions, n, game, permutations, seed)
        exact, used = False, permutations
    conv_scale = _scale(phi_conv, paths.total_conversions)
    value_scale = _scale(phi_value, paths.total_value)
    return ShapleyResult(
        channels=channels,
        game=game,
        shapley_value=phi_conv,
        conversions=phi_conv * conv_scale,
        value=phi_value * value_scale,
        exact=exact,
        permutations=used,
        conversions_se=se * conv_scale,
    )


def _scale(phi: np.ndarray, total: float) -> float:
    worth = phi.sum()
    return total / worth if worth != 0 else 0.0
