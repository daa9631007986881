"""Runs experiments in parallel processes and logs each run to MLflow (the registry's
tracking URI, experiment `<prefix>backtest-<purpose>`).

Each backtest runs in a process of its own (from a fork server: numba and DuckDB start
clean, the imports are paid once), at most `jobs` at a time; MLflow is written afterwards from this process alone, one run after the
other, so the SQLite backend sees one writer.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import msgspec

from openbid.config import Config, ModelsConfig, usable_cores
from openbid.experiments.backtest import BacktestResult, run_backtest
from openbid.experiments.spec import Experiment

log = logging.getLogger(__name__)

PRELOAD = (
    "openbid.experiments.backtest",
    "openbid.ml.auto",
    "openbid.pipeline.build",
    "openbid.pipeline.engines",
    "openbid.shaping.thresholds",
    "duckdb",
    "sklearn.metrics",
)


def _lower_priority() -> None:
    with contextlib.suppress(OSError):
        os.nice(5)  # a backtest must not starve the servers sharing the machine


def run_experiments(
    experiments: Sequence[Experiment], config: Config, *, jobs: int = 0
) -> list[BacktestResult]:
    """Every experiment's result, in the order given; `jobs` processes at most (0: one per
    usable core)."""
    jobs = min(jobs or usable_cores(), len(experiments)) or 1
    if jobs == 1:
        return [run_backtest(experiment, config) for experiment in experiments]
    # forkserver: each backtest process forks from a server that imported the learning
    # stack once (spawn re-imports it per process: seconds each); numba kernels load from
    # their on-disk cache. Never fork this process itself: it may hold threads.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_lower_priority
    ) as pool:
        futures = [pool.submit(run_backtest, e, config) for e in experiments]
        results = []
        for experiment, future in zip(experiments, futures, strict=True):
            try:
                results.append(future.result())
            except Exception as exc:  # a child that died: its row says why
                results.append(
                    BacktestResult(name=experiment.name, purpose=experiment.purpose,
                                   path=experiment.path, error=f"the backtest process failed: {exc}")
                )  # fmt: skip
    return results


def log_to_mlflow(
    results: Sequence[BacktestResult], settings: ModelsConfig, report: Path | None = None
) -> list[str]:
    """One MLflow run per result (params, metrics, the experiment file, the result as JSON
    and the comparison report); returns the run ids."""
    from mlflow.entities import Metric, Param, RunTag

    from openbid import clock
    from openbid.pipeline.modelinfo import mlflow_key
    from openbid.pipeline.registry import Registry

    registry = Registry(settings)
    client = registry.client
    run_ids = []
    for result in results:
        name = f"{settings.name_prefix}backtest-{result.purpose}"
        found = client.get_experiment_by_name(name)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = settings.artifact_location
            if location and not urlparse(location).scheme:
                location = Path(location).resolve().as_uri()
            experiment_id = client.create_experiment(name, artifact_location=location or None)
        tags = {"openbid.backtest": "1", "openbid.spec_hash": result.spec_hash,
                "openbid.learner": result.learner}  # fmt: skip
        if result.error:
            tags["openbid.error"] = result.error[:5000]
        run = client.create_run(experiment_id, run_name=result.name, tags=tags)
        run_id = run.info.run_id
        now_ms = int(clock.now() * 1000)
        metrics = {**result.metrics, **result.shaping, "train_rows": float(result.train_rows),
                   "test_rows": float(result.test_rows)}  # fmt: skip
        client.log_batch(
            run_id,
            metrics=[Metric(mlflow_key(k), float(v), now_ms, 0) for k, v in sorted(metrics.items())
                     if math.isfinite(v)],
            params=[Param(mlflow_key(k), v[:6000]) for k, v in sorted(result.params.items())],
            tags=[RunTag("openbid.window", msgspec.json.encode(result.window).decode())],
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="openbid-backtest-") as tmp:
            path = Path(tmp) / "result.json"
            path.write_bytes(msgspec.json.format(msgspec.json.encode(result)))
            client.log_artifact(run_id, str(path))
        if result.path and Path(result.path).is_file():
            client.log_artifact(run_id, result.path)
        if report is not None and report.is_file():
            client.log_artifact(run_id, str(report))
        client.set_terminated(run_id, "FAILED" if result.error else "FINISHED")
        run_ids.append(run_id)
    return run_ids
