"""The buy side's tables in the catalog: advertisers, campaigns, line items (and the creatives
each uses), creatives, and a revision number that every change bumps.

`CampaignCatalog` is the `Catalog` (`openbid/stores/catalog.py`) with these tables: it uses
the catalog's engine, sessions and error handling, and the same Alembic migrations create
them. Writes are upserts by id, validated first
(`InvalidRecord` names each bad field) and skipped when nothing changed, so importing the
same file twice changes nothing, not even the revision that readers poll.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import msgspec
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openbid.campaigns.model import (
    Advertiser,
    Campaign,
    CampaignSet,
    Creative,
    LineItem,
)
from openbid.campaigns.rows import (
    REVISION_NAME,
    AdvertiserRow,
    CampaignRow,
    CatalogRevisionRow,
    CreativeRow,
    LineItemCreativeRow,
    LineItemRow,
    advertiser_record,
    advertiser_row,
    campaign_record,
    campaign_row,
    creative_record,
    creative_row,
    line_item_record,
    line_item_row,
)
from openbid.campaigns.validate import (
    InvalidRecord,
    advertiser_errors,
    campaign_errors,
    creative_errors,
    line_item_errors,
    line_item_reference_errors,
)
from openbid.stores.base import StoreError
from openbid.stores.catalog import Catalog


class ApplyCounts(msgspec.Struct):
    """What a write did, per outcome: records created, updated, and left as they were."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def changed(self) -> int:
        return self.created + self.updated


def _check(kind: str, record_id: str, errors: list) -> None:
    if errors:
        raise InvalidRecord(kind, record_id, errors)


class CampaignCatalog(Catalog):
    """`Catalog` with the buy side's records (see the module docstring). Every method raises
    `StoreUnavailable` when the database cannot answer, `InvalidRecord` for a record that
    fails validation (its own fields, or its references: a line item's campaign and
    creatives), and `StoreError` for what the database refuses (an advertiser that does not
    exist)."""

    # Writes

    def upsert_advertiser(self, advertiser: Advertiser) -> ApplyCounts:
        return self.apply_campaign_set(CampaignSet(advertisers=(advertiser,)))

    def upsert_campaign(self, campaign: Campaign) -> ApplyCounts:
        return self.apply_campaign_set(CampaignSet(campaigns=(campaign,)))

    def upsert_line_item(self, line_item: LineItem) -> ApplyCounts:
        return self.apply_campaign_set(CampaignSet(line_items=(line_item,)))

    def upsert_creative(self, creative: Creative) -> ApplyCounts:
        return self.apply_campaign_set(CampaignSet(creatives=(creative,)))

    def apply_campaign_set(self, records: CampaignSet) -> ApplyCounts:
        """Upserts every record of `records` in one transaction (advertisers, creatives,
        campaigns, then line items), or none of them if one is refused."""
        for advertiser in records.advertisers:
            _check("advertiser", advertiser.id, advertiser_errors(advertiser))
        for campaign in records.campaigns:
            _check("campaign", campaign.id, campaign_errors(campaign))
        for creative in records.creatives:
            _check("creative", creative.id, creative_errors(creative))
        for line_item in records.line_items:
            _check("line item", line_item.id, line_item_errors(line_item))
        counts = ApplyCounts()
        with self._errors_as_unavailable():
            try:
                with self._session() as session, session.begin():
                    for advertiser in records.advertisers:
                        if _changes(session, counts, AdvertiserRow, advertiser, advertiser_record):
                            session.merge(advertiser_row(advertiser))
                    for creative in records.creatives:
                        if _changes(session, counts, CreativeRow, creative, creative_record):
                            session.merge(creative_row(creative))
                    for campaign in records.campaigns:
                        if _changes(session, counts, CampaignRow, campaign, campaign_record):
                            session.merge(campaign_row(campaign))
                    session.flush()
                    for line_item in records.line_items:
                        self._put_line_item(session, counts, line_item)
                    if counts.changed:
                        _bump_revision(session)
            except IntegrityError as exc:
                raise StoreError(f"catalog refused a campaign record: {exc.orig}") from exc
        return counts

    def _put_line_item(self, session: Session, counts: ApplyCounts, line_item: LineItem) -> None:
        found = session.get(CampaignRow, line_item.campaign_id)
        campaign = campaign_record(found) if found is not None else None
        creatives: dict[str, Creative | None] = {}
        for creative_id in line_item.creative_ids:
            row = session.get(CreativeRow, creative_id)
            creatives[creative_id] = creative_record(row) if row is not None else None
        _check(
            "line item",
            line_item.id,
            line_item_reference_errors(line_item, campaign, creatives),
        )
        existing = session.get(LineItemRow, line_item.id)
        if existing is not None:
            if line_item_record(existing, _creative_ids(session, line_item.id)) == line_item:
                counts.unchanged += 1
                return
            counts.updated += 1
        else:
            counts.created += 1
        session.merge(line_item_row(line_item))
        session.execute(
            delete(LineItemCreativeRow).where(LineItemCreativeRow.line_item_id == line_item.id)
        )
        session.add_all(
            LineItemCreativeRow(line_item_id=line_item.id, creative_id=creative_id, position=i)
            for i, creative_id in enumerate(line_item.creative_ids)
        )

    def _delete(self, row_type, record_id: str) -> bool:  # type: ignore[no-untyped-def]
        with self._errors_as_unavailable(), self._session() as session, session.begin():
            deleted = session.execute(delete(row_type).where(row_type.id == record_id)).rowcount
            if deleted:
                _bump_revision(session)
            return bool(deleted)

    def delete_advertiser(self, advertiser_id: str) -> bool:
        """Deletes the advertiser with its campaigns, line items and creatives."""
        return self._delete(AdvertiserRow, advertiser_id)

    def delete_campaign(self, campaign_id: str) -> bool:
        """Deletes the campaign with its line items."""
        return self._delete(CampaignRow, campaign_id)

    def delete_line_item(self, line_item_id: str) -> bool:
        return self._delete(LineItemRow, line_item_id)

    def delete_creative(self, creative_id: str) -> bool:
        """Deletes the creative; line items that used it keep their other creatives."""
        return self._delete(CreativeRow, creative_id)

    # Reads

    def campaign_revision(self) -> int:
        """A number every change to the buy side's records increases: poll it to know when
        to rebuild what was compiled from them."""
        with self._errors_as_unavailable(), self._session() as session:
            return _revision(session)

    def advertiser(self, advertiser_id: str) -> Advertiser | None:
        with self._errors_as_unavailable(), self._session() as session:
            row = session.get(AdvertiserRow, advertiser_id)
            return advertiser_record(row) if row else None

    def advertisers(self) -> list[Advertiser]:
        with self._errors_as_unavailable(), self._session() as session:
            return [
                advertiser_record(r) for r in session.scalars(select(AdvertiserRow).order_by("id"))
            ]

    def campaign(self, campaign_id: str) -> Campaign | None:
        with self._errors_as_unavailable(), self._session() as session:
            row = session.get(CampaignRow, campaign_id)
            return campaign_record(row) if row else None

    def campaigns(self, advertiser_id: str | None = None) -> list[Campaign]:
        query = select(CampaignRow).order_by(CampaignRow.id)
        if advertiser_id is not None:
            query = query.where(CampaignRow.advertiser_id == advertiser_id)
        with self._errors_as_unavailable(), self._session() as session:
            return [campaign_record(r) for r in session.scalars(query)]

    def line_item(self, line_item_id: str) -> LineItem | None:
        with self._errors_as_unavailable(), self._session() as session:
            row = session.get(LineItemRow, line_item_id)
            return line_item_record(row, _creative_ids(session, line_item_id)) if row else None

    def line_items(self, campaign_id: str | None = None) -> list[LineItem]:
        query = select(LineItemRow).order_by(LineItemRow.id)
        if campaign_id is not None:
            query = query.where(LineItemRow.campaign_id == campaign_id)
        with self._errors_as_unavailable(), self._session() as session:
            rows = list(session.scalars(query))
            by_line_item = _all_creative_ids(session)
            return [line_item_record(r, by_line_item.get(r.id, ())) for r in rows]

    def creative(self, creative_id: str) -> Creative | None:
        with self._errors_as_unavailable(), self._session() as session:
            row = session.get(CreativeRow, creative_id)
            return creative_record(row) if row else None

    def creatives(self, advertiser_id: str | None = None) -> list[Creative]:
        query = select(CreativeRow).order_by(CreativeRow.id)
        if advertiser_id is not None:
            query = query.where(CreativeRow.advertiser_id == advertiser_id)
        with self._errors_as_unavailable(), self._session() as session:
            return [creative_record(r) for r in session.scalars(query)]

    def campaign_set(self) -> CampaignSet:
        """Every buy-side record and the revision they are at, read in one snapshot (a
        repeatable-read transaction on PostgreSQL; SQLite transactions are serializable)."""
        with self._errors_as_unavailable(), self._snapshot() as session:
            revision = _revision(session)
            by_line_item = _all_creative_ids(session)
            return CampaignSet(
                advertisers=tuple(
                    advertiser_record(r)
                    for r in session.scalars(select(AdvertiserRow).order_by("id"))
                ),
                campaigns=tuple(
                    campaign_record(r) for r in session.scalars(select(CampaignRow).order_by("id"))
                ),
                line_items=tuple(
                    line_item_record(r, by_line_item.get(r.id, ()))
                    for r in session.scalars(select(LineItemRow).order_by("id"))
                ),
                creatives=tuple(
                    creative_record(r) for r in session.scalars(select(CreativeRow).order_by("id"))
                ),
                revision=revision,
            )

    def _snapshot(self) -> AbstractContextManager[Session]:
        return _snapshot(self.engine)


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Session]:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(isolation_level="REPEATABLE READ")
        with Session(bind=connection) as session, session.begin():
            yield session


def _changes(session: Session, counts: ApplyCounts, row_type, record, to_record) -> bool:  # type: ignore[no-untyped-def]
    """Counts the upsert of `record` and says whether it changes anything."""
    row = session.get(row_type, record.id)
    if row is None:
        counts.created += 1
        return True
    if to_record(row) == record:
        counts.unchanged += 1
        return False
    counts.updated += 1
    return True


def _creative_ids(session: Session, line_item_id: str) -> tuple[str, ...]:
    return tuple(
        session.scalars(
            select(LineItemCreativeRow.creative_id)
            .where(LineItemCreativeRow.line_item_id == line_item_id)
            .order_by(LineItemCreativeRow.position)
        )
    )


def _all_creative_ids(session: Session) -> dict[str, tuple[str, ...]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    rows = session.execute(
        select(LineItemCreativeRow.line_item_id, LineItemCreativeRow.creative_id).order_by(
            LineItemCreativeRow.line_item_id, LineItemCreativeRow.position
        )
    )
    for line_item_id, creative_id in rows:
        grouped[line_item_id].append(creative_id)
    return {key: tuple(values) for key, values in grouped.items()}


def _revision(session: Session) -> int:
    value = session.scalar(
        select(CatalogRevisionRow.revision).where(CatalogRevisionRow.name == REVISION_NAME)
    )
    return int(value or 0)


def _bump_revision(session: Session) -> None:
    bumped = session.execute(
        update(CatalogRevisionRow)
        .where(CatalogRevisionRow.name == REVISION_NAME)
        .values(revision=CatalogRevisionRow.revision + 1)
    ).rowcount
    if not bumped:
        session.add(CatalogRevisionRow(name=REVISION_NAME, revision=1))
