"""The supervisor of `server.workers = N`: binds the port once, runs N workers on it,
restarts a crashed one, and stops them all cleanly.

Start: the configuration is checked and the catalog migrated here, once (N processes
migrating a fresh database at once would race); the port is claimed here (a port in use is
one clear message before any worker starts); then N workers (`openbid.workers.child`) are
started, each with a listening socket of its own in the port's SO_REUSEPORT group, the
configuration on stdin, and a private run directory for their metrics sockets. Start fails
whole if a worker cannot.

Why SO_REUSEPORT and not one shared listening socket: the kernel spreads new connections
over the group's sockets by a hash of the addresses. With one shared socket each worker's
event loop accepts all it can when woken, and measured here (2 uvloop workers, 64
connections opened at once, 6 trials) one worker took all 64 in one trial and 15 of 16 in
another; with SO_REUSEPORT the splits were 26/38 to 32/32. Long-lived keep-alive
connections (what exchanges and SSPs hold) would stay that unbalanced.

Running: a worker that exits is logged at error level and restarted after a backoff that
doubles with each crash in a row (0.5 s up to 30 s; a worker that served a minute resets
it), so a worker that cannot live does not make a restart storm.

Stop (SIGINT, SIGTERM): the services (the demo) stop first, then every worker gets SIGTERM
and drains as one process does (requests in flight finish, the event log is flushed and
rolled); one still running after `STOP_TIMEOUT_S` is killed. SIGHUP (model reload) and
SIGUSR1 (catalog refresh) are passed on to every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from openbid import clock
from openbid.config import Config
from openbid.http.granian_server import require_granian
from openbid.platform import StartupError, listen_error, tracker_key
from openbid.stores import Catalog, StoreUnavailable
from openbid.workers.metrics import WorkerTotals

log = logging.getLogger("openbid.workers")

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0


def restart_delay_s(crashes_in_a_row: int) -> float:
    """The wait before restarting a worker that crashed `crashes_in_a_row` times in a row.

    >>> [restart_delay_s(n) for n in (1, 2, 3, 7, 50)]
    [0.5, 1.0, 2.0, 30.0, 30.0]
    """
    return min(BACKOFF_FIRST_S * 2 ** min(max(crashes_in_a_row - 1, 0), 16), BACKOFF_MAX_S)


def bind_listener(host: str, port: int) -> socket.socket:
    """One worker's socket, bound to `host:port` with SO_REUSEPORT (`StartupError` when it
    cannot be had) but not listening: the worker listens once it serves, and only then does
    the kernel count it in the port's group, so no connection waits for a worker still
    starting (or restarting)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise listen_error(host, port, exc) from None
    listener.setblocking(False)
    return listener


def claim_port(host: str, port: int) -> int:
    """Checks that nothing listens on `host:port` and returns the port (a free one for 0).

    The probe does not set SO_REUSEPORT: another process's SO_REUSEPORT group on the port
    (a second openbid started by mistake) would otherwise be joined silently, and the two
    would share the traffic."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        except OSError as exc:
            raise listen_error(host, port, exc) from None
        return port or probe.getsockname()[1]


def shared_tracker_secret(config: Config) -> Config:
    """Every worker must sign and verify trackers with one key: when the config names none,
    one random key for this run (a tracker signed by one worker reaches any other)."""
    settings = config.exchange
    if settings.tracker_secret_file:
        tracker_key(settings)  # one clear error here rather than N in the workers
        return config
    if settings.tracker_secret:
        return config
    log.warning(
        "no exchange.tracker_secret set: trackers are signed with a random key shared by "
        "this run's workers (trackers issued before a restart stop verifying)"
    )
    exchange = msgspec.structs.replace(settings, tracker_secret=secrets.token_hex(32))
    return msgspec.structs.replace(config, exchange=exchange)


class _Worker:
    """One slot: the process serving in it now, and its crash history."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.crashes_in_a_row = 0
        self.restarts = 0
        self.listener: socket.socket | None = None
        self.ready = False  # serving, its signal handlers installed

    def close_listener(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None


class Supervisor:
    """Starts, watches, restarts and stops the workers of one `openbid up`."""

    def __init__(self, config: Config, port: int, run_dir: Path) -> None:
        self.config = config
        self.host = config.server.host
        self.port = port
        self.run_dir = run_dir
        self.workers = [_Worker(i) for i in range(config.server.worker_count())]
        self.stopping = asyncio.Event()
        self._config_json = msgspec.json.encode(config)
        self._watchers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Starts every worker and waits until each serves; `StartupError` if one cannot."""
        results = await asyncio.gather(
            *(self._spawn(worker) for worker in self.workers), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            first = failures[0]
            raise first if isinstance(first, StartupError) else StartupError(str(first))
        self._watchers = [asyncio.create_task(self._watch(w)) for w in self.workers]
        log.info(
            "openbid workers serving",
            extra={
                "port": self.port,
                "workers": len(self.workers),
                "pids": [w.process.pid for w in self.workers if w.process is not None],
            },
        )

    async def _spawn(self, worker: _Worker) -> None:
        if worker.listener is None:
            worker.listener = bind_listener(self.host, self.port)
        fd = worker.listener.fileno()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "openbid.workers.child",
            "--index",
            str(worker.index),
            "--fd",
            str(fd),
            "--run-dir",
            str(self.run_dir),
            "--parent",
            str(os.getpid()),
            "--clock",
            clock.current().spec(),  # one market time for every process of the platform
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=(fd,),
            # Its own session: a terminal's Ctrl-C reaches the supervisor only, which stops
            # the workers in order (services first) instead of all at once.
            start_new_session=True,
        )
        worker.process = process
        worker.ready = False
        worker.started_at = time.monotonic()
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(self._config_json)
        with contextlib.suppress(ConnectionError):
            await process.stdin.drain()
        process.stdin.close()
        try:
            line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise StartupError(
                f"worker {worker.index} did not start serving in {READY_TIMEOUT_S:.0f} s"
            ) from None
        text = line.decode(errors="replace").strip()
        if text != "ready":
            code = await process.wait()
            reason = text.removeprefix("error ") if text else f"exited with status {code}"
            raise StartupError(reason)
        worker.ready = True

    async def _watch(self, worker: _Worker) -> None:
        """Restarts `worker` whenever it exits, with backoff, until the stop."""
        while True:
            process = worker.process
            assert process is not None
            code = await process.wait()
            worker.ready = False
            if self.stopping.is_set():
                return
            # Its socket leaves the port's group at once: new connections go to the live
            # workers instead of waiting in a queue nobody accepts from (those already
            # queued are reset, as they would be had the socket been the worker's alone).
            worker.close_listener()
            lived_s = time.monotonic() - worker.started_at
            worker.crashes_in_a_row = (
                1 if lived_s >= STABLE_AFTER_S else worker.crashes_in_a_row + 1
            )
            delay_s = restart_delay_s(worker.crashes_in_a_row)
            log.error(
                "worker exited: restarting it",
                extra={
                    "worker": worker.index,
                    "pid": process.pid,
                    "status": _describe_status(code),
                    "lived_s": round(lived_s, 1),
                    "crashes_in_a_row": worker.crashes_in_a_row,
                    "restart_in_s": delay_s,
                },
            )
            while not self.stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay_s)
                if self.stopping.is_set():
                    return
                try:
                    await self._spawn(worker)
                except (StartupError, OSError) as exc:
                    worker.crashes_in_a_row += 1
                    delay_s = restart_delay_s(worker.crashes_in_a_row)
                    log.error(
                        "worker restart failed",
                        extra={"worker": worker.index, "error": str(exc), "retry_in_s": delay_s},
                    )
                    continue
                worker.restarts += 1
                log.warning(
                    "worker restarted",
                    extra={
                        "worker": worker.index,
                        "pid": worker.process.pid,
                        "restarts": worker.restarts,
                    },
                )
                break

    def signal_all(self, signum: int) -> None:
        """Sends `signum` to every running worker (safe from any thread). SIGHUP and SIGUSR1
        (a reload, whose default action would end the process) only reach workers that
        serve: one still starting reads the catalog and the model as it opens anyway."""
        for worker in list(self.workers):
            process = worker.process
            if signum in (signal.SIGHUP, signal.SIGUSR1) and not worker.ready:
                continue
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    async def stop(self) -> None:
        """SIGTERM to every worker, each drains and rolls its event log; kill past the timeout."""
        self.stopping.set()
        self.signal_all(signal.SIGTERM)
        running = [w.process for w in self.workers if w.process is not None]
        waits = [asyncio.create_task(p.wait()) for p in running]
        if waits:
            _, late = await asyncio.wait(waits, timeout=STOP_TIMEOUT_S)
            for process in running:
                if process.returncode is None:
                    log.error("worker did not stop in time: killed", extra={"pid": process.pid})
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for worker in self.workers:
            worker.close_listener()


def _describe_status(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


class SupervisedPlatform:
    """What a service (the demo) sees of the platform when workers serve: the config, the
    shared port, the catalog, and a catalog refresh that reaches every worker."""

    def __init__(self, config: Config, supervisor: Supervisor, catalog: Catalog) -> None:
        self.config = config
        self.port = supervisor.port
        self.catalog = catalog
        self.exchange_server = _RefreshEveryWorker(supervisor)


class _RefreshEveryWorker:
    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def refresh(self) -> None:
        self._supervisor.signal_all(signal.SIGUSR1)


Service = Callable[[SupervisedPlatform], Awaitable[None]]


async def run_workers(config: Config, services: list | None = None) -> None:
    """Runs `server.workers` workers until SIGINT or SIGTERM; `services` run here, beside them
    (the demo's market and traffic), once every worker serves."""
    from openbid.obs import REGISTRY

    if config.server.engine == "granian":
        require_granian()  # one clear message here rather than one per worker
    config = shared_tracker_secret(config)
    # `auto` resolved once: every worker must agree on N (its share of the QPS caps).
    server = msgspec.structs.replace(config.server, workers=config.server.worker_count())
    config = msgspec.structs.replace(config, server=server)
    catalog = Catalog(config.stores.catalog_url)
    try:
        await asyncio.to_thread(catalog.migrate)
    except StoreUnavailable:
        catalog.close()
        raise
    try:
        port = claim_port(config.server.host, config.server.port)
    except StartupError:
        catalog.close()
        raise
    run_dir = Path(tempfile.mkdtemp(prefix="openbid-workers-"))
    supervisor = Supervisor(config, port, run_dir)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, supervisor.stopping.set)
    for signum in (signal.SIGHUP, signal.SIGUSR1):
        loop.add_signal_handler(signum, supervisor.signal_all, signum)
    tasks: list[asyncio.Task[None]] = []
    totals = WorkerTotals(run_dir)
    try:
        await supervisor.start()
        if services:
            REGISTRY.register(totals)  # type: ignore[arg-type]
            tasks.append(asyncio.create_task(totals.refresh_forever()))
            shown = SupervisedPlatform(config, supervisor, catalog)
            tasks += [asyncio.create_task(service(shown)) for service in services]
        await supervisor.stopping.wait()
        log.info("stop requested: stopping the workers")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await supervisor.stop()
        if services:
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(totals)  # type: ignore[arg-type]
        catalog.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
            loop.remove_signal_handler(signum)
        log.info("openbid stopped")
