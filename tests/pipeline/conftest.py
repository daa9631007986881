"""Fixtures of the ETL tests: event logs written through the real `EventLog` (rolled
segments and a not-yet-rolled tail) or in its segment layout, and one real local Spark."""

from __future__ import annotations

import os

import pytest

from openbid import clock

REQUIRE_SERVICES = os.environ.get("OPENBID_REQUIRE_SERVICES") == "1"
T0_MICROS = 1_800_000_000_000_000
"""A fixed market time the hand-written logs start at (2027-01-15T08:00Z)."""
S = 1_000_000


@pytest.fixture(scope="session")
def spark():
    """A real local Spark session (2 cores), shared by the session's tests."""
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        message = f"PySpark is not installed (pip install -e '.[spark]'): {exc}"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} (OPENBID_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    from openbid.pipeline import SparkEngine, stop_spark

    engine = SparkEngine("local[2]", shuffle_partitions=2)
    yield engine
    stop_spark()


@pytest.fixture
def market_clock():
    """Sets the process's clock to a market clock (an hour of market time per real second)
    starting at T0; gives it back and restores the real clock after."""
    market = clock.MarketClock(speed=3600.0, start_s=T0_MICROS / S)
    previous = clock.set_clock(market)
    yield market
    clock.set_clock(previous)
