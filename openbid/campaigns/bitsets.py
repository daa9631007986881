"""Bitsets over (line item, creative) pairs as Python ints: one per targeting value, built
in one pass from position lists, and turned back into positions by one numba call."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _set_bit_positions(words: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Positions of the set bits of little-endian 64-bit words, in order."""
    one = np.uint64(1)
    count = 0
    for i in range(words.size):
        word = words[i]
        while word:
            word &= word - one
            count += 1
    out = np.empty(count, np.int32)
    k = 0
    for i in range(words.size):
        word = words[i]
        base = i * 64
        while word:
            low = word & (~word + one)
            bit = 0
            # Binary search for the one set bit of `low`: six steps.
            if low > np.uint64(0xFFFFFFFF):
                bit += 32
                low >>= np.uint64(32)
            if low > np.uint64(0xFFFF):
                bit += 16
                low >>= np.uint64(16)
            if low > np.uint64(0xFF):
                bit += 8
                low >>= np.uint64(8)
            if low > np.uint64(0xF):
                bit += 4
                low >>= np.uint64(4)
            if low > np.uint64(0x3):
                bit += 2
                low >>= np.uint64(2)
            if low > one:
                bit += 1
            out[k] = base + bit
            k += 1
            word &= word - one
    return out


def bit_positions(bits: int) -> np.ndarray:
    """The set bits of a non-negative int as an int32 array, in increasing order.

    >>> bit_positions(0b1010_0001).tolist(), bit_positions(1 << 200).tolist()
    ([0, 5, 7], [200])
    """
    if not bits:
        return np.empty(0, np.int32)
    words = (bits.bit_length() + 63) // 64
    return _set_bit_positions(np.frombuffer(bits.to_bytes(words * 8, "little"), np.uint64))


def bits_of(positions: Iterable[int], size: int) -> int:
    """An int with the given bits set (built in one pass, not bit by bit)."""
    flags = np.zeros(size, dtype=bool)
    flags[list(positions)] = True
    return int.from_bytes(np.packbits(flags, bitorder="little").tobytes(), "little")


class Dimension:
    """One dimension compiled: `include` is None when no pair targets it, `keep` empty when
    no pair excludes a value of it."""

    __slots__ = ("name", "any_bits", "include", "keep")

    def __init__(
        self, name: str, any_bits: int, include: dict[Any, int] | None, keep: dict[Any, int]
    ) -> None:
        self.name = name
        self.any_bits = any_bits
        self.include = include
        self.keep = keep


class DimensionBuilder:
    """Collects, per value, the positions of pairs that include or exclude it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.untargeted: list[int] = []
        self.included: dict[Any, list[int]] = defaultdict(list)
        self.excluded: dict[Any, list[int]] = defaultdict(list)

    def add(self, positions: Sequence[int], include: Iterable[Any], exclude: Iterable[Any]) -> None:
        targeted = False
        for value in dict.fromkeys(include):
            targeted = True
            self.included[value].extend(positions)
        if not targeted:
            self.untargeted.extend(positions)
        for value in dict.fromkeys(exclude):
            self.excluded[value].extend(positions)

    def build(self, size: int, all_bits: int) -> Dimension | None:
        if not self.included and not self.excluded:
            return None
        include = (
            {value: bits_of(positions, size) for value, positions in self.included.items()}
            if self.included
            else None
        )
        any_bits = bits_of(self.untargeted, size) if self.included else all_bits
        keep = {
            value: all_bits ^ bits_of(positions, size) for value, positions in self.excluded.items()
        }
        return Dimension(self.name, any_bits, include, keep)
