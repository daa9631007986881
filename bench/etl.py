"""ETL throughput: events per second per core through the training sets' joins (shaping,
click, conversion) on DuckDB (one thread) and on Spark local (one core), on the same
segments of a synthetic event log, and whether both engines give the same rows.

Per core is events / CPU seconds of the join (this process's for DuckDB; the JVM's and this
process's for Spark), so other work on a shared machine does not count against either;
wall seconds are shown beside. Reading the segments (the same for both engines) is shown
apart.

    python bench/etl.py [--quick] [--auctions N] [--dsps N] [--imps N]

The default shape is 8 DSPs called per auction and one imp per auction; `--dsps 20 --imps 3`
holds the figures on a wider market (more bid events per auction, several impressions per
auction sharing its features).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

from openbid.pipeline import DuckDBEngine, EventSource, SparkEngine, Windows, plan, stop_spark
from openbid.pipeline.build import join
from openbid.pipeline.synthetic import synthetic_tables, write_segments
from openbid.pipeline.transforms import INPUTS, SETS, TABLE_KINDS

T0 = 1_795_000_000 * 1_000_000
WINDOWS = Windows(
    click_window_s=3600.0,
    post_click_window_s=86400.0,
    post_view_window_s=6 * 3600.0,
    late_wait_s=300.0,
    lookback_s=86400.0,
)


def _jvm_cpu_s(engine: SparkEngine) -> float:
    """CPU seconds (user + system) the Spark driver's JVM has used so far (Linux /proc)."""
    pid = engine._spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(engine, tables, parameters, set_name, cpu) -> tuple[dict, float, float]:
    wall0, cpu0 = time.perf_counter(), cpu()
    outputs = join(set_name, engine, tables, parameters)
    return outputs, time.perf_counter() - wall0, cpu() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--auctions", type=int, default=None, help="auctions in the log")
    parser.add_argument("--dsps", type=int, default=8, help="DSPs called per auction")
    parser.add_argument("--imps", type=int, default=1, help="imps per auction")
    args = parser.parse_args()
    n_auctions = args.auctions or (10_000 if args.quick else 330_000)
    directory = tempfile.mkdtemp(prefix="openbid-bench-etl-")
    try:
        started = time.perf_counter()
        tables = synthetic_tables(
            n_auctions,
            seed=1,
            start_micros=T0,
            span_s=12 * 3600.0,
            n_dsps=args.dsps,
            imps_per_auction=args.imps,
        )
        write_segments(tables, f"{directory}/segments")
        n_events = sum(t.num_rows for t in tables.values())
        generate_s = time.perf_counter() - started
        del tables
        now = T0 + 3 * 86400 * 1_000_000
        source = EventSource(directory)
        inputs: dict[str, tuple[dict, dict]] = {}
        read_s = 0.0
        for set_name in SETS:
            the_plan = plan(set_name, WINDOWS, since_micros=T0, until_micros=None, now_micros=now)
            started = time.perf_counter()
            loaded = {
                name: source.load(
                    TABLE_KINDS[name],
                    columns,
                    the_plan.load_since_micros,
                    the_plan.load_until_micros,
                )
                for name, columns in INPUTS[set_name].items()
            }
            read_s += time.perf_counter() - started
            inputs[set_name] = (loaded, the_plan.parameters)

        duck = DuckDBEngine(threads=1)
        spark = SparkEngine("local[1]", shuffle_partitions=1)
        results = []
        equal = True
        for set_name in SETS:
            loaded, parameters = inputs[set_name]
            events = sum(t.num_rows for t in loaded.values())
            duck_out, duck_wall, duck_cpu = _measure(
                duck, loaded, parameters, set_name, time.process_time
            )
            spark_out, spark_wall, spark_cpu = _measure(
                spark,
                loaded,
                parameters,
                set_name,
                lambda: _jvm_cpu_s(spark) + time.process_time(),
            )
            same = all(spark_out[o].equals(t) for o, t in duck_out.items())
            equal = equal and same
            results.append(
                (set_name, events, duck_out["rows"].num_rows, duck_wall, duck_cpu, spark_wall,
                 spark_cpu, same)
            )  # fmt: skip
        stop_spark()
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    print(
        f"ETL joins, {n_events:,} events ({n_auctions:,} auctions, {args.dsps} DSPs, "
        f"{args.imps} imp(s) each; generated in "
        f"{generate_s:.1f} s; read back in {read_s:.1f} s), one core per engine; CPU-based, "
        "wall in brackets (a shared machine: wall times are noisy)"
    )
    print(
        f"{'work':<12} {'events':>10} {'rows':>10} {'baseline: Spark ev/s':>24} "
        f"{'DuckDB ev/s':>22} {'ratio':>7} {'same rows':>10}"
    )
    total_events = sum(r[1] for r in results)
    for name, events, rows, d_wall, d_cpu, s_wall, s_cpu, same in results:
        print(
            f"{name:<12} {events:>10,} {rows:>10,} "
            f"{events / s_cpu:>12,.0f} [{events / s_wall:>9,.0f}] "
            f"{events / d_cpu:>10,.0f} [{events / d_wall:>9,.0f}] "
            f"{s_cpu / d_cpu:>7.1f} {str(same):>10}"
        )
    duck_cpu = sum(r[4] for r in results)
    spark_cpu = sum(r[6] for r in results)
    print(
        json.dumps(
            {
                "bench": "etl",
                "events": total_events,
                "duckdb_events_per_s": round(total_events / duck_cpu),
                "duckdb_wall_events_per_s": round(total_events / sum(r[3] for r in results)),
                "spark_events_per_s": round(total_events / spark_cpu),
                "spark_wall_events_per_s": round(total_events / sum(r[5] for r in results)),
                "ratio": round(spark_cpu / duck_cpu, 2),
                "spark_rows_equal": equal,
                "per": "core",
                "dsps": args.dsps,
                "imps_per_auction": args.imps,
            }
        )
    )


if __name__ == "__main__":
    main()
