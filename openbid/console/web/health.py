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
from openbid.console.errors import ApiError
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


def _ab_running(ctx: Any, purpose: str) -> bool:
    """Whether `purpose` has A/B arms (the store's arms file, else the config's)."""
    from openbid.experiments.arms import from_config, read_arms
    from openbid.pipeline.modelstore import ModelStore

    arms = read_arms(ModelStore(ctx.config.models.store_url), purpose)
    arms = arms or from_config(ctx.config.experiments, purpose)
    return arms is not None and bool(arms.arms)


def _ab_results(ctx: Any, purpose: str) -> dict[str, Any] | None:
    """The A/B report of `purpose` over the last day, when it has arms (it reads the event
    log: only then)."""
    from openbid.events import EventReader
    from openbid.experiments.abreport import ab_report

    if not _ab_running(ctx, purpose):
        return None
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


class RegistryOpener:
    """Opens the model registry once, in a thread: MLflow's import and a new tracking
    database's migrations take tens of seconds, which no page should wait for. The registry
    section of the page polls (htmx) until it is open."""

    def __init__(self) -> None:
        self.registry: Any = None
        self.problem = ""
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def get(self, ctx: Any) -> tuple[Any, str, bool]:
        """(registry, problem, done): starts opening it on the first call."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._open, args=(ctx,), name="openbid-console-registry", daemon=True
                )
                self._thread.start()
            done = not self._thread.is_alive()
        return self.registry, self.problem, done

    def _open(self, ctx: Any) -> None:
        try:
            self.registry = _registry(ctx)
        except Exception as exc:  # the page says why; the console keeps serving
            self.problem = f"the model registry cannot be read: {exc}"
            log.warning("model registry", extra={"error": str(exc)})


def opener(request: Request) -> RegistryOpener:
    found = getattr(request.app.state, "registry_opener", None)
    if found is None:
        found = request.app.state.registry_opener = RegistryOpener()
    return found


def _purposes() -> tuple[str, ...]:
    from openbid.pipeline.modelstore import PURPOSES

    return PURPOSES


@router.get("/health/models")
def model_health(request: Request, who: PageUser, ctx: Ctx) -> Response:
    require_admin(who)
    opener(request).get(ctx)  # starts opening the registry while this page renders
    purposes = [{"purpose": purpose} for purpose in _purposes()]
    return page(request, who, "models.html", purposes=purposes, live=_live_calibration(ctx))


@router.get("/health/models/{purpose}/versions")
def model_versions(request: Request, purpose: str, who: PageUser, ctx: Ctx) -> Response:
    """One purpose's registered versions, age, calibration, frontier and A/B results (an
    htmx fragment that polls while the registry opens)."""
    require_admin(who)
    if purpose not in _purposes():
        raise ApiError(404, "purpose", f"no model purpose {purpose!r}")
    registry, problem, done = opener(request).get(ctx)
    entry: dict[str, Any] = {"purpose": purpose, "versions": [], "served": {}, "problem": problem}
    if registry is not None:
        try:
            entry["versions"] = [
                {
                    "version": v.version,
                    "aliases": v.aliases,
                    "registered_at": v.registered_at,
                    "age": _age(v.registered_at),
                    "rows": v.rows,
                    "metrics": v.metrics,
                }
                for v in registry.versions(purpose)[:8]
            ]
            entry["served"] = _served_artifact(ctx, registry, purpose)
        except Exception as exc:
            entry["problem"] = str(exc)
            log.warning("model health", extra={"purpose": purpose, "error": str(exc)})
    if done:
        try:
            entry["ab"] = _ab_results(ctx, purpose)
        except Exception as exc:  # the versions are still shown
            entry["ab_problem"] = str(exc)
            log.warning("A/B results", extra={"purpose": purpose, "error": str(exc)})
    return page(request, who, "model_versions.html", p=entry, loading=not done)
