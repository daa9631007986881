"""The scheduler `openbid up` runs: every `scheduler.interval_s` of market time, for each
purpose of `scheduler.purposes`, one training job (ETL -> train -> gate -> register ->
promote: `openbid.pipeline.train`), recorded in the run table (`openbid.pipeline.runs`).

- It runs in one process (the supervisor of `server.workers`, or the single serving
  process), the only writer of the run table; jobs run one at a time, so the registry
  (MLflow on SQLite dislikes concurrent writers) has one writer.
- Jobs run in a child process (`openbid.pipeline.scheduler_job`) at `nice`
  `scheduler.job_nice`, off the event loop and the serving process's GIL, so the exchange's
  latency holds; the child lives across jobs (MLflow, DuckDB and numba load once), is
  restarted when it dies, and killed past `scheduler.job_timeout_s`.
- A failed job (an error, a crash, a timeout; not a refusal by the gate, not too little
  data) is retried `scheduler.retries` times, after `retry_backoff_s` doubling each time,
  never past the purpose's next run.
- Schedules run on the one clock: in the demo (`--speed 60`) an interval of 1800 s of
  market time is 30 real seconds.

The same jobs run from cron or an orchestrator as `openbid train <purpose>` (docs/pipeline.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from openbid import clock
from openbid.config import Config
from openbid.pipeline.runs import RunTable
from openbid.pipeline.scheduler_job import RESULT_MARKER

log = logging.getLogger(__name__)

MICROS = 1_000_000
RESTART_S = 10.0
"""Real seconds before a scheduler that failed unexpectedly is started again."""
_JOB_PRELUDE = (
    "import os, signal\n"
    "os.setpgid(0, 0)\n"  # its own group: a terminal's Ctrl-C is the scheduler's to handle
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGTTOU, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGTTIN, signal.SIG_IGN)\n"
    "try:\n"
    "    os.nice({nice})\n"
    "except OSError:\n"
    "    pass\n"
    "from openbid.pipeline.scheduler_job import main\n"
    "main()\n"
)


class JobError(Exception):
    """The job process died, timed out or answered nothing usable."""


class JobRunner:
    """The job process (`scheduler_job`): started on first use, one job at a time."""

    def __init__(self, *, nice: int = 10, timeout_s: float = 3600.0) -> None:
        self.nice = nice
        self.timeout_s = timeout_s
        self.process: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def _start(self) -> asyncio.subprocess.Process:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # never the current directory on the import path: this process's openbid
            "-c",
            _JOB_PRELUDE.format(nice=int(self.nice)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=16 * 1024 * 1024,
        )
        self._stderr_task = asyncio.create_task(self._forward_stderr(self.process))
        log.info("job process started", extra={"pid": self.process.pid, "nice": self.nice})
        return self.process

    @staticmethod
    async def _forward_stderr(process: asyncio.subprocess.Process) -> None:
        """The job's log lines, written where this process's own go (`sys.stderr` as it is
        at each line: the demo's live table shows them above itself)."""
        assert process.stderr is not None
        while True:
            line = await process.stderr.readline()
            if not line:
                return
            with contextlib.suppress(Exception):
                sys.stderr.write(line.decode("utf-8", "replace"))
                sys.stderr.flush()

    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Sends one job; its result as a dict. `JobError` when the process fails."""
        async with self._lock:
            process = self.process
            if process is None or process.returncode is not None:
                process = await self._start()
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(msgspec.json.encode(request) + b"\n")
                await process.stdin.drain()
                return await asyncio.wait_for(self._answer(process), self.timeout_s)
            except TimeoutError:
                await self._kill()
                raise JobError(
                    f"the job ran past scheduler.job_timeout_s ({self.timeout_s:g} s)"
                ) from None
            except (ConnectionError, BrokenPipeError) as exc:
                await self._kill()
                raise JobError(f"the job process is gone: {exc}") from None
            except BaseException:
                await self._kill()  # cancelled (the stop): never left running
                raise

    async def _answer(self, process: asyncio.subprocess.Process) -> dict[str, Any]:
        assert process.stdout is not None
        while True:
            line = await process.stdout.readline()
            if not line:
                code = await process.wait()
                raise JobError(f"the job process exited with status {code} before answering")
            text = line.decode("utf-8", "replace").rstrip("\n")
            if text.startswith(RESULT_MARKER):  # whatever else a library printed
                try:
                    return msgspec.json.decode(text.removeprefix(RESULT_MARKER))
                except msgspec.DecodeError as exc:
                    raise JobError(
                        f"the job process answered something unreadable: {exc}"
                    ) from None

    async def _kill(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._stderr_task, 5.0)

    async def close(self) -> None:
        """Stops the job process (stdin closed: it exits; killed if it does not)."""
        process = self.process
        if process is None:
            return
        if process.returncode is None and process.stdin is not None:
            process.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 5.0)
        await self._kill()


RunJob = Callable[[str], Awaitable[dict[str, Any]]]


def retry_delay_s(base_s: float, failures: int) -> float:
    """Market seconds before retry number `failures` (1, 2, ...): base, then doubling.

    >>> [retry_delay_s(60.0, n) for n in (1, 2, 3)]
    [60.0, 120.0, 240.0]
    """
    return base_s * 2.0 ** max(failures - 1, 0)


class Scheduler:
    """Runs `config.scheduler.purposes` on their interval (module doc). `run_job(purpose)`
    runs one job and returns its result as a dict (default: in the job process)."""

    def __init__(self, config: Config, *, run_job: RunJob | None = None) -> None:
        self.config = config
        self.settings = config.scheduler
        self.runner: JobRunner | None = None
        if run_job is None:
            self.runner = JobRunner(
                nice=self.settings.job_nice, timeout_s=self.settings.job_timeout_s
            )
            run_job = self._in_job_process
        self._run_job = run_job
        self._request_config = msgspec.to_builtins(config)
        self.next_due_s: dict[str, float] = {}
        self.runs: RunTable | None = None

    async def _in_job_process(self, purpose: str) -> dict[str, Any]:
        assert self.runner is not None
        request = {
            "purpose": purpose,
            "config": self._request_config,
            "clock": clock.current().spec(),
        }
        return await self.runner.run(request)

    async def run(self) -> None:
        """Runs until cancelled."""
        self.runs = await asyncio.to_thread(RunTable, self.settings.runs_db)
        abandoned = await asyncio.to_thread(self.runs.abandon_running, clock.now_micros())
        if abandoned:
            log.warning(
                "runs left running by a stopped scheduler marked failed", extra={"runs": abandoned}
            )
        first_s = clock.now() + self.settings.first_run_s
        self.next_due_s = {purpose: first_s for purpose in self.settings.purposes}
        log.info(
            "scheduler started",
            extra={
                "purposes": list(self.settings.purposes),
                "interval_s": self.settings.interval_s,
                "clock_speed": clock.current().speed,
                "runs_db": self.settings.runs_db,
            },
        )
        try:
            while True:
                purpose = min(self.next_due_s, key=lambda p: self.next_due_s[p])
                wait_s = self.next_due_s[purpose] - clock.now()
                if wait_s > 0:
                    await clock.current().sleep(wait_s)
                    continue  # the soonest may have changed while sleeping: look again
                started_s = clock.now()
                await self.run_purpose(purpose)
                self.next_due_s[purpose] = started_s + self.settings.interval_s
        finally:
            if self.runner is not None:
                await self.runner.close()
            await asyncio.to_thread(self.runs.close)

    async def run_purpose(self, purpose: str) -> dict[str, Any]:
        """One scheduled run of `purpose`, with its retries; each attempt is a row."""
        assert self.runs is not None
        deadline_s = clock.now() + self.settings.interval_s
        attempt = 0
        while True:
            attempt += 1
            result = await self._attempt(purpose, attempt)
            if result.get("status") != "failed" or attempt > self.settings.retries:
                return result
            delay_s = retry_delay_s(self.settings.retry_backoff_s, attempt)
            if clock.now() + delay_s >= deadline_s:
                log.error(
                    "training job failed; no retry before its next run",
                    extra={"purpose": purpose, "attempt": attempt},
                )
                return result
            log.warning(
                "training job failed; retrying",
                extra={
                    "purpose": purpose,
                    "attempt": attempt,
                    "retry_in_s": delay_s,
                    "reason": result.get("reason", ""),
                },
            )
            await clock.current().sleep(delay_s)

    async def _attempt(self, purpose: str, attempt: int) -> dict[str, Any]:
        assert self.runs is not None
        runs = self.runs
        run_id = await asyncio.to_thread(runs.start, purpose, clock.now_micros(), attempt)
        started = time.perf_counter()
        try:
            result = await self._run_job(purpose)
        except JobError as exc:
            result = {"purpose": purpose, "status": "failed", "reason": str(exc)}
        except asyncio.CancelledError:
            await asyncio.to_thread(
                runs.finish,
                run_id,
                status="failed",
                ended_micros=clock.now_micros(),
                real_seconds=time.perf_counter() - started,
                reason="interrupted: the scheduler stopped during the job",
            )
            raise
        await asyncio.to_thread(
            runs.finish,
            run_id,
            status=str(result.get("status", "failed")),
            ended_micros=clock.now_micros(),
            real_seconds=time.perf_counter() - started,
            rows=int(result.get("rows", 0)),
            positives=float(result.get("positives", 0.0)),
            metrics=dict(result.get("metrics") or {}),
            version=str(result.get("version", "")),
            promoted=bool(result.get("promoted", False)),
            reason=str(result.get("reason", "")),
            trained_end_micros=int(result.get("trained_end_micros", 0)),
            window_until_micros=int(result.get("window_until_micros", 0)),
        )
        return result


def scheduler_service(config: Config) -> Callable[[Any], Awaitable[None]]:
    """The scheduler as a service of `openbid up` (it needs nothing of the platform)."""

    async def run(platform: Any) -> None:
        while True:
            try:
                await Scheduler(config).run()
            except Exception:  # never silently gone: logged, and started again
                log.exception("the scheduler failed; starting it again in %g s", RESTART_S)
                await asyncio.sleep(RESTART_S)

    return run
