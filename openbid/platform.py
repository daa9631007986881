"""`openbid up`: builds the parts a config names, serves them, and stops them cleanly.

The platform owns the process-wide resources (event log, catalog, counter store) and the
HTTP servers that use them. SIGINT and SIGTERM stop accepting requests, let those in flight
finish, then flush and roll the event log so nothing already accepted is lost.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import signal
import socket
from collections.abc import Awaitable, Callable

import msgspec

from openbid import __version__
from openbid.campaigns.store import CampaignCatalog
from openbid.config import MIN_TRACKER_SECRET_BYTES, Config, ExchangeConfig, ServerConfig
from openbid.errors import ConfigError, OpenbidError
from openbid.events import EventLog
from openbid.exchange.orchestrator import Exchange
from openbid.exchange.server import ExchangeServer
from openbid.http.granian_server import GranianServer, require_granian
from openbid.http.server import Handler, HttpServer, Request, Response, Router
from openbid.obs import METRICS_CONTENT_TYPE, metrics_payload
from openbid.stores import Catalog, CounterStore, StoreUnavailable, counter_store_from_config

log = logging.getLogger(__name__)

Service = Callable[["Platform"], Awaitable[None]]


class StartupError(OpenbidError):
    """The platform cannot start as configured (a port taken...): one message, no traceback."""


def listen_error(host: str, port: int, error: OSError) -> StartupError:
    """The message for a listening socket that cannot be had, naming the key to change."""
    reason = error.strerror or str(error)
    if error.errno == errno.EADDRINUSE:
        reason += " (another process listens there: stop it or choose another server.port)"
    elif error.errno == errno.EACCES:
        reason += " (ports under 1024 need privileges: choose another server.port)"
    elif error.errno == errno.EADDRNOTAVAIL:
        reason += " (no interface of this machine has that address: check server.host)"
    return StartupError(f"server.port: cannot listen on {host}:{port}: {reason}")


def tracker_key(settings: ExchangeConfig) -> bytes:
    """The tracker HMAC key the config names; a file that cannot be read or holds too short a
    key is a `ConfigError` naming the key (the loader checks `tracker_secret` itself)."""
    from openbid.exchange.server import tracker_secret

    try:
        key = tracker_secret(settings)
    except OSError as exc:
        raise ConfigError(
            f"exchange.tracker_secret_file: cannot read {settings.tracker_secret_file}: "
            f"{exc.strerror or exc}"
        ) from None
    if len(key) < MIN_TRACKER_SECRET_BYTES:
        raise ConfigError(
            f"exchange.tracker_secret_file: {settings.tracker_secret_file} holds a "
            f"{len(key)}-byte key: an HMAC key needs at least {MIN_TRACKER_SECRET_BYTES}"
        )
    return key


def http_server(handler: Handler, settings: ServerConfig) -> HttpServer | GranianServer:
    """The HTTP server of `server.engine` for `handler`, with the limits of `server`
    (granian applies those it has: `openbid/http/granian_server.py`); `ConfigError` naming
    `server.engine` when granian is chosen but not installed."""
    if settings.engine == "granian":
        return GranianServer(
            handler,
            max_body_bytes=settings.max_body_bytes,
            max_in_flight=settings.max_in_flight,
            header_timeout_s=settings.header_timeout_s,
            request_timeout_s=settings.request_timeout_s,
            max_header_bytes=settings.max_header_bytes,
        )
    return HttpServer(
        handler,
        max_body_bytes=settings.max_body_bytes,
        max_in_flight=settings.max_in_flight,
        idle_timeout_s=settings.idle_timeout_s,
        header_timeout_s=settings.header_timeout_s,
        request_timeout_s=settings.request_timeout_s,
        max_connections=settings.max_connections,
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
    )


class Platform:
    """The resources of one openbid process and its HTTP front door."""

    def __init__(self, config: Config) -> None:
        if config.server.engine == "granian":
            require_granian()  # before any store is opened: one clear message
        self.config = config
        self.router = Router()
        self.stopping = asyncio.Event()
        self.event_log: EventLog | None = None
        self.catalog: Catalog | None = None
        self.counters: CounterStore | None = None
        self.server: HttpServer | GranianServer | None = None
        self.port = 0
        self.exchange: Exchange | None = None
        self.exchange_server: ExchangeServer | None = None
        self.model_sync = None  # openbid.pipeline.modelsync.ModelSync when models.serve is set
        self.model_slots: dict[str, object] = {}
        self.arm_sync = None  # openbid.experiments.armsync.ArmSync: A/B arms of models.serve
        self.watch = None  # openbid.monitoring.watch.Watch: live calibration, model ages
        self.house = None  # openbid.campaigns.house.HouseDemand: the catalog's campaigns
        self._background: list[asyncio.Task[None]] = []
        self.router.add("GET", "/healthz", self._healthz, safe=True)
        self.router.add("GET", "/metrics", self._metrics, safe=True)

    def open(self, migrate: bool = True) -> None:
        """Opens the stores and the event log (blocking work, done before serving); the
        catalog is migrated first unless `migrate` is False (a supervisor did it)."""
        config = self.config
        self.event_log = EventLog(
            config.events.dir,
            segments_url=config.events.segments_url,
            flush_interval_s=config.events.flush_interval_s,
            roll_interval_s=config.events.roll_interval_s,
            roll_max_bytes=config.events.roll_max_bytes,
            buffer_max_events=config.events.buffer_max_events,
            roll_in_subprocess=config.events.roll_in_subprocess,
        )
        self.catalog = CampaignCatalog(config.stores.catalog_url)
        if migrate:
            self.catalog.migrate()
        stores = config.stores
        self.counters = counter_store_from_config(
            stores.counters,
            stores.redis_url,
            redis_timeout_s=stores.redis_timeout_ms / 1000,
            redis_failure_threshold=stores.redis_failure_threshold,
            redis_cooldown_s=stores.redis_cooldown_s,
            memory_max_keys=stores.memory_max_keys,
        )
        self._open_exchange()
        self._open_model_sync()
        self._open_house()
        self._open_experiments()

    def _open_house(self) -> None:
        """House demand over the catalog's campaigns, priced by the click and conversion
        models `models.serve` follows: in the exchange's auctions and behind the bidder
        endpoint, as `[campaigns]` says."""
        settings = self.config.campaigns
        if not (settings.enabled or settings.bidder):
            return
        from openbid.bidder import Bidder
        from openbid.campaigns.house import HouseDemand, HouseSettings
        from openbid.campaigns.matcher import CampaignMatcher
        from openbid.campaigns.scoring import CandidateScorer

        assert self.exchange is not None and self.counters is not None
        self.house = HouseDemand(
            CampaignMatcher(self.catalog, refresh_s=settings.refresh_s),
            self.counters,
            CandidateScorer(self.model_slots.get("ctr"), self.model_slots.get("cvr")),
            settings=HouseSettings(
                pacing=settings.pacing,
                shading=settings.shading,
                hold_s=settings.hold_s,
                unwon_hold_s=settings.unwon_hold_s,
                max_open_holds=settings.max_open_holds,
                # once-per-bid marks outlive every notice URL that could repeat them
                mark_ttl_s=self.exchange.signer.mark_ttl_s(3 * 86_400),
                tick_s=settings.tick_s,
                anonymous_share=settings.anonymous_share,
                vendor_id=settings.vendor_id,
            ),
        )
        if settings.enabled:
            self.exchange.house = self.house
        if settings.bidder:
            exchange = self.exchange
            Bidder(
                self.house,
                exchange.signer,
                exchange.config.public_url,
                currency_rates=exchange.config.currency_rates,
                limits=self.exchange_server.limits if self.exchange_server else None,
                ua_parser=exchange.ua_parser,
                geo_reader=exchange.geo_reader,
                min_price_share=settings.min_price_share,
            ).routes(self.router)

    def _open_model_sync(self) -> None:
        """Follows the promoted models of `models.serve` (hot swap: `docs/registry.md`). The
        first poll is here, so a restarted server starts with the model that serves."""
        if not self.config.models.serve:
            return
        from openbid.pipeline.modelsync import ModelSync, slots_for

        assert self.exchange is not None
        self.model_slots = slots_for(self.config.models.serve, shaper=self.exchange.shaper)
        self.model_sync = ModelSync.from_config(self.config.models, self.model_slots)
        self.model_sync.poll_once()

    def _open_experiments(self) -> None:
        """A/B arms and live monitoring with their alerts (docs/experiments.md)."""
        from openbid.experiments.armsync import attach_arms
        from openbid.monitoring.watch import attach_monitoring

        self.arm_sync = attach_arms(self)
        self.watch = attach_monitoring(self)

    def _open_exchange(self) -> None:
        from openbid.creative import TrackerSigner
        from openbid.demand import DemandRegistry
        from openbid.enrich.geo import open_geo_reader
        from openbid.http.client import FanoutClient
        from openbid.openrtb import Limits

        settings = self.config.exchange
        assert self.catalog is not None and self.counters is not None
        self.exchange = Exchange(
            settings,
            registry=DemandRegistry(
                failure_threshold=settings.breaker_failures,
                cooldown_s=settings.breaker_cooldown_s,
                # N workers: a partner's fresh limiter starts at 1/N of its cap, until the
                # worker's keeper (openbid.workers.qps) shares the cap through Redis.
                qps_share=1.0 / self.config.server.worker_count(),
            ),
            client=FanoutClient(),
            signer=TrackerSigner(tracker_key(settings), ttl_s=settings.tracker_ttl_s),
            event_log=self.event_log,
            geo_reader=open_geo_reader(settings.geoip_db) if settings.geoip_db else None,
            shaper=self._shaper(),
        )
        self.exchange_server = ExchangeServer(
            self.exchange,
            self.catalog,
            self.counters,
            settings,
            Limits(max_body_bytes=self.config.server.max_body_bytes, max_imps=settings.max_imps),
        )
        self.exchange_server.routes(self.router)
        self.exchange_server.refresh()

    def _shaper(self) -> object | None:
        settings = self.config.exchange
        if settings.shaping_url:
            from openbid.http.client import FanoutClient
            from openbid.shaping.service import RemoteShaper

            return RemoteShaper(settings.shaping_url, FanoutClient())
        if settings.shaping_model or "shaping" in self.config.models.serve:
            from openbid.shaping import ModelShaper

            return ModelShaper(
                settings.shaping_model or None, exploration_share=settings.exploration_share
            )
        return None

    def reload_models(self) -> None:
        """Reloads the shaping model from its directory (SIGHUP); a bad one is refused. With
        `models.serve`, the store's pointers are read again and their models reloaded; the
        directory only serves while the store has no shaping model."""
        if self.model_sync is not None:
            self.model_sync.request_reload()
            if self.model_sync.serving("shaping"):
                return
        path = self.config.exchange.shaping_model
        shaper = self.exchange.shaper if self.exchange is not None else None
        if not path or not hasattr(shaper, "load"):
            return
        try:
            version = shaper.load(path)  # type: ignore[union-attr]
        except Exception as exc:  # the shaper logs and counts; the old model serves on
            log.error("shaping model reload refused", extra={"path": path, "error": str(exc)})
        else:
            log.info("shaping model reloaded", extra={"path": path, "version": version})

    def refresh_catalog_soon(self) -> None:
        """Reloads publishers and demand partners from the catalog now, in a thread (SIGUSR1:
        the supervisor's demo registered DSPs); a failure keeps the last catalog."""
        if self.exchange_server is None:
            return
        refresh = self.exchange_server.refresh

        def run() -> None:
            try:
                refresh()
            except StoreUnavailable as exc:
                log.error("catalog refresh failed", extra={"error": str(exc)})
            else:
                log.info("catalog refreshed on request")

        self._background = [task for task in self._background if not task.done()]
        self._background.append(asyncio.ensure_future(asyncio.to_thread(run)))

    async def serve(self, sock: socket.socket | None = None) -> int:
        """Starts the HTTP server (on `sock`, a listening socket, when given: a worker's
        share of the supervisor's); returns the bound port."""
        server_config = self.config.server
        self.server = http_server(self.router, server_config)
        # What exists now (modules, caches, the catalog) lives as long as the process: keep
        # it out of the collector's scans, and collect the young generation less often, so
        # collections stay short pauses instead of tens of milliseconds under load.
        if self.house is not None:
            await self.house.start()  # the first index, budgets and pacing before serving
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 50)
        try:
            if sock is not None:
                self.port = await self.server.start(sock=sock)
            else:
                self.port = await self.server.start(server_config.host, server_config.port)
        except OSError as exc:
            raise listen_error(server_config.host, server_config.port, exc) from None
        self._background.append(
            asyncio.create_task(
                self.exchange_server.refresh_forever(self.config.exchange.demand_refresh_s)
            )
        )
        if self.model_sync is not None:
            self._background.append(asyncio.create_task(self.model_sync.run()))
        if self.house is not None:
            self._background.append(asyncio.create_task(self.house.run()))
        if self.watch is not None:
            self._background.append(asyncio.create_task(self.watch.run()))
        log.info(
            "openbid is serving",
            extra={"host": server_config.host, "port": self.port, "version": __version__},
        )
        return self.port

    async def close(self) -> None:
        """Stops serving, then flushes and rolls the event log and closes the stores."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.model_sync is not None:
            self.model_sync.close()
        if self.watch is not None:
            await asyncio.to_thread(self.watch.close)
        if self.server is not None:
            await self.server.stop()
        if self.exchange is not None:
            await self.exchange.notices.drain()
            self.exchange.client.close()
        if self.event_log is not None:
            await asyncio.to_thread(self.event_log.close)
        if self.counters is not None:
            await self.counters.aclose()
        if self.catalog is not None:
            self.catalog.close()
        log.info("openbid stopped")

    async def _healthz(self, request: Request) -> Response:
        checks = {"event_log": self.event_log is not None}
        if self.counters is not None:
            checks["counters"] = await self.counters.aping()
        healthy = all(checks.values())
        body = msgspec.json.encode({"status": "ok" if healthy else "degraded", "checks": checks})
        return Response(200, body)

    async def _metrics(self, request: Request) -> Response:
        return Response(200, metrics_payload(), METRICS_CONTENT_TYPE)


async def run_platform(
    config: Config,
    services: list[Service] | None = None,
    *,
    sock: socket.socket | None = None,
    migrate: bool = True,
    on_serving: Callable[[Platform], None] | None = None,
) -> None:
    """Runs until SIGINT or SIGTERM; `services` are extra tasks (the demo's traffic...).

    A worker of `openbid.workers` passes the supervisor's listening socket (`sock`), leaves
    the catalog's migration to the supervisor, and says it serves through `on_serving`.
    """
    platform = Platform(config)
    try:
        await asyncio.to_thread(platform.open, migrate)
    except BaseException as exc:
        if isinstance(exc, StoreUnavailable):
            log.error("cannot open the stores", extra={"error": str(exc)})
        await platform.close()
        raise
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, platform.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, platform.reload_models)
    loop.add_signal_handler(signal.SIGUSR1, platform.refresh_catalog_soon)
    tasks: list[asyncio.Task[None]] = []
    try:
        await platform.serve(sock)
        tasks = [asyncio.create_task(service(platform)) for service in services or []]
        if on_serving is not None:
            on_serving(platform)
        await platform.stopping.wait()
        log.info("stop requested: draining")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await platform.close()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
            loop.remove_signal_handler(signum)
