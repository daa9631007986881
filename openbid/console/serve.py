"""The console's process: `python -m openbid.console` reads the configuration (JSON) on
stdin, serves the app with uvicorn on `console.host:console.port`, keeps the report rollups
current, and says `ready <port>` on stdout once it listens. `console_service` is what
`openbid up` runs beside the servers: it starts that process, restarts it with backoff when
it dies, and stops it (SIGTERM, then SIGKILL) when `openbid up` stops. The console never
runs on a serving process's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

import msgspec

from openbid.config import Config

log = logging.getLogger("openbid.console")

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0


def console_url(config: Config) -> str:
    settings = config.console
    return f"http://{settings.host}:{settings.port}"


async def _orphaned(parent_pid: int) -> None:
    """Returns once the process that started us is gone (killed with SIGKILL, it could not
    stop us): a console must not outlive its `openbid up`."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)


async def serve(config: Config, parent_pid: int = 0) -> None:
    """Runs the console in this process until SIGTERM/SIGINT (or, with `parent_pid`, until
    that process is gone)."""
    import uvicorn

    from openbid.console.app import create_app
    from openbid.console.context import ConsoleContext

    context = await asyncio.to_thread(ConsoleContext.open, config)
    app = create_app(context, start_background=True)
    settings = config.console
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,  # openbid's JSON logging, set up by the caller
            access_log=False,
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task  # raises what stopped it (a port in use ...)
                raise SystemExit(f"console.port: cannot listen on {settings.host}:{settings.port}")
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1] if server.servers else settings.port
        sys.stdout.write(f"ready {port}\n")
        sys.stdout.flush()
        if parent_pid:
            watcher = asyncio.create_task(_orphaned(parent_pid))
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done():
                log.warning("openbid up is gone: the console stops")
                server.should_exit = True
            watcher.cancel()
        await task
    finally:
        await asyncio.to_thread(context.close)


def main() -> None:
    from openbid import clock
    from openbid.obs import setup_logging

    config = msgspec.json.decode(sys.stdin.buffer.read(), type=Config)
    setup_logging(config.logging.level, config.logging.format)
    arguments = dict(zip(sys.argv[1::2], sys.argv[2::2], strict=False))
    # The market clock of the process that started us (the demo's may run faster).
    if "--clock" in arguments:
        clock.set_clock(clock.Clock.from_spec(arguments["--clock"]))
    parent_pid = int(arguments.get("--parent", "0"))
    try:
        asyncio.run(serve(config, parent_pid))
    except SystemExit as exc:
        sys.stdout.write(f"error {exc}\n")
        sys.stdout.flush()
        raise


async def _start(config: Config) -> asyncio.subprocess.Process:
    from openbid import clock

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openbid.console",
        "--clock",
        clock.current().spec(),
        "--parent",
        str(os.getpid()),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,  # Ctrl-C reaches `openbid up`, which stops us in order
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(msgspec.json.encode(config))
    with contextlib.suppress(ConnectionError):
        await process.stdin.drain()
    process.stdin.close()
    try:
        line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"the console did not start in {READY_TIMEOUT_S:.0f} s") from None
    text = line.decode(errors="replace").strip()
    if not text.startswith("ready"):
        code = await process.wait()
        raise RuntimeError(text.removeprefix("error ") or f"the console exited ({code})")
    return process


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        log.error("the console did not stop in time: killed", extra={"pid": process.pid})
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def console_service(platform: Any) -> None:
    """Runs the console process while `openbid up` runs (a service of the platform or the
    supervisor: only `platform.config` is read); a console that dies is restarted after a
    backoff, and serving never depends on it."""
    config: Config = platform.config
    crashes = 0
    while True:
        try:
            process = await _start(config)
        except (RuntimeError, OSError) as exc:
            crashes += 1
            delay_s = min(BACKOFF_FIRST_S * 2 ** (crashes - 1), BACKOFF_MAX_S)
            log.error("console failed to start", extra={"error": str(exc), "retry_in_s": delay_s})
            await asyncio.sleep(delay_s)
            continue
        log.info("console serving", extra={"url": console_url(config), "pid": process.pid})
        try:
            code = await process.wait()
        except asyncio.CancelledError:
            await asyncio.shield(_stop(process))
            raise
        crashes += 1
        delay_s = min(BACKOFF_FIRST_S * 2 ** (crashes - 1), BACKOFF_MAX_S)
        log.error("console exited: restarting it", extra={"status": code, "retry_in_s": delay_s})
        await asyncio.sleep(delay_s)
