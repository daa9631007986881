"""The catalog: publishers, their placements and API keys, and demand partners (SQLAlchemy 2).

One code path for SQLite (the embedded default) and PostgreSQL; the schema is owned by
Alembic migrations (`Catalog.migrate()`). Reads return plain immutable records, detached
from any session, so servers can cache them on the hot path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from openbid.domain import DemandPartner, Placement, Publisher, hash_api_key
from openbid.stores.base import StoreError, StoreUnavailable
from openbid.stores.sqlbase import UNAVAILABLE as _UNAVAILABLE
from openbid.stores.sqlbase import Base

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class PublisherRow(Base):
    __tablename__ = "publishers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    api_key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    floor_micros: Mapped[int] = mapped_column(Integer, default=0)
    blocked_categories: Mapped[list] = mapped_column(JSON, default=list)
    blocked_adomains: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PlacementRow(Base):
    __tablename__ = "placements"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    publisher_id: Mapped[str] = mapped_column(ForeignKey("publishers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    media: Mapped[str] = mapped_column(String(16), default="banner")
    sizes: Mapped[list] = mapped_column(JSON, default=list)
    floor_micros: Mapped[int] = mapped_column(Integer, default=0)
    site_domain: Mapped[str] = mapped_column(String(253), default="")


class DemandPartnerRow(Base):
    __tablename__ = "demand_partners"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(2000))
    seat: Mapped[str] = mapped_column(String(64), default="")
    vendor_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    timeout_ms: Mapped[int] = mapped_column(Integer, default=120)
    qps_cap: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bid_adjustment: Mapped[float] = mapped_column(Float, default=1.0)
    gzip: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


def _publisher(row: PublisherRow) -> Publisher:
    return Publisher(
        row.id,
        row.name,
        row.floor_micros,
        tuple(row.blocked_categories or ()),
        tuple(row.blocked_adomains or ()),
    )


def _placement(row: PlacementRow) -> Placement:
    return Placement(
        row.id,
        row.publisher_id,
        row.name,
        row.media,
        tuple((int(w), int(h)) for w, h in row.sizes or ()),
        row.floor_micros,
        row.site_domain,
    )


def _partner(row: DemandPartnerRow) -> DemandPartner:
    return DemandPartner(
        row.id,
        row.endpoint,
        row.seat,
        row.vendor_id,
        row.timeout_ms,
        row.qps_cap,
        row.bid_adjustment,
        row.gzip,
        row.enabled,
    )


def _enable_sqlite_foreign_keys(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


class Catalog:
    """Publishers, placements and demand partners in a SQL database (the buy side's
    advertisers, campaigns, line items and creatives: `openbid.campaigns.store.CampaignCatalog`,
    this class with their tables, in the same database).

    Every read and write raises `StoreUnavailable` when the database cannot answer (down,
    restarting, a dropped connection or table), never a driver exception.

    >>> catalog = Catalog("sqlite://")
    >>> catalog.migrate()
    >>> catalog.add_publisher("pub-1", "News Site", api_key="secret-key", floor_micros=200_000)
    >>> catalog.publisher_by_api_key("secret-key").name
    'News Site'
    >>> catalog.publisher_by_api_key("wrong") is None
    True
    """

    def __init__(self, url: str = "sqlite:///var/openbid.db", **engine_options: object) -> None:
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            directory = os.path.dirname(url.removeprefix("sqlite:///"))
            if directory:
                os.makedirs(directory, exist_ok=True)
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        self.url = url
        # A pooled connection the server has ended (a restart, an idle timeout, a failover) is
        # found by a ping when it is lent and replaced, instead of failing the next read. The
        # catalog is read on refreshes and admin calls, never per auction: a round trip each
        # is cheap.
        engine_options.setdefault("pool_pre_ping", True)
        self.engine = create_engine(url, **engine_options)  # type: ignore[arg-type]
        if self.engine.dialect.name == "sqlite":
            _enable_sqlite_foreign_keys(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self, revision: str = "head") -> None:
        """Brings the schema to `revision` with Alembic."""
        from alembic import command
        from alembic.config import Config as AlembicConfig

        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self._errors_as_unavailable(), self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    @contextmanager
    def _errors_as_unavailable(self) -> Iterator[None]:
        """Every database error becomes `StoreUnavailable`, which callers degrade on (a refresh
        keeps its last catalog and retries) instead of dying on a driver exception."""
        try:
            yield
        except _UNAVAILABLE as exc:
            reason = getattr(exc, "orig", None) or exc
            raise StoreUnavailable(f"catalog at {self.engine.url!r}: {reason}") from exc

    def _session(self) -> Session:
        return self._sessions()

    def _write(self, row: Base) -> None:
        with self._errors_as_unavailable():
            try:
                with self._session() as session, session.begin():
                    session.add(row)
            except IntegrityError as exc:
                table = type(row).__tablename__
                raise StoreError(f"catalog refused {table}: {exc.orig}") from exc

    def add_publisher(
        self,
        publisher_id: str,
        name: str,
        *,
        api_key: str,
        floor_micros: int = 0,
        blocked_categories: tuple[str, ...] = (),
        blocked_adomains: tuple[str, ...] = (),
    ) -> None:
        self._write(
            PublisherRow(
                id=publisher_id,
                name=name,
                api_key_sha256=hash_api_key(api_key),
                floor_micros=floor_micros,
                blocked_categories=list(blocked_categories),
                blocked_adomains=list(blocked_adomains),
                created_at=datetime.now(UTC),
            )
        )

    def add_placement(self, placement: Placement) -> None:
        self._write(
            PlacementRow(
                id=placement.id,
                publisher_id=placement.publisher_id,
                name=placement.name,
                media=placement.media,
                sizes=[list(s) for s in placement.sizes],
                floor_micros=placement.floor_micros,
                site_domain=placement.site_domain,
            )
        )

    def upsert_demand_partner(self, partner: DemandPartner) -> None:
        with self._errors_as_unavailable(), self._session() as session, session.begin():
            session.merge(DemandPartnerRow(**msgspec.structs.asdict(partner)))

    def publisher(self, publisher_id: str) -> Publisher | None:
        with self._errors_as_unavailable(), self._session() as session:
            row = session.get(PublisherRow, publisher_id)
            return _publisher(row) if row else None

    def publisher_by_api_key(self, api_key: str) -> Publisher | None:
        with self._errors_as_unavailable(), self._session() as session:
            row = session.scalars(
                select(PublisherRow).where(PublisherRow.api_key_sha256 == hash_api_key(api_key))
            ).first()
            return _publisher(row) if row else None

    def placement(self, placement_id: str) -> Placement | None:
        with self._errors_as_unavailable(), self._session() as session:
            row = session.get(PlacementRow, placement_id)
            return _placement(row) if row else None

    def placements(self, publisher_id: str) -> list[Placement]:
        with self._errors_as_unavailable(), self._session() as session:
            rows = session.scalars(
                select(PlacementRow)
                .where(PlacementRow.publisher_id == publisher_id)
                .order_by(PlacementRow.id)
            )
            return [_placement(r) for r in rows]

    def demand_partners(self, *, enabled_only: bool = True) -> list[DemandPartner]:
        with self._errors_as_unavailable(), self._session() as session:
            query = select(DemandPartnerRow).order_by(DemandPartnerRow.id)
            if enabled_only:
                query = query.where(DemandPartnerRow.enabled.is_(True))
            return [_partner(r) for r in session.scalars(query)]

    def api_keys(self) -> dict[str, Publisher]:
        """Every publisher by its hashed API key, for a server's in-memory cache."""
        with self._errors_as_unavailable(), self._session() as session:
            return {r.api_key_sha256: _publisher(r) for r in session.scalars(select(PublisherRow))}

    def close(self) -> None:
        self.engine.dispose()
