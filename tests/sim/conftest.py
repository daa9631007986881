"""Shared fixtures: the shipped markets (compiled once) and small markets built for a test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from openbid.sim import Market
from openbid.sim.config import load_market_config, parse_market


@pytest.fixture(scope="session")
def market() -> Market:
    return Market.load("default")


@pytest.fixture(scope="session")
def hard_market() -> Market:
    return Market.load("hard")


@pytest.fixture(scope="session")
def market_data() -> Callable[[], dict[str, Any]]:
    """A fresh, mutable copy of the default market's data (to derive test markets from)."""
    data = msgspec.to_builtins(load_market_config("default"))

    def copy() -> dict[str, Any]:
        return msgspec.json.decode(msgspec.json.encode(data))

    return copy


@pytest.fixture(scope="session")
def faulty_market(market_data) -> Market:
    """The default market with a DSP whose every request is one of the five faults."""
    data = market_data()
    data["traffic"]["users"] = 5000
    data["traffic"]["sites"] = 2000
    data["traffic"]["apps"] = 500
    dsp = data["dsps"][5]
    dsp["faults"] = {
        "timeout": 0.2,
        "http_5xx": 0.2,
        "malformed_json": 0.2,
        "slow_body": 0.2,
        "connection_reset": 0.2,
        "timeout_ms": 300.0,
        "slow_body_ms": 80.0,
    }
    dsp["bid_model"]["base_logit"] = 3.0
    dsp["bid_model"]["weights"] = {}
    dsp["latency"] = {"median_ms": 5.0, "shape": 4.0, "max_ms": 20.0}
    return Market(parse_market(data, "faulty"))
