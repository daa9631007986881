"""The engines that run the transformations: DuckDB embedded (the default) and Spark (PySpark,
`local[*]` or a cluster URL). Both take Arrow tables in and give Arrow tables out, so the
event reading and the training-set writing around them are one code path.

PySpark is imported only when a Spark engine is opened: the embedded path never needs it.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

import duckdb
import pyarrow as pa

from openbid.errors import OpenbidError

log = logging.getLogger(__name__)

ENGINES: tuple[str, ...] = ("duckdb", "spark")
LOCAL_DRIVER_MEMORY = "4g"
"""Heap of a local Spark (driver and executor in one JVM); a cluster's comes from its
`spark-defaults.conf`."""


class EngineError(OpenbidError):
    """An engine could not start or run a query (with what to do about it)."""


class Engine(Protocol):
    name: str
    dialect: str

    def version(self) -> str: ...

    def register(self, name: str, table: pa.Table) -> None:
        """Makes `table` queryable as `name` (replacing a table of that name)."""

    def query(self, sql: str) -> pa.Table:
        """Runs `sql` (in this engine's dialect) and returns its rows."""

    def close(self) -> None: ...


class DuckDBEngine:
    """DuckDB in this process; Arrow tables are scanned in place, not copied."""

    name = "duckdb"
    dialect = "duckdb"

    def __init__(self, threads: int = 0) -> None:
        self._con = duckdb.connect(":memory:")
        if threads:
            self._con.execute(f"SET threads = {int(threads)}")
        self._tables: dict[str, pa.Table] = {}

    def version(self) -> str:
        return duckdb.__version__

    def register(self, name: str, table: pa.Table) -> None:
        self._tables[name] = table  # keeps the buffers alive while DuckDB scans them
        self._con.register(name, table)

    def query(self, sql: str) -> pa.Table:
        relation = self._con.sql(sql)
        # `to_arrow_table` since DuckDB 1.4 (`fetch_arrow_table` is deprecated there)
        fetch = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
        return fetch()

    def close(self) -> None:
        self._con.close()
        self._tables.clear()


class SparkEngine:
    """A Spark session (`master`: `local[*]`, `spark://host:7077`, ...). Tables go in with
    `createDataFrame` from Arrow and rows come back with `toArrow`."""

    name = "spark"
    dialect = "spark"

    def __init__(self, master: str = "local[*]", *, shuffle_partitions: int | None = None) -> None:
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise EngineError(
                "the Spark engine needs PySpark: pip install 'openbid[spark]' (and Java 17+)"
            ) from None
        builder = (
            SparkSession.builder.master(master)
            .appName("openbid-etl")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        )
        if master.startswith("local"):
            # A local session's shuffles: a few partitions per core, not Spark's 200; and a
            # heap for the rows it returns (the default 1 GiB runs out at ~3M rows).
            partitions = shuffle_partitions or max(4, 2 * (os.cpu_count() or 1))
            builder = (
                builder.config("spark.ui.enabled", "false")
                .config("spark.sql.shuffle.partitions", str(partitions))
                .config("spark.driver.memory", LOCAL_DRIVER_MEMORY)
            )
        elif shuffle_partitions:
            builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        try:
            self._spark = builder.getOrCreate()
        except Exception as exc:  # py4j raises its own types; name what failed
            raise EngineError(f"Spark ({master}) could not start: {exc}") from exc
        self._spark.sparkContext.setLogLevel("ERROR")
        self.master = master

    def version(self) -> str:
        return str(self._spark.version)

    def register(self, name: str, table: pa.Table) -> None:
        self._spark.createDataFrame(table).createOrReplaceTempView(name)

    def query(self, sql: str) -> pa.Table:
        return self._spark.sql(sql).toArrow()

    def close(self) -> None:
        """Leaves the session running: it is the process's (`getOrCreate`), and starting
        one costs seconds; `stop_spark()` ends it."""


def stop_spark() -> None:
    """Stops the process's Spark session, if one runs."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return
    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


def open_engine(name: str, *, duckdb_threads: int = 0, spark_master: str = "local[*]") -> Engine:
    """The engine called `name` (`duckdb` or `spark`)."""
    if name == "duckdb":
        return DuckDBEngine(threads=duckdb_threads)
    if name == "spark":
        return SparkEngine(spark_master)
    raise EngineError(f"unknown ETL engine {name!r}; expected one of {list(ENGINES)}")
