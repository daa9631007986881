"""Logit models over coded features: the hidden rules of DSPs and users, scalar and vectorised.

A model is a base logit plus one weight table per feature (indexed by the value's code),
plus pair tables for planted interactions (explicit weights, or a low-rank latent product).
Both forms add the same terms in the same order, so they agree to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from openbid.sim.features import UNKNOWN

if TYPE_CHECKING:
    from openbid.sim.config import Dsp


class Vocabulary:
    """The values of one feature; a value's code is its position, unknown values get the last."""

    __slots__ = ("name", "values", "_index")

    def __init__(self, name: str, values: Sequence[str]) -> None:
        unique = list(dict.fromkeys(v for v in values if v != UNKNOWN))
        self.name = name
        self.values: tuple[str, ...] = (*unique, UNKNOWN)
        self._index = {value: code for code, value in enumerate(self.values)}

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, value: str) -> bool:
        return value in self._index and value != UNKNOWN

    @property
    def unknown(self) -> int:
        return len(self.values) - 1

    def code(self, value: str) -> int:
        """The code of a value (the unknown code for a value the market never sends).

        >>> Vocabulary("format", ["banner", "video"]).code("audio")
        2
        """
        return self._index.get(value, len(self.values) - 1)


class LogitModel:
    """`logit = base + sum of table[feature][code] + sum of pair[a, b][code_a, code_b]`.

    Gates are `-inf` weights, so a gated value gives probability exactly 0.
    """

    __slots__ = ("base_logit", "tables", "pairs", "_scalar_tables", "_scalar_pairs")

    def __init__(
        self,
        base_logit: float,
        tables: list[tuple[int, np.ndarray]],
        pairs: list[tuple[int, int, np.ndarray]],
    ) -> None:
        self.base_logit = float(base_logit)
        self.tables = tables
        self.pairs = pairs
        self._scalar_tables = [(column, table.tolist()) for column, table in tables]
        self._scalar_pairs = [(a, b, table.tolist()) for a, b, table in pairs]

    def logit(self, codes: Sequence[int]) -> float:
        """The logit of one coded row."""
        value = self.base_logit
        for column, table in self._scalar_tables:
            value += table[codes[column]]
        for a, b, table in self._scalar_pairs:
            value += table[codes[a]][codes[b]]
        return value

    def logits(self, codes: np.ndarray) -> np.ndarray:
        """The logits of a (rows, columns) matrix of codes."""
        value = np.full(codes.shape[0], self.base_logit)
        for column, table in self.tables:
            value += table[codes[:, column]]
        for a, b, table in self.pairs:
            value += table[codes[:, a], codes[:, b]]
        return value


def sigmoid(logit: float) -> float:
    """The logistic function, exactly 0 for a gated (`-inf`) logit.

    >>> sigmoid(0.0), sigmoid(float("-inf"))
    (0.5, 0.0)
    """
    if logit < -700.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(-logit))


def sigmoids(logits: np.ndarray) -> np.ndarray:
    """`sigmoid` over an array."""
    with np.errstate(over="ignore"):
        return np.where(logits < -700.0, 0.0, 1.0 / (1.0 + np.exp(-logits)))


def loglogistic_survival(threshold: float, median: float, shape: float) -> float:
    """P(X >= threshold) for a log-logistic X: the chance a price clears a floor.

    >>> loglogistic_survival(0.0, 1.0, 3.0), loglogistic_survival(1.0, 1.0, 3.0)
    (1.0, 0.5)
    """
    if threshold <= 0.0:
        return 1.0
    return 1.0 / (1.0 + (threshold / median) ** shape)


def loglogistic_survivals(threshold: np.ndarray, median: np.ndarray, shape: float) -> np.ndarray:
    """`loglogistic_survival` over arrays."""
    ratio = np.where(threshold > 0.0, threshold, 0.0) / median
    return np.where(threshold > 0.0, 1.0 / (1.0 + ratio**shape), 1.0)


def loglogistic_quantile(u: float, median: float, shape: float) -> float:
    """The value of a log-logistic at quantile `u` (how prices and latencies are drawn).

    >>> loglogistic_quantile(0.5, 40.0, 4.0)
    40.0
    """
    return median * (u / (1.0 - u)) ** (1.0 / shape)


def loglogistic_quantiles(u: np.ndarray, median: np.ndarray | float, shape: float) -> np.ndarray:
    """`loglogistic_quantile` over arrays."""
    return median * (u / (1.0 - u)) ** (1.0 / shape)


@dataclass(frozen=True)
class CompiledDsp:
    """One DSP, ready to decide: its config, draw salt, models and advertisers."""

    index: int
    name: str
    config: Dsp
    salt: int
    bid_model: LogitModel
    median_price_cpm: np.ndarray
    """Median bid price for each `format` code."""
    advertisers: np.ndarray
    """Advertiser codes (global `advertiser` vocabulary) of the DSP's advertisers."""
    fault_cdf: tuple[float, ...]
    """Cumulative fault rates in the order of `FAULT_KINDS`."""


FAULT_KINDS = ("none", "timeout", "http_5xx", "malformed_json", "slow_body", "connection_reset")
