"""The shaping interface the exchange asks before fanning out.

A shaper sees the request's features and the eligible partners and says, for each, whether
to call it, with its score and the probability that it was sent (1 for a normal call, the
exploration share for an exploration call) so training can weight exploration rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import msgspec


class ShapingDecision(msgspec.Struct, frozen=True):
    dsp: str
    send: bool
    score: float = -1.0
    """The predicted bid probability; -1 when no model scored this call."""
    explored: bool = False
    send_probability: float = 1.0


@runtime_checkable
class Shaper(Protocol):
    """Everything the exchange asks of a shaper. In process (`PassThroughShaper`,
    `openbid.shaping.serving.ModelShaper`) or in another one
    (`openbid.shaping.service.RemoteShaper`); `tests/exchange/test_shaper_protocol.py` checks that
    each satisfies it.

    | member | who calls it | contract |
    | --- | --- | --- |
    | `decide_async(features, dsps)` | the exchange, once per auction | one decision per DSP, in the order of `dsps`; never raises (fails open: every DSP called) |
    | `decide(features, dsps)` | the shaping service, tools, tests | the same without awaiting; a remote shaper, which cannot answer without awaiting, fails open |
    | `observe(decision, bid)` | the exchange, once per call sent | what came back (`bid`: the DSP bid); quick, never raises; may do nothing |
    | `model_version` | the exchange, once per auction (logged) | the model deciding now; empty without one |
    """

    @property
    def model_version(self) -> str: ...

    def decide(self, features: Mapping[str, str], dsps: Sequence[str]) -> list[ShapingDecision]: ...

    async def decide_async(
        self, features: Mapping[str, str], dsps: Sequence[str]
    ) -> list[ShapingDecision]: ...

    def observe(self, decision: ShapingDecision, bid: bool) -> None: ...


class PassThroughShaper:
    """Calls every eligible partner: the behaviour with no model."""

    model_version = ""

    def decide(self, features: Mapping[str, str], dsps: Sequence[str]) -> list[ShapingDecision]:
        return [ShapingDecision(dsp, True) for dsp in dsps]

    async def decide_async(
        self, features: Mapping[str, str], dsps: Sequence[str]
    ) -> list[ShapingDecision]:
        return self.decide(features, dsps)

    def observe(self, decision: ShapingDecision, bid: bool) -> None:
        """Nothing to learn."""
