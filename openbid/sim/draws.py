"""Reproducible random draws keyed by names, so any party can replay what the market drew.

A draw is a uniform number in [0, 1) from a 64-bit key (a hash of the market seed, the
request id and the impression id), a salt (a hash of the DSP's name) and a stream (what the
draw is for). The scalar form (used by a DSP server on one request) and the vectorised form
(used offline on a batch) give bit-identical numbers.
"""

from __future__ import annotations

import mmh3
import numpy as np

MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_TO_UNIT = 1.0 / (1 << 53)

# What a draw decides; each has its own stream so draws are independent.
STREAM_BID = 1
STREAM_PRICE = 2
STREAM_LATENCY = 3
STREAM_FAULT = 4
STREAM_ADVERTISER = 5
STREAM_CLICK = 6
STREAM_CONVERSION = 7
STREAM_FAULT_DETAIL = 8
STREAM_RENDER = 9
STREAM_CLICK_DELAY = 10
STREAM_CONVERSION_DELAY = 11
STREAM_VIEW_CONVERSION = 12
STREAM_REPORT = 13
STREAM_VALUE = 14
STREAM_DUPLICATE = 15


def name_hash(text: str) -> int:
    """A stable unsigned 64-bit hash of a string (murmur3, not Python's salted `hash`).

    >>> name_hash("alpha") == name_hash("alpha") != name_hash("beta")
    True
    """
    return mmh3.hash64(text, signed=False)[0]


def draw_key(market_seed: int, request_id: str, imp_id: str = "") -> int:
    """The key of the draws made for one (request, impression) of a market."""
    return name_hash(f"{market_seed}\x1f{request_id}\x1f{imp_id}")


def _splitmix(value: int) -> int:
    value = (value + _GOLDEN) & MASK64
    value = ((value ^ (value >> 30)) * _MIX1) & MASK64
    value = ((value ^ (value >> 27)) * _MIX2) & MASK64
    return value ^ (value >> 31)


def uniform(key: int, salt: int, stream: int) -> float:
    """One uniform draw in [0, 1).

    >>> 0.0 <= uniform(draw_key(1, "req-1", "1"), name_hash("alpha"), STREAM_BID) < 1.0
    True
    """
    mixed = _splitmix((key ^ salt ^ ((stream * _GOLDEN) & MASK64)) & MASK64)
    return (mixed >> 11) * _TO_UNIT


def _mixes(keys: np.ndarray, salt: int, stream: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        value = keys ^ np.uint64(salt) ^ np.uint64((stream * _GOLDEN) & MASK64)
        value = value + np.uint64(_GOLDEN)
        value = (value ^ (value >> np.uint64(30))) * np.uint64(_MIX1)
        value = (value ^ (value >> np.uint64(27))) * np.uint64(_MIX2)
        return value ^ (value >> np.uint64(31))


def uniforms(keys: np.ndarray, salt: int, stream: int) -> np.ndarray:
    """`uniform` over an array of keys (uint64), bit-identical to the scalar form."""
    return (_mixes(keys, salt, stream) >> np.uint64(11)).astype(np.float64) * _TO_UNIT


def hashed_keys(seed: int, salt: str, count: int) -> np.ndarray:
    """`count` well-mixed 64-bit keys for the indices 0..count-1 of a named table."""
    keys = np.arange(count, dtype=np.uint64) ^ np.uint64(name_hash(f"{seed}\x1f{salt}"))
    return _mixes(keys, 0, 0)


def hashed_uniforms(seed: int, salt: str, count: int) -> np.ndarray:
    """`count` uniforms for the indices 0..count-1 of a named table (sites, users, ...)."""
    return (hashed_keys(seed, salt, count) >> np.uint64(11)).astype(np.float64) * _TO_UNIT


def hashed_normals(seed: int, salt: str, count: int) -> np.ndarray:
    """`count` standard normal draws for a named table (Box-Muller on hashed uniforms)."""
    first = hashed_uniforms(seed, salt + "/u1", count)
    second = hashed_uniforms(seed, salt + "/u2", count)
    return np.sqrt(-2.0 * np.log1p(-first)) * np.cos(2.0 * np.pi * second)
