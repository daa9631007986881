"""The shaping interface the exchange asks before fanning out.

A shaper sees the request's features and the eligible partners and says, for each, whether
to call it, with its score and the probability that it was sent (1 for a normal call, the
exploration share for an exploration call) so training can weight exploration rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import msgspec


class ShapingDecision(msgspec.Struct, frozen=True):
    dsp: str
    send: bool
    score: float = -1.0
    """The predicted bid probability; -1 when no model scored this call."""
    explored: bool = False
    send_probability: float = 1.0


class Shaper(Protocol):
    model_version: str

    def decide(self, features: Mapping[str, str], dsps: Sequence[str]) -> list[ShapingDecision]: ...


class PassThroughShaper:
    """Calls every eligible partner: the behaviour with no model."""

    model_version = ""

    def decide(self, features: Mapping[str, str], dsps: Sequence[str]) -> list[ShapingDecision]:
        return [ShapingDecision(dsp, True) for dsp in dsps]


class AsyncShaper(Protocol):
    """A shaper in another process (`openbid.shaping.service.RemoteShaper`): the same
    decisions, awaited, failing open when the service is unavailable."""

    model_version: str

    async def decide_async(
        self, features: Mapping[str, str], dsps: Sequence[str]
    ) -> list[ShapingDecision]: ...
