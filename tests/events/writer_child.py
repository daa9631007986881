"""A writer process for the crash test: emits events forever and reports progress.

Every 20 ms it prints `<last_seq> <monotonic_time>` to stdout so the parent knows which
events had been handed to the log, and when, before it is killed.
"""

import sys
import time

from openbid.events import BidEvent, EventLog, now_micros


def main() -> None:
    directory, flush_s, roll_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    log = EventLog(directory, flush_interval_s=flush_s, roll_interval_s=roll_s)
    seq = 0
    last_report = 0.0
    while True:
        for _ in range(50):
            log.emit(BidEvent(now_micros(), f"auction-{seq}", "dsp-a", price_micros=seq))
            seq += 1
        now = time.monotonic()
        if now - last_report >= 0.02:
            print(seq - 1, now, flush=True)
            last_report = now
        time.sleep(0.001)


if __name__ == "__main__":
    main()
