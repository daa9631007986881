"""Auction ids: unique across processes and restarts, without a syscall per id.

`secrets.token_hex` reads the kernel's random source on every call (a syscall, ~3% of an
auction's CPU). Ids need to be unique, not secret (the trackers that carry them are signed),
so each process draws a random prefix once and counts.
"""

from __future__ import annotations

import itertools
import secrets


class IdSource:
    """`next()` gives `<16 random hex chars of this process><counter in hex>`.

    >>> ids = IdSource(prefix="ab")
    >>> ids.next(), ids.next()
    ('ab0', 'ab1')
    >>> len(IdSource().next())
    17
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = secrets.token_hex(8) if prefix is None else prefix
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"
