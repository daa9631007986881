"""Keeps a compiled campaign index current: rebuilt off the hot path when the catalog
changes (its revision moves) or a flight starts or ends, published by swapping one reference.

The event loop only ever reads `matcher.index`; a refresh reads the catalog and compiles in
a worker thread (`arefresh`, `run`), and a catalog that cannot answer leaves the last index
serving. Line items paused from outside (a spent budget, pacing holding back) are applied to
every index published (`pause`).

>>> from openbid.campaigns.store import CampaignCatalog
>>> catalog = CampaignCatalog("sqlite://"); catalog.migrate()
>>> matcher = CampaignMatcher(catalog)
>>> matcher.refresh(), len(matcher.index), matcher.refresh()
(True, 0, False)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import Gauge

from openbid import clock
from openbid.campaigns.index import CampaignIndex, compile_index
from openbid.obs import REGISTRY
from openbid.stores.base import StoreUnavailable

log = logging.getLogger(__name__)

INDEX_PAIRS = Gauge(
    "openbid_campaign_index_pairs",
    "Servable (line item, creative) pairs in the published campaign index",
    registry=REGISTRY,
)
INDEX_BUILD_SECONDS = Gauge(
    "openbid_campaign_index_build_seconds",
    "How long the last campaign index took to read and compile",
    registry=REGISTRY,
)


class CampaignMatcher:
    """The current `CampaignIndex` of a catalog (see the module docstring)."""

    def __init__(
        self,
        catalog: Any,
        *,
        now_micros: Callable[[], int] = clock.now_micros,
        refresh_s: float = 5.0,
    ) -> None:
        self.catalog = catalog
        self.refresh_s = refresh_s
        self._now_micros = now_micros
        self._index = CampaignIndex()
        self._compiled: CampaignIndex | None = None
        self._paused: frozenset[str] = frozenset()
        self._publish = threading.Lock()
        self._refreshing = threading.Lock()

    @property
    def index(self) -> CampaignIndex:
        """The index to match with: read it once per request and use that one throughout."""
        return self._index

    def _stale(self, revision: int) -> bool:
        compiled = self._compiled
        return (
            compiled is None
            or compiled.revision != revision
            or self._now_micros() >= compiled.valid_until_micros
        )

    def refresh(self, *, force: bool = False) -> bool:
        """Recompiles when the catalog changed or a flight boundary passed (or `force`);
        says whether a new index was published. Blocking: call it off the event loop."""
        with self._refreshing:
            revision = self.catalog.campaign_revision()
            if not force and not self._stale(revision):
                return False
            started = time.perf_counter()
            campaign_set = self.catalog.campaign_set()
            compiled = compile_index(campaign_set, self._now_micros())
            with self._publish:
                self._compiled = compiled
                self._index = compiled.with_paused(self._paused) if self._paused else compiled
            seconds = time.perf_counter() - started
            INDEX_PAIRS.set(len(compiled))
            INDEX_BUILD_SECONDS.set(seconds)
            log.info(
                "campaign index published",
                extra={
                    "revision": compiled.revision,
                    "pairs": len(compiled),
                    "line_items": len(compiled.line_items),
                    "build_s": round(seconds, 3),
                },
            )
            return True

    def pause(self, line_item_ids: Iterable[str]) -> None:
        """Sets the line items that must match nothing (replacing the previous set)."""
        paused = frozenset(line_item_ids)
        with self._publish:
            self._paused = paused
            if self._compiled is not None:
                self._index = self._compiled.with_paused(paused)

    @property
    def paused(self) -> frozenset[str]:
        return self._paused

    async def arefresh(self, *, force: bool = False) -> bool:
        """`refresh` in a worker thread; a catalog that cannot answer keeps the last index."""
        try:
            return await asyncio.to_thread(self.refresh, force=force)
        except StoreUnavailable as exc:
            log.warning(
                "campaign index not refreshed: catalog unavailable", extra={"error": str(exc)}
            )
            return False

    async def run(self) -> None:
        """Refreshes every `refresh_s` real seconds until cancelled (polling the catalog's
        revision is one small query)."""
        while True:
            await self.arefresh()
            await asyncio.sleep(self.refresh_s)
