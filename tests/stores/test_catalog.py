"""One suite for every Catalog backend: SQLite file and real PostgreSQL, via migrations."""

import secrets

import pytest
import sqlalchemy

from openbid.stores import Catalog, DemandPartner, Placement, StoreError, StoreUnavailable
from openbid.stores.catalog import MIGRATIONS_DIR
from tests.conftest import drop_catalog_tables


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/catalog.db"
    else:
        url = request.getfixturevalue("postgres_url")
    catalog = Catalog(url)
    catalog.migrate()
    yield catalog
    if request.param == "postgresql":
        drop_catalog_tables(catalog.engine)
    catalog.close()


def test_publishers_by_api_key(catalog):
    catalog.add_publisher(
        "pub-1", "Daily News", api_key="k-1", floor_micros=150_000, blocked_categories=("IAB25",)
    )
    catalog.add_publisher("pub-2", "Games", api_key="k-2")
    publisher = catalog.publisher_by_api_key("k-1")
    assert publisher is not None
    assert (publisher.id, publisher.floor_micros, publisher.blocked_categories) == (
        "pub-1",
        150_000,
        ("IAB25",),
    )
    assert catalog.publisher_by_api_key("k-3") is None
    assert set(p.id for p in catalog.api_keys().values()) == {"pub-1", "pub-2"}
    assert catalog.publisher("pub-2").name == "Games"


def test_duplicate_api_key_is_refused(catalog):
    catalog.add_publisher("pub-1", "A", api_key="same")
    with pytest.raises(StoreError, match="catalog refused publishers"):
        catalog.add_publisher("pub-2", "B", api_key="same")


def test_placements(catalog):
    catalog.add_publisher("pub-1", "A", api_key="k")
    catalog.add_placement(
        Placement("pl-2", "pub-1", "sidebar", sizes=((300, 250), (300, 600)), floor_micros=10)
    )
    catalog.add_placement(Placement("pl-1", "pub-1", "top", media="video"))
    assert [p.id for p in catalog.placements("pub-1")] == ["pl-1", "pl-2"]
    assert catalog.placement("pl-2").sizes == ((300, 250), (300, 600))
    assert catalog.placement("nope") is None


def test_placement_needs_its_publisher(catalog):
    with pytest.raises(StoreError):
        catalog.add_placement(Placement("pl-1", "missing", "top"))


def test_demand_partners_upsert_and_enabled_filter(catalog):
    catalog.upsert_demand_partner(DemandPartner("dsp-a", "http://127.0.0.1:9001/bid", vendor_id=52))
    catalog.upsert_demand_partner(
        DemandPartner("dsp-b", "http://127.0.0.1:9002/bid", enabled=False)
    )
    catalog.upsert_demand_partner(
        DemandPartner(
            "dsp-a", "http://127.0.0.1:9001/bid", vendor_id=52, timeout_ms=80, qps_cap=500
        )
    )
    partners = catalog.demand_partners()
    assert [(p.id, p.timeout_ms, p.qps_cap, p.vendor_id) for p in partners] == [
        ("dsp-a", 80, 500, 52)
    ]
    assert len(catalog.demand_partners(enabled_only=False)) == 2


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def test_migrate_builds_the_schema_at_the_head_revision(catalog):
    inspector = sqlalchemy.inspect(catalog.engine)
    assert {"publishers", "placements", "demand_partners", "alembic_version"} <= set(
        inspector.get_table_names()
    )
    columns = {c["name"] for c in inspector.get_columns("demand_partners")}
    assert columns == {
        "id", "endpoint", "seat", "vendor_id", "timeout_ms", "qps_cap", "bid_adjustment",
        "gzip", "enabled",
    }  # fmt: skip
    assert [fk["referred_table"] for fk in inspector.get_foreign_keys("placements")] == [
        "publishers"
    ]
    with catalog.engine.connect() as connection:
        versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    assert versions == [(_head_revision(),)]
    # The API key column is unique: a second publisher with the same key is refused.
    catalog.add_publisher("pub-1", "A", api_key="same")
    with pytest.raises(StoreError):
        catalog.add_publisher("pub-2", "B", api_key="same")


def test_migrating_again_keeps_the_data_and_the_revision(catalog):
    catalog.add_publisher("pub-1", "A", api_key="k", floor_micros=250_000)
    catalog.migrate()
    publisher = catalog.publisher_by_api_key("k")
    assert (publisher.id, publisher.name, publisher.floor_micros) == ("pub-1", "A", 250_000)
    with catalog.engine.connect() as connection:
        versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    assert versions == [(_head_revision(),)]


def test_unreachable_database_is_store_unavailable():
    catalog = Catalog("postgresql://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    with pytest.raises(StoreUnavailable, match="catalog at"):
        catalog.migrate()


READS = {
    "publisher": lambda c: c.publisher("pub-1"),
    "publisher_by_api_key": lambda c: c.publisher_by_api_key("k"),
    "placement": lambda c: c.placement("pl-1"),
    "placements": lambda c: c.placements("pub-1"),
    "demand_partners": lambda c: c.demand_partners(),
    "all_demand_partners": lambda c: c.demand_partners(enabled_only=False),
    "api_keys": lambda c: c.api_keys(),
}


def test_reads_from_a_missing_schema_are_store_unavailable(catalog):
    """A table gone (a restore in progress, a failover to an empty replica) fails each read with
    `StoreUnavailable` (SQLite: OperationalError, PostgreSQL: ProgrammingError underneath)."""
    catalog.add_publisher("pub-1", "A", api_key="k")
    drop_catalog_tables(catalog.engine)
    for name, read in READS.items():
        with pytest.raises(StoreUnavailable, match="catalog at"):
            read(catalog)
            pytest.fail(f"{name} did not raise")
    with pytest.raises(StoreUnavailable, match="catalog at"):
        catalog.add_publisher("pub-2", "B", api_key="k2")
    with pytest.raises(StoreUnavailable, match="catalog at"):
        catalog.upsert_demand_partner(DemandPartner("dsp-a", "http://127.0.0.1:9001/bid"))


def test_reads_from_an_unreachable_database_are_store_unavailable():
    catalog = Catalog("postgresql://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    for name, read in READS.items():
        with pytest.raises(StoreUnavailable, match="catalog at"):
            read(catalog)
            pytest.fail(f"{name} did not raise")
    catalog.close()


def test_a_dropped_postgresql_connection_costs_no_read(postgres_url):
    """The server ends our pooled connection (a restart, an idle timeout, a failover): the pool
    checks a connection before lending it, so the next read works on a fresh one."""
    import psycopg

    application = f"openbid-test-{secrets.token_hex(4)}"
    catalog = Catalog(postgres_url, connect_args={"application_name": application})
    catalog.migrate()
    try:
        catalog.add_publisher("pub-1", "A", api_key="k")
        assert catalog.publisher("pub-1") is not None  # a connection now waits in the pool
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (application,),
            ).fetchone()
        assert ended == (1,)
        assert catalog.publisher("pub-1") is not None
    finally:
        drop_catalog_tables(catalog.engine)
        catalog.close()
