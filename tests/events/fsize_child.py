"""A writer whose log file hits the file size limit (RLIMIT_FSIZE) mid-record, as on a full disk.

The kernel then writes part of a record and fails the rest with EFBIG. Prints, in order:
`flush_failed <bool>`, `emitted <n>`, then exits; the parent reads the directory back.
"""

import logging
import resource
import signal
import sys

from openbid.events import ClickEvent, EventLog, EventLogError


def main() -> None:
    directory = sys.argv[1]
    logging.disable(logging.CRITICAL)  # here, not at import: pytest imports this for doctests
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    log = EventLog(directory, flush_interval_s=0.05)
    emitted = 0

    def emit(count: int) -> None:
        nonlocal emitted
        for _ in range(count):
            log.emit(ClickEvent(1_700_000_000_000_000, f"a{emitted}", f"b{emitted}"))
            emitted += 1

    emit(1000)
    log.flush()
    assert log._wal_path is not None
    size = log._wal_path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 500, hard))  # full mid-record
    emit(1000)
    try:
        log.flush(timeout_s=0.5)
        print("flush_failed False", flush=True)
    except EventLogError:
        print("flush_failed True", flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space comes back
    emit(1000)
    log.flush()
    log.close()
    print(f"emitted {emitted}", flush=True)


if __name__ == "__main__":
    main()
