"""Win, billing and loss notices to demand partners: fired in the background, retried.

Notices never hold up an auction: `fire()` schedules a task and returns. A notice is retried
on a transport error or a 5xx (a 4xx will not get better), up to `attempts` times with a
growing pause, and its outcome is logged as a `NoticeEvent`. The one notice that is awaited
is a win notice whose answer is the markup (`fetch_markup`, a bid that came without `adm`).
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Counter

from openbid.events import EventLog, NoticeEvent, now_micros
from openbid.http.client import FanoutClient, UpstreamError
from openbid.obs import REGISTRY

log = logging.getLogger(__name__)

NOTICES = Counter(
    "openbid_notices",
    "Notices fired to demand partners, by kind and outcome",
    ["kind", "outcome"],
    registry=REGISTRY,
)


class NoticeSender:
    """Fires notice URLs (macros already substituted) with retries."""

    def __init__(
        self,
        client: FanoutClient,
        event_log: EventLog | None,
        *,
        attempts: int = 3,
        timeout_s: float = 2.0,
        backoff_s: float = 0.2,
        max_in_flight: int = 10_000,
        public_only: bool = True,
    ) -> None:
        self._client = client
        self.max_in_flight = max_in_flight
        self.public_only = public_only
        self._event_log = event_log
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._tasks: set[asyncio.Task[None]] = set()

    def fire(
        self,
        kind: str,
        url: str,
        *,
        auction_id: str,
        bid_id: str,
        dsp: str,
        price_micros: int = 0,
        loss_reason: int = 0,
    ) -> None:
        """Schedules one notice; returns at once. Past `max_in_flight` notices being sent
        (a slow or dead notice host, retried), a new one is dropped and counted."""
        if len(self._tasks) >= self.max_in_flight:
            NOTICES.labels(kind, "dropped").inc()
            return
        task = asyncio.get_running_loop().create_task(
            self._send(kind, url, auction_id, bid_id, dsp, price_micros, loss_reason)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def fetch_markup(
        self,
        url: str,
        *,
        timeout_s: float,
        auction_id: str,
        bid_id: str,
        dsp: str,
        price_micros: int = 0,
    ) -> str:
        """Fires the win notice of a bid that came without markup and returns its answer,
        the markup (empty when the DSP did not answer 200 in time). One attempt: a retry
        could count the win twice. Logged and counted as a `win` notice."""
        status = 0
        markup = ""
        try:
            response = await self._client.get(
                url, timeout_s=timeout_s, public_only=self.public_only
            )
            status = response.status
            if status == 200:
                markup = response.body.decode("utf-8", "replace")
        except UpstreamError as error:
            log.debug("markup fetch failed", extra={"dsp": dsp, "error": str(error)})
        except Exception:  # a DSP's URL must never cost more than its own bid
            log.exception("fetching a winner's markup failed", extra={"dsp": dsp})
        self._record("win", status, auction_id, bid_id, dsp, price_micros, 0, 1)
        return markup

    async def _send(
        self,
        kind: str,
        url: str,
        auction_id: str,
        bid_id: str,
        dsp: str,
        price_micros: int,
        loss_reason: int,
    ) -> None:
        status = 0
        attempt = 0
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self._client.get(
                    url, timeout_s=self.timeout_s, public_only=self.public_only
                )
                status = response.status
                if status < 500:
                    break
            except UpstreamError as error:
                status = 0
                log.debug("notice failed", extra={"kind": kind, "dsp": dsp, "error": str(error)})
                if error.kind == "forbidden":  # will not get better
                    break
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff_s * attempt)
        self._record(kind, status, auction_id, bid_id, dsp, price_micros, loss_reason, attempt)

    def _record(
        self,
        kind: str,
        status: int,
        auction_id: str,
        bid_id: str,
        dsp: str,
        price_micros: int,
        loss_reason: int,
        attempts: int,
    ) -> None:
        outcome = "ok" if 200 <= status < 400 else "failed"
        NOTICES.labels(kind, outcome).inc()
        if self._event_log is not None:
            self._event_log.emit(
                NoticeEvent(
                    now_micros(),
                    auction_id,
                    bid_id,
                    kind,  # type: ignore[arg-type]
                    dsp=dsp,
                    price_micros=price_micros,
                    loss_reason=loss_reason,
                    http_status=status,
                    attempts=attempts,
                )
            )

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Waits for notices in flight (at shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)
