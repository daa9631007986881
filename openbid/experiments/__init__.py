"""Experiments: backtests of YAML-defined models side by side on logged traffic
(`backtest`, `runner`, `report`), live A/B tests that serve a fixed share of traffic to
another model by a stable hash of the user (`arms`, `armsync`) and their per-arm results
with confidence intervals (`abreport`, `stats`). `docs/experiments.md`.

Serving processes import `arms` and `armsync` only; this package's `__init__` imports
nothing, so they never load MLflow or DuckDB.
"""
