"""Bulk import and export of the buy side: YAML (campaigns with their line items nested) and
CSV (one row a record, its kind in the `record` column), with a report of every bad row.

An import reads every row, checks each record (`openbid/campaigns/validate.py`) and what it
refers to (in the file or already in the catalog), and upserts the good ones by id in one
transaction: importing the same file again changes nothing. A record that refers to a
refused one is refused too, with the reason. Rows are numbered as an editor shows them:
the line of the record in a YAML file, the row in a CSV file (the header is row 1).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import yaml

from openbid import clock
from openbid.campaigns.model import CampaignSet, LineItem
from openbid.campaigns.records import (
    KINDS,
    TARGETING_KEYS,
    doc_from_record,
    file_field,
    record_from_doc,
)
from openbid.campaigns.validate import (
    FieldError,
    advertiser_errors,
    campaign_errors,
    creative_errors,
    line_item_errors,
    line_item_reference_errors,
)
from openbid.errors import OpenbidError

DEMO_FILE = "demo.yaml"
_SECTIONS = {
    "advertisers": "advertiser",
    "campaigns": "campaign",
    "line_items": "line_item",
    "creatives": "creative",
}
_CHECKS = {
    "advertiser": advertiser_errors,
    "campaign": campaign_errors,
    "line_item": line_item_errors,
    "creative": creative_errors,
}


class BulkError(OpenbidError):
    """A file that cannot be read at all (not YAML or CSV, no `record` column ...)."""


class RowError(msgspec.Struct, frozen=True):
    row: int
    record: str
    id: str
    field: str
    reason: str

    def __str__(self) -> str:
        what = f"{self.record} {self.id!r}" if self.id else self.record
        return f"row {self.row}: {what}: {self.field}: {self.reason}"


class ImportReport(msgspec.Struct):
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = msgspec.field(default_factory=list)
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would import" if self.dry_run else "imported"
        return (
            f"{self.read} records read: {verb} {self.created} new, {self.updated} updated,"
            f" {self.unchanged} unchanged; {len(self.errors)} rows refused"
        )


class _Row(msgspec.Struct):
    kind: str
    row: int
    doc: dict[str, Any]


# Reading files.


class _LineLoader(yaml.SafeLoader):
    """Records the line of every mapping (`__line__`), for the error report."""


def _mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def _yaml_rows(text: str) -> Iterator[_Row]:
    try:
        document = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise BulkError(f"not valid YAML: {exc}") from None
    if document is None:
        return
    if not isinstance(document, dict):
        raise BulkError("a campaigns YAML file is a mapping of advertisers, campaigns, ...")
    for section, items in document.items():
        if section == "__line__":
            continue
        kind = _SECTIONS.get(section)
        if kind is None:
            raise BulkError(
                f"line {document['__line__']}: unknown section {section!r}"
                f" (known: {', '.join(_SECTIONS)})"
            )
        if not isinstance(items, list):
            raise BulkError(f"section {section!r} must be a list of records")
        for item in items:
            if not isinstance(item, dict):
                raise BulkError(f"section {section!r} holds a {type(item).__name__}, not a record")
            nested = item.pop("line_items", None) if kind == "campaign" else None
            yield _Row(kind, item["__line__"], item)
            if nested is None:
                continue
            if not isinstance(nested, list):
                raise BulkError(f"line {item['__line__']}: line_items must be a list of records")
            for line_item in nested:
                if isinstance(line_item, dict):
                    line_item.setdefault("campaign", item.get("id"))
                    yield _Row("line_item", line_item["__line__"], line_item)


def _csv_rows(text: str) -> Iterator[_Row]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "record" not in reader.fieldnames:
        raise BulkError("a campaigns CSV file needs a 'record' column (advertiser, campaign ...)")
    for number, cells in enumerate(reader, start=2):
        kind = (cells.pop("record") or "").strip().lower().replace(" ", "_")
        doc: dict[str, Any] = {"__line__": number}
        targeting: dict[str, Any] = {}
        native: dict[str, Any] = {}
        for key, value in cells.items():
            if key is None or value is None or not value.strip():
                continue
            if kind == "line_item" and key in TARGETING_KEYS:
                targeting[key] = value
            elif kind == "creative" and key.startswith("native_"):
                native[key.removeprefix("native_")] = value
            else:
                doc[key] = value
        if targeting:
            doc["targeting"] = targeting
        if native:
            doc["native"] = native
        yield _Row(kind, number, doc)


def rows_from_text(text: str, filename: str) -> list[_Row]:
    """The rows of a file's text (an upload): CSV when `filename` ends in .csv, else YAML."""
    if filename.lower().endswith(".csv"):
        return list(_csv_rows(text))
    return list(_yaml_rows(text))


def read_rows(path: str | Path) -> list[_Row]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise BulkError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BulkError(f"{path} is not UTF-8 text") from None
    if path.suffix.lower() == ".csv":
        return list(_csv_rows(text))
    return list(_yaml_rows(text))


# Importing.


def _refusal(row: _Row, record_id: str, errors: Iterable[FieldError]) -> list[RowError]:
    return [
        RowError(row.row, row.kind, record_id, file_field(error.field), error.reason)
        for error in errors
    ]


def parse_rows(
    rows: list[_Row], existing: CampaignSet, now_micros: int
) -> tuple[CampaignSet, list[RowError]]:
    """The records of `rows` that pass every check, and a report of those that do not.
    References resolve against the file's good records, then `existing` (the catalog)."""
    errors: list[RowError] = []
    domains = {a.id: a.domain for a in existing.advertisers}
    for row in rows:
        if row.kind == "advertiser" and isinstance(row.doc.get("domain"), str):
            domains.setdefault(str(row.doc.get("id", "")), row.doc["domain"].strip().lower())
    good: dict[str, dict[str, tuple[Any, _Row]]] = {kind: {} for kind in KINDS}
    for row in rows:
        record_id = str(row.doc.get("id", "") or "")
        if row.kind not in KINDS:
            errors.append(
                RowError(
                    row.row,
                    row.kind or "?",
                    record_id,
                    "record",
                    f"unknown record kind {row.kind!r} (known: {', '.join(KINDS)})",
                )
            )
            continue
        record, problems = record_from_doc(
            row.kind, row.doc, now_micros, advertiser_domains=domains
        )
        if record is not None:
            problems = _CHECKS[row.kind](record)
        if problems:
            errors += _refusal(row, record_id, problems)
            continue
        earlier = good[row.kind].get(record.id)
        if earlier is not None:
            errors.append(
                RowError(row.row, row.kind, record.id, "id", f"repeats row {earlier[1].row}")
            )
            continue
        good[row.kind][record.id] = (record, row)

    known_advertisers = {a.id for a in existing.advertisers} | set(good["advertiser"])
    for kind in ("campaign", "creative"):
        for record_id, (record, row) in list(good[kind].items()):
            if record.advertiser_id not in known_advertisers:
                errors += _refusal(
                    row,
                    record_id,
                    [
                        FieldError(
                            "advertiser_id", _missing("advertiser", record.advertiser_id, rows)
                        )
                    ],
                )
                del good[kind][record_id]
    campaigns = {c.id: c for c in existing.campaigns} | {
        k: v[0] for k, v in good["campaign"].items()
    }
    creatives = {c.id: c for c in existing.creatives} | {
        k: v[0] for k, v in good["creative"].items()
    }
    refused_ids = {(e.record, e.id) for e in errors}
    for record_id, (line_item, row) in list(good["line_item"].items()):
        campaign = campaigns.get(line_item.campaign_id)
        problems = []
        if campaign is None:
            problems.append(
                FieldError("campaign_id", _missing("campaign", line_item.campaign_id, rows))
            )
        else:
            if ("campaign", campaign.id) in refused_ids:
                problems.append(FieldError("campaign_id", _missing("campaign", campaign.id, rows)))
            problems += [
                FieldError("creative_ids", _missing("creative", creative_id, rows))
                for creative_id in line_item.creative_ids
                if creative_id not in creatives or ("creative", creative_id) in refused_ids
            ]
            if not problems:
                problems = line_item_reference_errors(
                    line_item, campaign, {i: creatives.get(i) for i in line_item.creative_ids}
                )
        if problems:
            errors += _refusal(row, record_id, problems)
            del good["line_item"][record_id]
    records = CampaignSet(
        advertisers=tuple(r for r, _ in good["advertiser"].values()),
        campaigns=tuple(r for r, _ in good["campaign"].values()),
        line_items=tuple(r for r, _ in good["line_item"].values()),
        creatives=tuple(r for r, _ in good["creative"].values()),
    )
    return records, sorted(errors, key=lambda e: e.row)


def _missing(kind: str, record_id: str, rows: list[_Row]) -> str:
    for row in rows:
        if row.kind == kind and str(row.doc.get("id", "")) == record_id:
            return f"{kind} {record_id!r} was refused (row {row.row})"
    return f"no {kind} {record_id!r} in the file or the catalog"


def import_file(
    catalog: Any, path: str | Path, *, dry_run: bool = False, now_micros: int | None = None
) -> ImportReport:
    """Imports a YAML or CSV file into `catalog` (see the module docstring)."""
    rows = read_rows(path)
    return import_rows(catalog, rows, dry_run=dry_run, now_micros=now_micros)


def import_rows(
    catalog: Any, rows: list[_Row], *, dry_run: bool = False, now_micros: int | None = None
) -> ImportReport:
    if now_micros is None:
        now_micros = clock.now_micros()
    existing = catalog.campaign_set()
    records, errors = parse_rows(rows, existing, now_micros)
    report = ImportReport(read=len(rows), errors=errors, dry_run=dry_run)
    if dry_run:
        for kind in ("advertisers", "campaigns", "line_items", "creatives"):
            current = {record.id: record for record in getattr(existing, kind)}
            for record in getattr(records, kind):
                before = current.get(record.id)
                if before is None:
                    report.created += 1
                elif before == record:
                    report.unchanged += 1
                else:
                    report.updated += 1
        return report
    counts = catalog.apply_campaign_set(records)
    report.created, report.updated, report.unchanged = (
        counts.created,
        counts.updated,
        counts.unchanged,
    )
    return report


def load_demo_campaigns(catalog: Any, *, now_micros: int | None = None) -> ImportReport:
    """Loads the demo's advertisers, campaigns and creatives (`openbid/campaigns/demo.yaml`:
    flights from today for 30 days, targeting the simulated market's traffic)."""
    demo = resources.files("openbid.campaigns").joinpath(DEMO_FILE)
    rows = list(_yaml_rows(demo.read_text(encoding="utf-8")))
    return import_rows(catalog, rows, now_micros=now_micros)


# Exporting.


def export_yaml(records: CampaignSet) -> str:
    """Advertisers, creatives, then campaigns with their line items nested."""
    by_campaign: dict[str, list[LineItem]] = {}
    for line_item in records.line_items:
        by_campaign.setdefault(line_item.campaign_id, []).append(line_item)
    campaigns = []
    for campaign in records.campaigns:
        doc = doc_from_record(campaign)
        nested = []
        for line_item in by_campaign.pop(campaign.id, []):
            line_doc = doc_from_record(line_item)
            del line_doc["campaign"]
            nested.append(line_doc)
        if nested:
            doc["line_items"] = nested
        campaigns.append(doc)
    document: dict[str, Any] = {
        "advertisers": [doc_from_record(a) for a in records.advertisers],
        "creatives": [doc_from_record(c) for c in records.creatives],
        "campaigns": campaigns,
    }
    orphans = [doc_from_record(li) for items in by_campaign.values() for li in items]
    if orphans:
        document["line_items"] = orphans
    return yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None
    )


def _csv_cell(value: Any) -> str:
    if isinstance(value, list):
        return "|".join(str(item) for item in value)
    return str(value)


def export_csv(records: CampaignSet) -> str:
    """One row a record in dependency order; list cells joined with `|`."""
    rows: list[dict[str, str]] = []
    columns: dict[str, None] = {"record": None}
    groups: list[tuple[str, Iterable[Any]]] = [
        ("advertiser", records.advertisers),
        ("creative", records.creatives),
        ("campaign", records.campaigns),
        ("line_item", records.line_items),
    ]
    for kind, group in groups:
        for record in group:
            doc = doc_from_record(record)
            flat: dict[str, str] = {"record": kind}
            for key, value in doc.items():
                if key == "targeting":
                    flat.update({k: _csv_cell(v) for k, v in value.items()})
                elif key == "native":
                    flat.update({f"native_{k}": _csv_cell(v) for k, v in value.items()})
                else:
                    flat[key] = _csv_cell(value)
            columns.update(dict.fromkeys(flat))
            rows.append(flat)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
