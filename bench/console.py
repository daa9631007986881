"""Console speed: reports over a month of events, and campaign reads under 50 concurrent
users.

`report_p95_ms`: a simulated month (30 days of the seeded synthetic log; 7 with `--quick`, written as segments
hour by hour), summarised into hourly rollups once (`rollup_s`), then typical reports over
the whole month (totals, by day, by campaign, by day and campaign, by country, by DSP, by
hour), the p95 of their answer times from the rollups held in memory. Baseline: the same
month's delivery by day straight from the segments (DuckDB over every impression), in the
same run. `api_p95_ms`: the console's process (`python -m openbid.console`, uvicorn) on
loopback, 50 clients on keep-alive connections reading campaigns (one by id, the list) as
an advertiser; baseline: `/healthz` (the framework without the catalog) at the same
concurrency. Timings on a shared 2-core machine are noisy.

    python bench/console.py [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import duckdb
import msgspec

from openbid.config import load_config
from openbid.console.reports.query import ReportRequest
from openbid.console.reports.rollup import HOUR_MICROS
from openbid.console.reports.service import Reports
from openbid.pipeline.synthetic import synthetic_tables, write_segments

T0 = 1_795_000_000 * 1_000_000 // HOUR_MICROS * HOUR_MICROS
DAYS = 30
QUICK_DAYS = 7
REPORTS = ((), ("day",), ("campaign",), ("day", "campaign"), ("country",), ("dsp",), ("hour",))


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(int(0.95 * len(ordered)), len(ordered) - 1)]


def month_of_events(segments: str, auctions_per_day: int, days: int) -> int:
    events = 0
    for day in range(days):
        tables = synthetic_tables(
            auctions_per_day, seed=day, start_micros=T0 + day * 24 * HOUR_MICROS, span_s=86_400.0
        )
        write_segments(tables, segments, stem=f"day{day}")
        events += sum(t.num_rows for t in tables.values())
    return events


def report_bench(directory: str, auctions_per_day: int, repeats: int, days: int) -> dict:
    config = load_config(environ={})
    config = msgspec.structs.replace(
        config,
        events=msgspec.structs.replace(config.events, dir=os.path.join(directory, "events")),
        etl=msgspec.structs.replace(config.etl, duckdb_threads=1),
    )
    segments = os.path.join(directory, "events", "segments")
    started = time.perf_counter()
    events = month_of_events(segments, auctions_per_day, days)
    generate_s = time.perf_counter() - started
    reports = Reports.from_config(config)
    started = time.perf_counter()
    result = reports.rollups.update(T0 + (days * 24 + 2) * HOUR_MICROS)
    rollup_s = time.perf_counter() - started
    assert len(result.summarised) >= days * 24, len(result.summarised)
    month = (T0 // HOUR_MICROS, T0 // HOUR_MICROS + days * 24)
    started = time.perf_counter()
    reports.tables()
    load_ms = (time.perf_counter() - started) * 1000
    timings = []
    for _ in range(repeats):
        for group_by in REPORTS:
            request = ReportRequest(since_hour=month[0], until_hour=month[1], group_by=group_by)
            started = time.perf_counter()
            rows, totals = reports.report(request)
            timings.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    connection = duckdb.connect()
    connection.execute("SET threads = 1")
    baseline_rows = connection.execute(
        "SELECT ts_micros // 86400000000 AS day, count(*), sum(price_micros) // 1000 "
        f"FROM read_parquet('{segments}/impression/*/*.parquet') GROUP BY 1 ORDER BY 1"
    ).fetchall()
    baseline_ms = (time.perf_counter() - started) * 1000
    by_day = reports.report(
        ReportRequest(since_hour=month[0], until_hour=month[1], group_by=("day",))
    )[0]
    reports.close()
    return {
        "events": events,
        "generate_s": generate_s,
        "rollup_s": rollup_s,
        "rollup_hours": len(result.summarised),
        "load_ms": load_ms,
        "report_p95_ms": p95(timings),
        "report_median_ms": statistics.median(timings),
        "baseline_ms": baseline_ms,
        "days_reported": len(by_day),
        "days_in_baseline": len(baseline_rows),
        "impressions_agree": sum(r["impressions"] or 0 for r in by_day)
        <= sum(r[1] for r in baseline_rows),  # rollups drop repeated trackers
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _load(port: int, path: str, headers: dict, clients: int, requests_each: int) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for i in range(requests_each):
            target = path.format(i=(index * 7 + i) % 200)
            started = time.perf_counter()
            connection.request("GET", target, headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status == 200, (target, response.status)
            mine.append((time.perf_counter() - started) * 1000)
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def api_bench(directory: str, requests_each: int) -> dict:
    from openbid.campaigns.model import Advertiser, Campaign
    from openbid.campaigns.store import CampaignCatalog
    from openbid.console.auth.users import UserStore

    port = _free_port()
    config = load_config(environ={})
    config = msgspec.structs.replace(
        config,
        stores=msgspec.structs.replace(
            config.stores, catalog_url=f"sqlite:///{directory}/catalog.db"
        ),
        events=msgspec.structs.replace(config.events, dir=os.path.join(directory, "api-events")),
        console=msgspec.structs.replace(config.console, port=port),
        logging=msgspec.structs.replace(config.logging, level="warning"),
    )
    catalog = CampaignCatalog(config.stores.catalog_url)
    catalog.migrate()
    catalog.upsert_advertiser(Advertiser(id="adv", name="Adv", domain="adv.example"))
    for i in range(200):
        catalog.upsert_campaign(
            Campaign(
                id=f"c{i}",
                advertiser_id="adv",
                name=f"Campaign {i}",
                start_micros=T0,
                end_micros=T0 + 30 * 24 * HOUR_MICROS,
                total_budget_micros=10**9,
                goal_amount_micros=1_000_000,
            )
        )
    users = UserStore(catalog)
    user = users.create_user("bench", "bench password", "advertiser", "adv")
    _, token = users.create_token(user.id)
    catalog.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "openbid.console"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=False,
    )
    process.stdin.write(msgspec.json.encode(config))
    process.stdin.close()
    line = process.stdout.readline().decode()
    assert line.startswith("ready"), line
    headers = {"authorization": f"Bearer {token}"}
    try:
        _load(port, "/healthz", {}, 5, 20)  # warm up
        started = time.perf_counter()
        health = _load(port, "/healthz", {}, 50, requests_each)
        health_s = time.perf_counter() - started
        started = time.perf_counter()
        reads = _load(port, "/api/v1/campaigns/c{i}", headers, 50, requests_each)
        reads_s = time.perf_counter() - started
        listing = _load(port, "/api/v1/campaigns", headers, 50, max(requests_each // 4, 2))
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "api_p95_ms": p95(reads),
        "api_median_ms": statistics.median(reads),
        "api_per_s": len(reads) / reads_s,
        "api_list_p95_ms": p95(listing),
        "health_p95_ms": p95(health),
        "health_per_s": len(health) / health_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="openbid-bench-console-")
    try:
        days = QUICK_DAYS if args.quick else DAYS
        month = report_bench(
            directory, 2_400 if args.quick else 24_000, 3 if args.quick else 10, days
        )
        api = api_bench(directory, 10 if args.quick else 40)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(
        f"log: {month['events']:,} events over {days} days, generated in {month['generate_s']:.1f} s"
    )
    print(
        f"rollups: {month['rollup_hours']} hours summarised in {month['rollup_s']:.1f} s; "
        f"loaded in {month['load_ms']:.0f} ms"
    )
    print(f"{'work':<42} {'baseline':>12} {'ours':>12} {'ratio':>8}")
    print(
        f"{'month report p95 (ms; baseline: raw scan)':<42} {month['baseline_ms']:>12.1f} "
        f"{month['report_p95_ms']:>12.1f} {month['baseline_ms'] / month['report_p95_ms']:>8.1f}"
    )
    print(
        f"{'campaign read p95 (ms; baseline: /healthz)':<42} {api['health_p95_ms']:>12.1f} "
        f"{api['api_p95_ms']:>12.1f} {api['api_p95_ms'] / api['health_p95_ms']:>8.1f}"
    )
    print(f"campaign reads/s {api['api_per_s']:.0f}, list p95 {api['api_list_p95_ms']:.1f} ms")
    print(
        json.dumps(
            {
                "bench": "console",
                "quick": args.quick,
                "days": days,
                "events": month["events"],
                "rollup_s": round(month["rollup_s"], 2),
                "report_p95_ms": round(month["report_p95_ms"], 1),
                "report_median_ms": round(month["report_median_ms"], 1),
                "baseline_report_ms": round(month["baseline_ms"], 1),
                "days_reported": month["days_reported"],
                "api_p95_ms": round(api["api_p95_ms"], 1),
                "api_median_ms": round(api["api_median_ms"], 1),
                "api_reads_per_s": round(api["api_per_s"]),
                "api_list_p95_ms": round(api["api_list_p95_ms"], 1),
                "baseline_health_p95_ms": round(api["health_p95_ms"], 1),
                "concurrent_users": 50,
            }
        )
    )


if __name__ == "__main__":
    main()
