"""Fixtures of the insights tests: one real local Spark, shared by the session's tests."""

from __future__ import annotations

import os

import pytest

REQUIRE_SERVICES = os.environ.get("OPENBID_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session")
def spark():
    """A real local Spark session (2 cores)."""
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
