"""Every shaper satisfies the `Shaper` protocol the exchange calls (no `getattr` probes):
the members exist, with the protocol's parameters, async where it is async; and the
exchange runs auctions with each, telling it what came back."""

from __future__ import annotations

import asyncio
import inspect
import socket

import pytest

from openbid.domain import DemandPartner
from openbid.http.client import FanoutClient
from openbid.shaping import ModelShaper, PassThroughShaper, Shaper, ShapingDecision
from openbid.shaping.service import RemoteShaper

from .test_hostile_dsps import Dsp, bid_response, make_exchange, request

MEMBERS = ("decide", "decide_async", "observe")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _shapers():
    return {
        "pass-through": PassThroughShaper(),
        "model": ModelShaper(None, name="protocol-test"),
        "remote": RemoteShaper(f"http://127.0.0.1:{_closed_port()}", FanoutClient()),
    }


def _parameters(function) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name != "self"]


@pytest.mark.parametrize("name", ["pass-through", "model", "remote"])
def test_each_shaper_satisfies_the_protocol_member_by_member(name):
    shaper = _shapers()[name]
    assert isinstance(shaper, Shaper)
    assert isinstance(shaper.model_version, str)
    for member in MEMBERS:
        ours, declared = getattr(shaper, member), getattr(Shaper, member)
        assert _parameters(ours) == _parameters(declared), member
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(declared), member


def test_a_shaper_missing_a_member_the_exchange_calls_is_not_a_shaper():
    class NoObserve:
        model_version = ""

        def decide(self, features, dsps):
            return [ShapingDecision(d, True) for d in dsps]

        async def decide_async(self, features, dsps):
            return self.decide(features, dsps)

    assert not isinstance(NoObserve(), Shaper)


@pytest.mark.parametrize("name", ["pass-through", "model", "remote"])
def test_the_exchange_runs_with_each_shaper_and_tells_it_who_bid(name):
    shaper = _shapers()[name]
    observed = []
    observe = shaper.observe

    def watch(decision, bid):
        observed.append((decision.dsp, bid))
        observe(decision, bid)

    shaper.observe = watch  # type: ignore[method-assign]

    async def main():
        async def answer(body):
            return bid_response(body, price=1.0)

        dsp = await Dsp(answer).start()
        exchange = make_exchange([DemandPartner("d1", dsp.url)], shaper)
        outcome = await exchange.auction(request(), None, started=asyncio.get_running_loop().time())
        await dsp.server.stop()
        return outcome

    outcome = asyncio.run(main())
    assert [winner.dsp for winner in outcome.winners] == ["d1"]  # a failing remote fails open
    assert observed == [("d1", True)]
    if isinstance(shaper, ModelShaper):
        assert shaper.outcomes[("d1", "called_bid")] == 1
