"""The roller: turns closed log files into Parquet segments, on a thread of its own.

`roll_log_file` is one roll: under the file's `flock`, read it, write its segments (one per
kind and hour) to the segment store, then delete it. `Roller` queues the files to roll,
retries a failed roll with backoff (1 s, doubling up to a minute) and counts the files
waiting; in a server it runs each roll in a fresh low-priority process (`rollproc`), so the
Parquet work never holds the serving process's GIL, and after ROLL_CHILD_MAX_FAILURES roll
processes in a row that died or could not start it rolls in its own thread.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from openbid.events.columns import records_to_tables
from openbid.events.errors import EventLogError, RollProcessError
from openbid.events.framing import WAL_SUFFIX, parse_log
from openbid.events.metrics import EVENTS_BAD_EVENTS, EVENTS_BAD_RECORDS, EVENTS_LOGS_WAITING
from openbid.events.segments import SegmentStore
from openbid.events.segments.local import fsync_dir
from openbid.obs import JsonFormatter

log = logging.getLogger(__name__)

# A failed roll (disk full, object store down) is retried after 1 s, doubling up to a minute.
ROLL_RETRY_S = 1.0
ROLL_RETRY_MAX_S = 60.0
# A roll in the child process taking longer than this is stuck (a hung object store): the
# child is killed and the roll retried. After this many roll-process failures in a row the
# writer rolls in its own process instead.
ROLL_TIMEOUT_S = 600.0
ROLL_CHILD_MAX_FAILURES = 3


def roll_log_file(path: Path, segments: SegmentStore) -> int | None:
    """Turns one closed log file into Parquet segments, then deletes it; returns the rows.

    The file's `flock` is held from reading to deleting, so two processes never roll the same
    file at once: when another one holds it (its writer, or another roller) nothing is done
    and None is returned. Segment names derive from the log file's name, so rolling the
    same file again after a crash overwrites the same segments instead of duplicating events.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0  # rolled by another process
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        try:
            named = os.stat(path)
        except FileNotFoundError:
            return 0  # rolled and deleted by another process while we waited for the lock
        opened = os.fstat(fd)
        if (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
            return 0
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
        records, _ = parse_log(data, str(path))
        tables = records_to_tables(records)
        segments.remove_temp_files(path.stem)
        for (kind, hour), table in tables.items():
            segments.write(table, segments.path(kind, hour, path.stem))
        path.unlink()
        fsync_dir(path.parent)
        return sum(t.num_rows for t in tables.values())
    finally:
        os.close(fd)


# The roll process (see openbid.events.rollproc) runs at Linux's SCHED_IDLE from its first
# instruction, inherited from the roller thread (`_idle_this_thread`): only on CPU time the
# server leaves idle, preempted the moment the server wakes. Before anything is imported it
# ignores the signals a terminal or a service manager sends to everything (the server
# finishes its rolls on shutdown, then stops) and takes `nice` 10, the priority that holds
# where SCHED_IDLE is missing or refused.
_ROLL_CHILD_PRELUDE = (
    "import os, signal\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGTTOU, signal.SIG_IGN)\n"  # in a terminal's background group,
    "signal.signal(signal.SIGTTIN, signal.SIG_IGN)\n"  # `stty tostop` must not stop it
    "try:\n"
    "    os.nice(10)\n"
    "except OSError:\n"  # not permitted: rolls at normal priority
    "    pass\n"
)
_ROLL_CHILD_MAIN = "from openbid.events.rollproc import main\nmain()\n"


ROLL_RESULT_MARKER = "openbid-roll-result "
"""The roll process's result line starts with this (then JSON)."""


def _standard_level_name(level: int) -> str:
    """The name of the highest standard logging level at or below `level` ("Level 15" is
    not a name the roll process could set)."""
    for number, name in ((50, "critical"), (40, "error"), (30, "warning"), (20, "info")):
        if level >= number:
            return name
    return "debug"


def _idle_this_thread() -> None:
    """Puts the calling thread (the roller, which only waits for roll processes) at Linux's
    SCHED_IDLE, a per-thread setting that a process it starts inherits, so the roll process
    runs at it from its first instruction (lowering its own priority once started would
    leave its interpreter's start-up, 20-30 ms of CPU, sharing the server's core). Once set
    it stays (an unprivileged thread cannot raise it again), which the roller, idle but for
    its waits, never needs."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or refused
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


class Roller:
    """Rolls the closed log files queued to it on its thread (`start()`), retrying failed
    rolls with backoff; `logs_waiting` counts the files not rolled yet."""

    def __init__(self, segments: SegmentStore, *, in_subprocess: bool = False) -> None:
        self.segments = segments
        self.in_subprocess = in_subprocess
        self.child: subprocess.Popen[bytes] | None = None  # the roll process, while it runs
        self.child_failures = 0  # roll process failures in a row
        self.child_given_up = False
        # Closed log files to roll, with how often rolling each has failed; those that failed
        # wait in _retry (due time, failures, path) until their backoff has passed.
        self._queue: collections.deque[tuple[Path, int]] = collections.deque()
        self._retry: list[tuple[float, int, Path]] = []
        self._wake = threading.Event()
        self._idle = threading.Condition()  # guards the counts and _retry
        self._pending = 0  # queued or being rolled
        self._logs_waiting = 0  # queued, being rolled or waiting for a retry
        self._stopping = False
        self.thread = threading.Thread(target=self._loop, name="event-roll", daemon=True)

    def start(self) -> None:
        self.thread.start()

    @property
    def logs_waiting(self) -> int:
        """Closed log files not rolled yet: queued, being rolled or waiting for a retry."""
        return self._logs_waiting

    def enqueue(self, path: Path) -> None:
        """Queues a closed log file for rolling."""
        with self._idle:
            self._pending += 1
            self._logs_waiting += 1
        EVENTS_LOGS_WAITING.inc()
        self._queue.append((path, 0))
        self._wake.set()

    def enqueue_orphans(self, wal_dir: Path, *, own: Path | None) -> None:
        """Queues the log files of writers that died (their lock is free), all but `own`."""
        for path in sorted(wal_dir.glob(f"*{WAL_SUFFIX}")):
            if path == own:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer holds it
            finally:
                os.close(fd)
            log.info("recovering event log of a stopped writer", extra={"file": str(path)})
            self.enqueue(path)

    def retry_now(self) -> None:
        """Files waiting for a retry get one now."""
        self._queue_retries(due_by=math.inf)

    def _queue_retries(self, *, due_by: float) -> None:
        """Moves the files whose retry is due by `due_by` back to the roll queue."""
        with self._idle:
            due = [item for item in self._retry if item[0] <= due_by]
            if not due:
                return
            self._retry = [item for item in self._retry if item[0] > due_by]
            self._pending += len(due)
        self._queue.extend((path, failures) for _, failures, path in due)
        self._wake.set()

    def wait(self, timeout_s: float) -> None:
        """Blocks until every queued file was tried (rolled, or failed and waiting)."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._pending == 0, timeout=timeout_s):
                raise EventLogError(f"event log roll did not finish within {timeout_s} s")

    def stop(self, timeout_s: float) -> None:
        """Rolls what is queued, then stops the thread (files waiting for a retry are left
        for the next writer to start) and any roll process still running."""
        self._stopping = True
        self._wake.set()
        self.thread.join(timeout_s)
        self.stop_child()

    def stop_child(self) -> None:
        """Kills the roll process should one still run (its roll is retried at the next start:
        the file stays until its segments are written)."""
        child = self.child
        if child is not None and child.poll() is None:
            log.warning("stopping the event log roll process", extra={"pid": child.pid})
            with contextlib.suppress(OSError):
                child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(10)

    def _loop(self) -> None:
        while True:
            with self._idle:
                next_due = min((item[0] for item in self._retry), default=math.inf)
            self._wake.wait(min(1.0, max(0.0, next_due - time.monotonic())))
            self._wake.clear()
            self._queue_retries(due_by=time.monotonic())
            while self._queue:
                path, failures = self._queue.popleft()
                rolled = False
                try:
                    rows = self._roll_one(path)
                    if rows is None:
                        log.info(
                            "event log is being rolled elsewhere; checking again later",
                            extra={"file": str(path)},
                        )
                    else:
                        rolled = True
                        log.debug("rolled event log", extra={"file": str(path), "rows": rows})
                except Exception:
                    log.exception(
                        "rolling event log failed; will retry",
                        extra={"file": str(path), "failures": failures + 1},
                    )
                with self._idle:
                    if rolled:
                        self._logs_waiting -= 1
                        EVENTS_LOGS_WAITING.dec()
                    else:
                        backoff = min(ROLL_RETRY_MAX_S, ROLL_RETRY_S * 2**failures)
                        self._retry.append((time.monotonic() + backoff, failures + 1, path))
                    self._pending -= 1
                    self._idle.notify_all()
            if self._stopping and not self._queue:
                with self._idle:
                    left = len(self._retry)
                if left:
                    log.warning(
                        "event log files left unrolled for the next start",
                        extra={"files": [str(item[2]) for item in self._retry]},
                    )
                    EVENTS_LOGS_WAITING.dec(left)
                return

    def _roll_one(self, path: Path) -> int | None:
        """Rolls one file, in this thread or in a low-priority roll process.

        Turning a log file into Parquet holds the GIL for about as long as the events took
        to serve (decoding, column building), so a serving process rolls in a child process
        at low CPU priority: the event loop never waits for the roll. A roll process that
        dies or is stuck fails this roll (retried like any failed roll); after
        ROLL_CHILD_MAX_FAILURES that could not start or died in a row, the writer rolls in
        its own process."""
        if not self.in_subprocess or self.child_failures >= ROLL_CHILD_MAX_FAILURES:
            if self.in_subprocess and not self.child_given_up:
                self.child_given_up = True
                log.error(
                    "the roll process failed repeatedly; rolling in this process from now on",
                    extra={"failures": self.child_failures},
                )
            return roll_log_file(path, self.segments)
        try:
            result = self._roll_in_child(path)
        except RollProcessError as error:
            # A roll process that runs but does not finish in time was most likely starved
            # (at SCHED_IDLE it gets no CPU while the server's cores are saturated): rolling
            # in this process instead would take that CPU from serving. Only roll processes
            # that cannot start or die count towards giving them up.
            if not error.stuck:
                self.child_failures += 1
            raise
        self.child_failures = 0
        if result.get("error"):
            raise EventLogError(f"the roll process failed: {result['error']}")
        if result.get("bad_records"):
            EVENTS_BAD_RECORDS.inc(result["bad_records"])
        if result.get("bad_events"):
            EVENTS_BAD_EVENTS.inc(result["bad_events"])
        return result["rows"]

    def _roll_in_child(self, path: Path) -> dict:
        """Runs one roll process for `path` and returns what it printed (its JSON line).

        A fresh interpreter (not a fork, nor multiprocessing's spawn, which would import the
        server's main module first), in a process group of its own so a Ctrl-C in a terminal
        does not reach it, but in the server's session: with autogroup scheduling (Linux's
        default), a session of its own would be a scheduling group of its own, given as much
        CPU as the server whatever its priority. Killed when it takes longer than
        ROLL_TIMEOUT_S."""
        root = logging.getLogger()
        json_logs = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
        # The arguments go on stdin, not the command line, where every local user could read
        # them (a segments URL may carry credentials).
        arguments = json.dumps(
            {
                "path": str(path),
                "segments_url": self.segments.url,
                "log_level": _standard_level_name(root.getEffectiveLevel()),
                "log_format": "json" if json_logs else "text",
                "server_pid": os.getpid(),
            }
        ).encode()
        # `-P`: the current directory is not put on the import path (it could hold another
        # `openbid`); the child imports exactly what this process can import.
        command = [sys.executable, "-P", "-c", _ROLL_CHILD_PRELUDE + _ROLL_CHILD_MAIN]
        _idle_this_thread()  # the roll process inherits it from its first instruction
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        try:
            child = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                process_group=0,
                close_fds=True,
            )
        except OSError as error:
            raise RollProcessError(f"the roll process could not start: {error}") from error
        self.child = child
        try:
            try:
                out, _ = child.communicate(arguments, timeout=ROLL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()  # it ignores SIGTERM
                child.communicate()  # reaps it and closes the pipes
                raise RollProcessError(
                    f"the roll process was stuck for {ROLL_TIMEOUT_S} s and was killed",
                    stuck=True,
                ) from None
        finally:
            if child.poll() is None:  # interrupted some other way: never left running
                child.kill()
                child.wait()
            self.child = None
        result = None
        for line in reversed(out.decode("utf-8", "replace").splitlines()):
            if line.startswith(ROLL_RESULT_MARKER):  # whatever else a library printed
                with contextlib.suppress(ValueError):
                    result = json.loads(line.removeprefix(ROLL_RESULT_MARKER))
                break
        if child.returncode != 0 or not isinstance(result, dict):
            raise RollProcessError(f"the roll process exited with {child.returncode} and no result")
        return result
