"""One serving process of `server.workers > 1`: `python -m openbid.workers.child`, started
by the supervisor, never by hand.

It reads the effective configuration as JSON on stdin (the tracker secret included, so it
never shows in a process list), serves on the listening socket it inherits (`--fd`), and
tells the supervisor on stdout: `ready` once it serves, or `error <message>` if it cannot
start. It dies with the supervisor (Linux's parent-death signal), so a `kill -9` of the
supervisor leaves no worker serving on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import msgspec

from openbid import clock
from openbid.config import Config
from openbid.errors import OpenbidError
from openbid.obs import setup_logging
from openbid.platform import Platform, run_platform
from openbid.workers.metrics import WorkerMetrics
from openbid.workers.qps import keep_shared_qps

log = logging.getLogger("openbid.workers")
EXIT_CANNOT_START = 3


def _die_with_parent(parent_pid: int) -> None:
    """SIGTERM this process when the supervisor dies (Linux); elsewhere the supervisor's own
    stop is the only stop."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # it died before the call
        os.kill(os.getpid(), signal.SIGTERM)


class _WorkerField(logging.Filter):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def _tell(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--clock", default="real", help="the supervisor's clock spec")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    clock.set_clock(clock.Clock.from_spec(args.clock))
    config = msgspec.json.decode(sys.stdin.buffer.read(), type=Config)
    sys.stdin.close()
    setup_logging(config.logging.level, config.logging.format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerField(args.index))
    listener = socket.socket(fileno=args.fd)
    metrics = WorkerMetrics(args.index, args.run_dir)

    async def serve_metrics(platform: Platform) -> None:
        await metrics.start()
        platform.router.add("GET", "/metrics", metrics.gathered, safe=True)
        try:
            await asyncio.Event().wait()
        finally:
            await metrics.stop()

    async def share_qps_caps(platform: Platform) -> None:
        assert platform.exchange is not None and platform.counters is not None
        await keep_shared_qps(
            platform.exchange.registry, platform.counters, config.server.worker_count(), args.index
        )

    def ready(platform: Platform) -> None:
        _tell("ready")

    services = [serve_metrics, share_qps_caps]
    try:
        _run(run_platform(config, services, sock=listener, migrate=False, on_serving=ready))
    except OpenbidError as exc:
        log.error("worker cannot start", extra={"error": str(exc)})
        _tell(f"error {exc}")
        return EXIT_CANNOT_START
    return 0


def _run(coroutine) -> None:  # type: ignore[no-untyped-def]
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
        return
    uvloop.run(coroutine)


if __name__ == "__main__":
    sys.exit(main())
