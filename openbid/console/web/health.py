"""The admins' health pages. Exchange health: the exchange's own `/metrics`, scraped by the
console (QPS by endpoint, auction p50/p99, per DSP call rate, bid rate, p50/p99, timeouts,
errors and breaker state, creative failure rate), refreshed in place by htmx. Model health:
each purpose's registered versions and their age, the served model's calibration table and
(shaping) savings frontier, live expected / actual by slice from the exchange's metrics,
and A/B results from the event log (`openbid.experiments.abreport`)."""

from __future__ import annotations

import logging
import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from openbid import clock
from openbid.console.api.tenancy import require_admin
from openbid.console.web.render import page
from openbid.console.web.scrape import Watch, by_label
from openbid.console.web.session import Ctx, PageUser

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
_WATCHES: dict[str, Watch] = {}
_WATCH_LOCK = threading.Lock()
_ARTIFACTS: dict[tuple[str, str], dict[str, Any]] = {}
AB_WINDOW_MICROS = 24 * 3_600_000_000


def metrics_url(ctx: Any) -> str:
    server = ctx.config.server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    return f"http://{host}:{server.port}/metrics"


def watch(ctx: Any) -> Watch:
    url = metrics_url(ctx)
    with _WATCH_LOCK:
        found = _WATCHES.get(url)
        if found is None:
            found = _WATCHES[url] = Watch(url)
    return found


@router.get("/health/exchange")
def exchange_health(request: Request, who: PageUser, ctx: Ctx) -> Response:
    require_admin(who)
    template = "exchange_panel.html" if request.headers.get("hx-request") else "exchange.html"
    return page(request, who, template, health=watch(ctx).health())


# --- models
def _age(registered_at: str) -> str:
    try:
        moment = datetime.fromisoformat(registered_at.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(clock.now() - moment.timestamp(), 0.0)
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _registry(ctx: Any) -> Any:
    from openbid.console.api.models import _registry as registry_of

    return registry_of(ctx)


def _served_artifact(ctx: Any, registry: Any, purpose: str) -> dict[str, Any]:
    """The production model's calibration tables and (shaping) frontier, read from its
    artifact in the model store; kept per version."""
    from openbid.pipeline.modelinfo import describe_artifact

    pointer = registry.pointer(purpose)
    if pointer is None:
        return {}
    key = (purpose, pointer.version)
    if key in _ARTIFACTS:
        return _ARTIFACTS[key]
    cache = Path(ctx.config.events.dir).parent / "console-models"
    path = registry.store.fetch(pointer, cache)
    summary = describe_artifact(purpose, path)
    found: dict[str, Any] = {
        "version": pointer.version,
        "calibration": {
            name: {"x": list(table.x), "y": list(table.y), "method": table.method}
            for name, table in summary.calibration.items()
        },
        "frontier": [],
    }
    if purpose == "shaping":
        from openbid.shaping import load_shaping_model

        frontier = load_shaping_model(path).meta.frontier
        found["frontier"] = [
            {"dsp": p.dsp, "target": p.target, "saved": p.saved, "kept": p.kept} for p in frontier
        ]
    _ARTIFACTS[key] = found
    return found


def _live_calibration(ctx: Any) -> list[dict[str, Any]]:
    """Expected / actual bids of the serving shaping model by slice, since the exchange
    started (its `openbid_calibration_*` counters)."""
    try:
        samples = watch(ctx).fetch().samples
    except (OSError, ValueError):
        return []
    rows = []
    for dimension in ("all", "dsp", "country", "device", "publisher"):
        expected = by_label(samples, "openbid_calibration_expected_total", "value",
                            dimension=dimension)  # fmt: skip
        actual = by_label(samples, "openbid_calibration_actual_total", "value", dimension=dimension)
        made = by_label(samples, "openbid_calibration_predictions_total", "value",
                        dimension=dimension)  # fmt: skip
        for value in sorted(expected, key=lambda v: -made.get(v, 0.0))[:12]:
            seen = actual.get(value, 0.0)
            rows.append(
                {
                    "dimension": dimension,
                    "value": value or "(none)",
                    "predictions": made.get(value, 0.0),
                    "expected": expected[value],
                    "actual": seen,
                    "ratio": expected[value] / seen if seen else None,
                }
            )
    return rows


def _ab_results(ctx: Any, purpose: str) -> dict[str, Any] | None:
    """The A/B report of `purpose` over the last day, when its traffic carries arms."""
    from openbid.events import EventReader
    from openbid.experiments.abreport import ab_report

    events = ctx.config.events
    until = clock.now_micros()
    reader = EventReader(events.dir, segments_url=events.segments_url)
    report = ab_report(reader, purpose, since_micros=until - AB_WINDOW_MICROS, until_micros=until)
    if len(report.arms) < 2 or not any(arm.auctions for arm in report.arms[1:]):
        return None
    arms = []
    for arm in report.arms:
        arms.append(
            {
                "arm": arm.arm,
                "auctions": arm.auctions,
                "estimates": {name: _estimate(e) for name, e in arm.estimates.items()},
                "verdicts": {name: c.verdict for name, c in arm.comparisons.items()},
            }
        )
    return {"purpose": purpose, "arms": arms, "metrics": list(report.arms[0].estimates)}


def _estimate(e: Any) -> str:
    if not math.isfinite(e.value):
        return "-"
    return f"{e.value:,.4g} ± {e.half_width:,.2g}" if math.isfinite(e.se) else f"{e.value:,.4g}"


@router.get("/health/models")
def model_health(request: Request, who: PageUser, ctx: Ctx) -> Response:
    require_admin(who)
    from openbid.pipeline.modelstore import PURPOSES

    purposes = []
    problem = ""
    try:
        registry = _registry(ctx)
    except Exception as exc:  # a registry that cannot open: the page says so
        registry, problem = None, f"the model registry cannot be read: {exc}"
    for purpose in PURPOSES:
        entry: dict[str, Any] = {"purpose": purpose, "versions": [], "served": {}, "problem": ""}
        if registry is not None:
            try:
                versions = registry.versions(purpose)
                entry["versions"] = [
                    {
                        "version": v.version,
                        "aliases": v.aliases,
                        "registered_at": v.registered_at,
                        "age": _age(v.registered_at),
                        "rows": v.rows,
                        "metrics": v.metrics,
                    }
                    for v in versions[:8]
                ]
                entry["served"] = _served_artifact(ctx, registry, purpose)
            except Exception as exc:  # one purpose's failure leaves the others shown
                entry["problem"] = str(exc)
                log.warning("model health", extra={"purpose": purpose, "error": str(exc)})
        try:
            entry["ab"] = _ab_results(ctx, purpose)
        except Exception as exc:
            entry["ab"] = None
            log.warning("A/B results", extra={"purpose": purpose, "error": str(exc)})
        purposes.append(entry)
    return page(
        request,
        who,
        "models.html",
        purposes=purposes,
        live=_live_calibration(ctx),
        problem=problem,
    )
