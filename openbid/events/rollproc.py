"""The roll process: rolls one closed event log file into Parquet segments, then exits.

The roller (`openbid.events.roller.Roller`, for a writer with `roll_in_subprocess`) starts
it once per roll as

    python -P -c "<lower the priority, ignore signals>; from openbid.events.rollproc
    import main; main()"

in a process group of its own (in the server's session: with Linux's autogroup scheduling,
a new session would be a scheduling group as strong as the server), with its arguments as
one JSON object on stdin (not the command line, which every local user can read: a
segments URL may carry credentials) and the server's import path as PYTHONPATH (`-P`:
never the current directory). It runs at SCHED_IDLE (only CPU time the server leaves idle)
from its first instruction, inherited from the roller thread that starts it, and takes
`nice` 10 (what holds where SCHED_IDLE is missing) before anything is imported; the
server's main module (`openbid.cli`, click, the config) is never imported. It reopens the
segment store from its URL (credentials from the environment it inherits) and prints one
line to stdout, `openbid-roll-result ` then JSON: `{"rows": n, "bad_records": n,
"bad_events": n}` (its counters are not the server's, so the server counts what it
skipped), or `{"error": "..."}` when the roll failed (the server retries it like any failed
roll). Should the server die (its close kills a roll
process it stops waiting for), the roll process exits too, within a second of its imports:
the file stays for the next writer to roll.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from openbid.events.metrics import EVENTS_BAD_EVENTS, EVENTS_BAD_RECORDS
from openbid.events.roller import ROLL_RESULT_MARKER, roll_log_file
from openbid.events.segments import open_segment_store
from openbid.obs import setup_logging

log = logging.getLogger(__name__)


def roll(path: str, segments_url: str) -> dict[str, object]:
    """Rolls `path`; the rows, or None when another process holds the file, and what the
    roll skipped as damaged."""
    records_before = EVENTS_BAD_RECORDS._value.get()
    events_before = EVENTS_BAD_EVENTS._value.get()
    rows = roll_log_file(Path(path), open_segment_store(segments_url))
    return {
        "rows": rows,
        "bad_records": EVENTS_BAD_RECORDS._value.get() - records_before,
        "bad_events": EVENTS_BAD_EVENTS._value.get() - events_before,
    }


def _exit_with_server(server_pid: int) -> None:
    """Exits this process once its server is gone (it is then a child of another process)."""
    while os.getppid() == server_pid:
        time.sleep(1.0)
    log.warning("the server stopped; the roll process stops with it")
    os._exit(1)


def main(arguments: dict[str, object] | None = None) -> None:
    """Reads its arguments as one JSON object on stdin (`path`, `segments_url`, `log_level`,
    `log_format`, `server_pid`), rolls, prints the result line."""
    args = json.loads(sys.stdin.read()) if arguments is None else arguments
    setup_logging(str(args["log_level"]), str(args["log_format"]))
    threading.Thread(
        target=_exit_with_server,
        args=(int(args["server_pid"]),),  # type: ignore[call-overload]
        name="server-watch",
        daemon=True,
    ).start()
    try:
        result = roll(str(args["path"]), str(args["segments_url"]))
    except Exception as error:  # reported to the server, which logs it and retries
        result = {"error": f"{type(error).__name__}: {error}"}
    # Should the server be gone, the roll itself is done (or not) on disk all the same.
    with contextlib.suppress(BrokenPipeError):
        print(ROLL_RESULT_MARKER + json.dumps(result), flush=True)
