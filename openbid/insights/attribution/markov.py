"""Markov-chain attribution by the removal effect, solved exactly with absorbing-chain algebra.

The paths define a chain: `(start)` -> states -> `(conversion)` or `(null)`, with transition
probabilities counted from the journeys (each path weighs its journeys: conversions plus
nulls). A state of order `k` is a window of `k` consecutive channels (a path shorter than `k`
is one state), as in ChannelAttribution. The probability of reaching `(conversion)` from
`(start)` solves `(I - Q) x = r` (Q: transient-to-transient probabilities, r: one-step
conversion probabilities); removing a channel turns every state that contains it into
`(null)`. The removal effect of channel c is `1 - P(conversion without c) / P(conversion)`,
and the path conversions are shared in proportion to the removal effects.

Solved rather than simulated: no run-to-run noise, and a removal effect is in [0, 1], so no
channel gets negative credit. Value uses the same chain with each state's conversion value
as its one-step reward (the expected value reached from `(start)`).

Without null paths (`paths.has_nulls` false) every journey converts and the removal effect
is the share of conversion probability lost.

>>> from openbid.insights.attribution.paths import Paths
>>> p = Paths.from_strings(["a > b", "b"], conversions=[1, 1], nulls=[1, 1])
>>> r = markov(p)
>>> [round(x, 4) for x in r.removal_effect.tolist()]  # P(conv) = 0.5; without a: 0.25
[0.5, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from openbid.insights.attribution.paths import Paths
from openbid.insights.errors import InsightsError

MAX_ORDER = 3


@dataclass(frozen=True, slots=True)
class MarkovResult:
    """Per channel (aligned with `channels`): removal effects for conversions and value, and
    the conversions and value attributed in proportion to them."""

    channels: tuple[str, ...]
    order: int
    removal_effect: np.ndarray
    removal_effect_value: np.ndarray
    conversions: np.ndarray
    value: np.ndarray
    conversion_probability: float
    """P(conversion) from `(start)` with every channel (1 without null paths)."""
    n_states: int


@dataclass(frozen=True, slots=True)
class Chain:
    """The transient states of the chain and their transitions."""

    q: sp.csr_matrix
    """Transient-to-transient transition probabilities."""
    conversion_step: np.ndarray
    """One-step probability of conversion from each state."""
    value_step: np.ndarray
    """Expected conversion value collected in one step from each state."""
    start: np.ndarray
    """P(first state) from `(start)`."""
    contains: sp.csc_matrix
    """states x channels: 1 where the state's window holds the channel."""


def build_chain(paths: Paths, order: int = 1) -> Chain:
    """The absorbing chain of order `order` counted from `paths`."""
    if not 1 <= order <= MAX_ORDER:
        raise InsightsError(f"markov order must be 1 to {MAX_ORDER}, got {order}")
    weight = paths.conversions + (paths.nulls if paths.has_nulls else 0.0)
    used = (weight > 0) & (paths.lengths > 0)
    lengths = paths.lengths[used]
    starts = paths.offsets[:-1][used]
    weight = weight[used]
    conversions = paths.conversions[used]
    value = paths.value[used]
    n_paths = len(lengths)
    if n_paths == 0:
        raise InsightsError("markov: no journeys with a touch and a weight (conversions or nulls)")

    # states per path: its windows of `order` channels, or the whole path if shorter
    n_states_of_path = np.maximum(lengths - order + 1, 1)
    state_path = np.repeat(np.arange(n_paths), n_states_of_path)
    first_state = np.zeros(n_paths, dtype=np.int64)
    np.cumsum(n_states_of_path[:-1], out=first_state[1:])
    window_start = starts[state_path] + (np.arange(len(state_path)) - first_state[state_path])
    window_end = starts[state_path] + lengths[state_path]
    base = paths.n_channels + 1  # symbol 0 pads a short path's window
    code = np.zeros(len(state_path), dtype=np.int64)
    symbols = []
    for t in range(order):
        position = window_start + t
        inside = position < window_end
        symbol = np.where(
            inside, paths.touches[np.minimum(position, len(paths.touches) - 1)] + 1, 0
        )
        symbols.append(symbol)
        code = code * base + symbol
    unique_codes, state_of_window = np.unique(code, return_inverse=True)
    n_states = len(unique_codes)

    w = weight[state_path]
    last = np.zeros(len(state_path), dtype=bool)
    last[first_state + n_states_of_path - 1] = True
    moves = ~last
    src = state_of_window[moves]
    dst = state_of_window[np.flatnonzero(moves) + 1]
    moved = np.bincount(src, weights=w[moves], minlength=n_states)
    end_state = state_of_window[last]
    converted = np.bincount(end_state, weights=conversions, minlength=n_states)
    valued = np.bincount(end_state, weights=value, minlength=n_states)
    nulls = paths.nulls[used] if paths.has_nulls else np.zeros(n_paths)
    ended_null = np.bincount(end_state, weights=nulls, minlength=n_states)
    out = moved + converted + ended_null
    q = sp.coo_matrix((w[moves] / out[src], (src, dst)), shape=(n_states, n_states)).tocsr()
    start = np.bincount(state_of_window[first_state], weights=weight, minlength=n_states)
    start /= start.sum()

    # which channels each state holds: from the windows' symbols (0 = padding)
    rows = np.concatenate([state_of_window] * order)
    cols = np.concatenate(symbols) - 1
    inside = cols >= 0
    contains = sp.coo_matrix(
        (np.ones(int(inside.sum())), (rows[inside], cols[inside])),
        shape=(n_states, paths.n_channels),
    ).tocsc()
    contains.data[:] = 1.0
    return Chain(
        q=q,
        conversion_step=converted / out,
        value_step=valued / out,
        start=start,
        contains=contains,
    )


def _reach(chain: Chain, keep: np.ndarray | None) -> tuple[float, float]:
    """P(conversion) and expected value from `(start)`, with only the `keep` states."""
    q = chain.q if keep is None else chain.q[keep][:, keep]
    n = q.shape[0]
    if n == 0:
        return 0.0, 0.0
    rhs = np.column_stack([chain.conversion_step, chain.value_step])
    start = chain.start
    if keep is not None:
        rhs, start = rhs[keep], start[keep]
    system = (sp.identity(n, format="csc") - q.tocsc()).tocsc()
    solution = splu(system).solve(rhs)
    reached = start @ solution
    return float(reached[0]), float(reached[1])


def markov(paths: Paths, order: int = 1) -> MarkovResult:
    """The removal effects and attributed conversions and value of each channel."""
    chain = build_chain(paths, order)
    base_conversion, base_value = _reach(chain, None)
    n = paths.n_channels
    effect = np.zeros(n)
    effect_value = np.zeros(n)
    for channel in range(n):
        holders = chain.contains[:, channel].toarray().ravel() > 0
        if not holders.any():
            continue
        conversion, value = _reach(chain, ~holders)
        if base_conversion > 0:
            effect[channel] = 1.0 - conversion / base_conversion
        if base_value != 0:
            effect_value[channel] = 1.0 - value / base_value
    # solver round-off only: the exact effects lie in [0, 1]
    effect = np.clip(effect, 0.0, 1.0)
    effect_value = np.clip(effect_value, 0.0, 1.0)
    return MarkovResult(
        channels=paths.channels,
        order=order,
        removal_effect=effect,
        removal_effect_value=effect_value,
        conversions=_share(effect, paths.total_conversions),
        value=_share(effect_value, paths.total_value),
        conversion_probability=base_conversion,
        n_states=chain.q.shape[0],
    )


def _share(effect: np.ndarray, total: float) -> np.ndarray:
    weight = effect.sum()
    return effect * (total / weight) if weight > 0 else np.zeros_like(effect)
