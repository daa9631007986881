"""Shared fixtures: the real Redis and PostgreSQL on 127.0.0.1.

Tests of those backends run for real. When a service is missing they are skipped on a
developer's machine, but fail when `OPENBID_REQUIRE_SERVICES=1` (as `.ci/run` sets it).
"""

import os
import secrets

import pytest
from hypothesis import settings

# Property tests are seeded like every other random test: the same examples on every run, so
# CI is reproducible; a new case is found by raising max_examples locally, not by chance in CI.
settings.register_profile("openbid", derandomize=True, database=None, deadline=None)
settings.load_profile(os.environ.get("OPENBID_HYPOTHESIS_PROFILE", "openbid"))

REDIS_URL = os.environ.get("OPENBID_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "OPENBID_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_SERVICES = os.environ.get("OPENBID_REQUIRE_SERVICES") == "1"


def _unavailable(service: str, reason: str) -> None:
    message = f"{service} is not reachable: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (OPENBID_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable("Redis", str(exc))
    finally:
        client.close()
    return REDIS_URL


def drop_catalog_tables(engine) -> None:
    """Drops every table of the schema `engine` uses, in foreign-key order, as it is in the
    database (the migrations create tables of several packages: the catalog's, the buy
    side's, the console's, which reference one another) and alembic's version table."""
    import sqlalchemy

    tables = sqlalchemy.MetaData()
    tables.reflect(engine)
    tables.drop_all(engine)


@pytest.fixture(scope="session")
def postgres_url():
    """A URL whose connections use a fresh schema, dropped after the session."""
    import psycopg

    conninfo = POSTGRES_URL
    schema = f"openbid_test_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(conninfo, connect_timeout=2, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        _unavailable("PostgreSQL", str(exc))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
