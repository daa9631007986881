"""The scheduler's job process: runs training jobs (`openbid.pipeline.train.run_job`) one at
a time for the scheduler that started it, never by hand.

Started by `openbid.pipeline.scheduler.JobRunner` as `python -P -c "<nice>; from
openbid.pipeline.scheduler_job import main; main()"` at `scheduler.job_nice`, in the
scheduler's session (a new session would be a scheduling group of its own, as strong as
the exchange) but its own process group (a terminal's Ctrl-C reaches the scheduler, which
stops it). It reads one JSON request per line on stdin, `{"purpose", "config", "clock"}`
(the configuration on stdin, never on the command line: it may hold credentials), and
answers each with one line on stdout: `openbid-job-result ` then the `JobResult` as JSON
(an error is a `failed` result with the reason). The process lives across jobs, so MLflow,
DuckDB and the numba kernels are loaded once. It logs to stderr (the scheduler forwards it)
and exits when stdin closes or its scheduler dies.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import msgspec

RESULT_MARKER = "openbid-job-result "

log = logging.getLogger(__name__)


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(0)


def handle(line: str, state: dict) -> str:
    """One request line in, its result line out."""
    from openbid import clock
    from openbid.config import Config
    from openbid.obs import setup_logging
    from openbid.pipeline.train import JobResult, run_job

    request = msgspec.json.decode(line)
    purpose = str(request.get("purpose", ""))
    try:
        config = msgspec.convert(request["config"], Config)
        if state.get("logging") != (config.logging.level, config.logging.format):
            setup_logging(config.logging.level, config.logging.format)
            if config.logging.level != "debug":  # a search logs every trial: not an operator's
                logging.getLogger("openbid.ml").setLevel(logging.WARNING)
            state["logging"] = (config.logging.level, config.logging.format)
        clock.set_clock(clock.Clock.from_spec(request.get("clock", "real")))
        result = run_job(purpose, config)
    except Exception as exc:  # any failure is the scheduler's to retry, with its reason
        log.exception("training job failed", extra={"purpose": purpose})
        text = str(exc).splitlines()[0][:500] if str(exc) else ""
        result = JobResult(purpose=purpose, status="failed", reason=f"{type(exc).__name__}: {text}")
    return RESULT_MARKER + msgspec.json.encode(result).decode()


def main() -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    state: dict = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        answer = handle(line, state)
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()
