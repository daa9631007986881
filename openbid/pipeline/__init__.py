"""The learning side's pipeline: the ETL from the event log to training sets (DuckDB embedded,
Spark to scale; `docs/pipeline.md`). Never imported by serving code."""

from openbid.pipeline.build import (
    Built,
    Manifest,
    PipelineError,
    Plan,
    Windows,
    build_training_set,
    latest_training_set,
    plan,
    read_training_set,
    run,
)
from openbid.pipeline.engines import (
    ENGINES,
    DuckDBEngine,
    Engine,
    EngineError,
    SparkEngine,
    open_engine,
    stop_spark,
)
from openbid.pipeline.source import EventSource
from openbid.pipeline.transforms import OUTPUT_SCHEMAS, SETS, render

__all__ = [
    "ENGINES",
    "OUTPUT_SCHEMAS",
    "SETS",
    "Built",
    "DuckDBEngine",
    "Engine",
    "EngineError",
    "EventSource",
    "Manifest",
    "PipelineError",
    "Plan",
    "SparkEngine",
    "Windows",
    "build_training_set",
    "latest_training_set",
    "open_engine",
    "plan",
    "read_training_set",
    "render",
    "run",
    "stop_spark",
]
