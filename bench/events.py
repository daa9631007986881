"""Event log throughput: events/s written durably (emit, fsync'd log, Parquet segments)
and read back, against raw pyarrow writing the same rows to Parquet in the same run; and
the CPU a server pays per event for `emit` (the caller's thread) and the flusher thread.

    python bench/events.py [--quick] [--events N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from openbid.events import AuctionEvent, BidEvent, EventLog, EventReader, arrow_schema

T0 = 1_795_000_000 * 1_000_000
FLUSHER_THREAD = "event-flush"


def make_events(n: int) -> list:
    """A realistic mix: one auction event and eight per-DSP bid events per auction."""
    events = []
    features = {"country": "DE", "os": "iOS", "size": "300x250", "publisher": "pub-17"}
    for i in range(n // 9 + 1):
        auction_id = f"auc-{i:09d}"
        events.append(AuctionEvent(T0 + i, auction_id, f"req-{i}", "pub-17", features))
        for d in range(8):
            events.append(
                BidEvent(
                    T0 + i,
                    auction_id,
                    f"dsp-{d}",
                    bid=d == 3,
                    price_micros=1_200_000,
                    latency_ms=23.5,
                    shaping_score=0.12,
                )
            )
    return events[:n]


def _thread_cpu_s(name: str) -> float:
    """The CPU time a running thread of this process has used (by the thread's name)."""
    for thread in threading.enumerate():
        if thread.name == name and thread.ident is not None:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    raise LookupError(f"no thread named {name!r}")


def bench_ours(
    events: list, directory: Path, *, roll_in_subprocess: bool = False
) -> tuple[float, float, float, float, float]:
    """Wall time to write durably and to read back, the CPU time the writing process itself
    spent (with `roll_in_subprocess`, as in the server, the roll is not in it), and the CPU
    time of the two parts a server pays for: `emit` on the caller's thread and the flusher
    thread (each measured on its own thread's clock, so other processes matter less)."""
    start = time.perf_counter()
    cpu_start = time.process_time()
    log = EventLog(
        directory,
        flush_interval_s=0.2,
        roll_interval_s=3600,
        roll_in_subprocess=roll_in_subprocess,
    )
    flusher_start = _thread_cpu_s(FLUSHER_THREAD)
    emit_start = time.thread_time()
    for event in events:
        log.emit(event)
    emit_s = time.thread_time() - emit_start
    log.flush()  # everything emitted is written and fsync'd by the flusher
    flusher_s = _thread_cpu_s(FLUSHER_THREAD) - flusher_start
    log.close()  # rolls everything into segments
    written_s = time.perf_counter() - start
    serving_cpu_s = time.process_time() - cpu_start
    start = time.perf_counter()
    reader = EventReader(directory)
    rows = reader.read_table("auction").num_rows + reader.read_table("bid").num_rows
    read_s = time.perf_counter() - start
    assert rows == len(events), (rows, len(events))
    return written_s, read_s, serving_cpu_s, emit_s, flusher_s


def bench_baseline(events: list, directory: Path) -> tuple[float, float, float]:
    """Raw pyarrow: rows as dicts to one table per kind, one Parquet file each."""
    start = time.perf_counter()
    cpu_start = time.process_time()
    for event_type in (AuctionEvent, BidEvent):
        rows = [
            {f: getattr(e, f) for f in event_type.__struct_fields__}
            for e in events
            if type(e) is event_type
        ]
        table = pa.Table.from_pylist(rows, schema=arrow_schema(event_type))
        pq.write_table(table, directory / f"{event_type.kind}.parquet", compression="zstd")
    written_s = time.perf_counter() - start
    cpu_s = time.process_time() - cpu_start
    start = time.perf_counter()
    rows = sum(pq.read_table(directory / f"{k}.parquet").num_rows for k in ("auction", "bid"))
    read_s = time.perf_counter() - start
    assert rows == len(events)
    return written_s, read_s, cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--events", type=int, default=0, help="events per run")
    args = parser.parse_args()
    n = args.events or (100_000 if args.quick else 1_000_000)
    events = make_events(n)
    root = Path(tempfile.mkdtemp(prefix="openbid-bench-events-"))
    try:
        (root / "ours").mkdir()
        (root / "base").mkdir()
        (root / "served").mkdir()
        ours_w, ours_r, *_ = bench_ours(events, root / "ours")
        _, _, ours_cpu, emit_s, flusher_s = bench_ours(
            events, root / "served", roll_in_subprocess=True
        )
        base_w, base_r, base_cpu = bench_baseline(events, root / "base")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        ("events written/s (durable)", n / base_w, n / ours_w),
        ("events read/s", n / base_r, n / ours_r),
    ]
    print(f"event log, {n:,} events (1 auction + 8 bid events per auction), one process")
    print(f"{'work':<28} {'baseline (raw pyarrow)':>24} {'openbid':>14} {'ratio':>7}")
    for work, base, ours in rows:
        print(f"{work:<28} {base:>24,.0f} {ours:>14,.0f} {ours / base:>7.2f}")
    ours_us, base_us = ours_cpu / n * 1e6, base_cpu / n * 1e6
    print(
        f"{'writer-process CPU us/event':<28} {base_us:>24.2f} {ours_us:>14.2f}"
        f" {base_us / ours_us:>7.2f}"
    )
    print(f"{'emit CPU ns/event':<28} {'':>24} {emit_s / n * 1e9:>14.0f}")
    print(f"{'flusher CPU ns/event':<28} {'':>24} {flusher_s / n * 1e9:>14.0f}")
    print(
        "(ratio: higher is better; written/s rolls in the writing process like the baseline;"
        " the writer's CPU is measured as the server runs, rolling in a child process)"
    )
    print(
        json.dumps(
            {
                "bench": "events",
                "events": n,
                "events_written_per_s": round(n / ours_w),
                "baseline_written_per_s": round(n / base_w),
                "written_ratio": round(base_w / ours_w, 3),
                "events_read_per_s": round(n / ours_r),
                "baseline_read_per_s": round(n / base_r),
                "writer_cpu_us_per_event": round(ours_us, 3),
                "baseline_cpu_us_per_event": round(base_us, 3),
                "emit_cpu_ns_per_event": round(emit_s / n * 1e9),
                "flusher_cpu_ns_per_event": round(flusher_s / n * 1e9),
            }
        )
    )


if __name__ == "__main__":
    main()
