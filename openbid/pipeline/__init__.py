"""The learning side's pipeline: the ETL from the event log to training sets (DuckDB embedded,
Spark to scale), training, the model registry, and the model sync that serving processes run
(`docs/pipeline.md`, `docs/registry.md`). Never on the auction's hot path.

The ETL's names are importable from here, but lazily: a serving process imports
`openbid.pipeline.modelsync`, and must not pay for DuckDB and SQLGlot (about 0.4 s) to do so.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "openbid.pipeline.build": (
        "Built",
        "Manifest",
        "PipelineError",
        "Plan",
        "Windows",
        "build_training_set",
        "latest_training_set",
        "plan",
        "read_training_set",
        "run",
    ),
    "openbid.pipeline.engines": (
        "ENGINES",
        "DuckDBEngine",
        "Engine",
        "EngineError",
        "SparkEngine",
        "open_engine",
        "stop_spark",
    ),
    "openbid.pipeline.source": ("EventSource",),
    "openbid.pipeline.transforms": ("OUTPUT_SCHEMAS", "SETS", "render"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'openbid.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
