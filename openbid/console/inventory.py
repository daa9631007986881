"""The sell side and demand partners as the console administers them: publishers (floors,
blocks, API key rotation), their sites and apps, placements, demand partners, and the
images advertisers upload for their creatives. Writes go to the catalog's tables (the
exchange rereads them every `exchange.demand_refresh_s`)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from openbid.console.tables import AssetRow, SiteRow
from openbid.domain import DemandPartner, Placement, Publisher, hash_api_key
from openbid.stores.base import StoreError, StoreUnavailable
from openbid.stores.catalog import Catalog, DemandPartnerRow, PlacementRow, PublisherRow
from openbid.stores.sqlbase import UNAVAILABLE


class Site(msgspec.Struct, frozen=True, kw_only=True):
    """A publisher's site (a domain) or app (a bundle): what `targeting.sites` names."""

    id: str
    publisher_id: str
    kind: str
    domain: str
    name: str = ""


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    advertiser_id: str
    content_type: str
    width: int
    height: int
    data: bytes


def new_api_key() -> str:
    return "obp_" + secrets.token_urlsafe(32)


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


def _site(row: SiteRow) -> Site:
    return Site(
        id=row.id, publisher_id=row.publisher_id, kind=row.kind, domain=row.domain, name=row.name
    )


class Inventory:
    """Reads and writes of publishers, sites, placements, partners and assets."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._sessions = sessionmaker(catalog.engine, expire_on_commit=False)

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        try:
            with self._sessions() as session:
                if write:
                    with session.begin():
                        yield session
                else:
                    yield session
        except IntegrityError as exc:
            raise StoreError(f"catalog refused the change: {exc.orig}") from exc
        except UNAVAILABLE as exc:
            reason = getattr(exc, "orig", None) or exc
            raise StoreUnavailable(f"catalog at {self.catalog.engine.url!r}: {reason}") from exc

    # --- publishers
    def publishers(self, only: str | None = None) -> list[Publisher]:
        query = select(PublisherRow).order_by(PublisherRow.id)
        if only is not None:
            query = query.where(PublisherRow.id == only)
        with self._session() as session:
            return [_publisher(r) for r in session.scalars(query)]

    def publisher(self, publisher_id: str) -> Publisher | None:
        with self._session() as session:
            row = session.get(PublisherRow, publisher_id)
            return _publisher(row) if row else None

    def create_publisher(self, publisher: Publisher) -> str:
        """Adds the publisher; returns its API key (shown once: only its hash is kept)."""
        api_key = new_api_key()
        with self._session(write=True) as session:
            if session.get(PublisherRow, publisher.id) is not None:
                raise StoreError(f"publisher {publisher.id!r} exists")
            session.add(
                PublisherRow(
                    id=publisher.id,
                    name=publisher.name,
                    api_key_sha256=hash_api_key(api_key),
                    floor_micros=publisher.floor_micros,
                    blocked_categories=list(publisher.blocked_categories),
                    blocked_adomains=list(publisher.blocked_adomains),
                    created_at=datetime.now(UTC),
                )
            )
        return api_key

    def update_publisher(self, publisher_id: str, changes: dict[str, Any]) -> Publisher | None:
        with self._session(write=True) as session:
            row = session.get(PublisherRow, publisher_id)
            if row is None:
                return None
            for name, value in changes.items():
                setattr(row, name, list(value) if isinstance(value, tuple | list) else value)
            return _publisher(row)

    def rotate_api_key(self, publisher_id: str) -> str | None:
        """A new API key for the publisher (the old one stops working); None if unknown."""
        api_key = new_api_key()
        with self._session(write=True) as session:
            row = session.get(PublisherRow, publisher_id)
            if row is None:
                return None
            row.api_key_sha256 = hash_api_key(api_key)
        return api_key

    def delete_publisher(self, publisher_id: str) -> bool:
        with self._session(write=True) as session:
            return bool(
                session.execute(
                    delete(PublisherRow).where(PublisherRow.id == publisher_id)
                ).rowcount
            )

    # --- sites and apps
    def sites(self, publisher_id: str | None = None) -> list[Site]:
        query = select(SiteRow).order_by(SiteRow.id)
        if publisher_id is not None:
            query = query.where(SiteRow.publisher_id == publisher_id)
        with self._session() as session:
            return [_site(r) for r in session.scalars(query)]

    def site(self, site_id: str) -> Site | None:
        with self._session() as session:
            row = session.get(SiteRow, site_id)
            return _site(row) if row else None

    def put_site(self, site: Site, *, create: bool) -> Site:
        with self._session(write=True) as session:
            if create and session.get(SiteRow, site.id) is not None:
                raise StoreError(f"site {site.id!r} exists")
            session.merge(SiteRow(**msgspec.structs.asdict(site)))
        return site

    def delete_site(self, site_id: str) -> bool:
        with self._session(write=True) as session:
            return bool(session.execute(delete(SiteRow).where(SiteRow.id == site_id)).rowcount)

    # --- placements
    def placements(self, publisher_id: str | None = None) -> list[Placement]:
        query = select(PlacementRow).order_by(PlacementRow.id)
        if publisher_id is not None:
            query = query.where(PlacementRow.publisher_id == publisher_id)
        with self._session() as session:
            return [_placement(r) for r in session.scalars(query)]

    def placement(self, placement_id: str) -> Placement | None:
        with self._session() as session:
            row = session.get(PlacementRow, placement_id)
            return _placement(row) if row else None

    def put_placement(self, placement: Placement, *, create: bool) -> Placement:
        with self._session(write=True) as session:
            if create and session.get(PlacementRow, placement.id) is not None:
                raise StoreError(f"placement {placement.id!r} exists")
            session.merge(
                PlacementRow(
                    id=placement.id,
                    publisher_id=placement.publisher_id,
                    name=placement.name,
                    media=placement.media,
                    sizes=[list(size) for size in placement.sizes],
                    floor_micros=placement.floor_micros,
                    site_domain=placement.site_domain,
                )
            )
        return placement

    def delete_placement(self, placement_id: str) -> bool:
        with self._session(write=True) as session:
            return bool(
                session.execute(
                    delete(PlacementRow).where(PlacementRow.id == placement_id)
                ).rowcount
            )

    # --- demand partners
    def partners(self) -> list[DemandPartner]:
        return self.catalog.demand_partners(enabled_only=False)

    def partner(self, partner_id: str) -> DemandPartner | None:
        with self._session() as session:
            row = session.get(DemandPartnerRow, partner_id)
            return (
                DemandPartner(**{k: getattr(row, k) for k in DemandPartner.__struct_fields__})
                if row
                else None
            )

    def put_partner(self, partner: DemandPartner, *, create: bool) -> DemandPartner:
        with self._session(write=True) as session:
            if create and session.get(DemandPartnerRow, partner.id) is not None:
                raise StoreError(f"demand partner {partner.id!r} exists")
            session.merge(DemandPartnerRow(**msgspec.structs.asdict(partner)))
        return partner

    def delete_partner(self, partner_id: str) -> bool:
        with self._session(write=True) as session:
            return bool(
                session.execute(
                    delete(DemandPartnerRow).where(DemandPartnerRow.id == partner_id)
                ).rowcount
            )

    # --- uploaded images
    def put_asset(
        self, advertiser_id: str, content_type: str, width: int, height: int, data: bytes
    ) -> str:
        """Stores an image; its id is its content's SHA-256 (the same image twice is one)."""
        asset_id = hashlib.sha256(data).hexdigest()
        with self._session(write=True) as session:
            if session.get(AssetRow, asset_id) is None:
                session.add(
                    AssetRow(
                        id=asset_id,
                        advertiser_id=advertiser_id,
                        content_type=content_type,
                        width=width,
                        height=height,
                        data=data,
                        created_at=datetime.now(UTC),
                    )
                )
        return asset_id

    def asset(self, asset_id: str) -> Asset | None:
        with self._session() as session:
            row = session.get(AssetRow, asset_id)
            if row is None:
                return None
            return Asset(
                id=row.id,
                advertiser_id=row.advertiser_id,
                content_type=row.content_type,
                width=row.width,
                height=row.height,
                data=row.data,
            )
