"""The check a training job runs before it trains: did the label rate shift abruptly inside
its window? Then it halts instead of learning garbage (a tracker that stopped firing, a DSP
that stopped bidding, a broken join), and raises the `label_shift` alert.

The scheduler (or `openbid train`) calls, with the training set it read:

    verdict = label_shift_gate(purpose, tables, config)
    if verdict.halt:
        ...  # record the run as halted (verdict.reason), train nothing

`tables` is what `openbid.pipeline.read_training_set` returns (`rows` with `ts_micros` and
`label`; a shaping set's rows also say which calls were `sent` and their `send_probability`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from openbid.config import Config, MonitoringConfig
from openbid.monitoring.alerts import Alerter
from openbid.monitoring.rules import LabelShift, label_shift


def training_labels(purpose: str, rows: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, event times, weights) of a training set's rows: for shaping only the calls
    that were sent, each weighted 1 / the probability it was sent."""
    if purpose == "shaping" and "sent" in rows.column_names:
        rows = rows.filter(pc.equal(rows["sent"], True))
        weights = 1.0 / np.clip(rows["send_probability"].to_numpy(), 1e-6, 1.0)
    else:
        weights = np.ones(rows.num_rows)
    labels = np.asarray(rows["label"].to_numpy(zero_copy_only=False), dtype=np.float64)
    ts = np.asarray(rows["ts_micros"].to_numpy(zero_copy_only=False), dtype=np.int64)
    return labels, ts, weights


def check_rows(purpose: str, rows: pa.Table, settings: MonitoringConfig) -> LabelShift:
    """`rules.label_shift` on a training set's rows with the `[monitoring]` settings."""
    labels, ts, weights = training_labels(purpose, rows)
    return label_shift(
        labels,
        ts,
        weights,
        recent_share=settings.label_shift_recent_share,
        max_change=settings.label_shift_max_change,
        z=settings.z,
    )


def label_shift_gate(
    purpose: str,
    tables: dict[str, Any],
    config: Config,
    *,
    alerter: Alerter | None = None,
) -> LabelShift:
    """The scheduler's hook (module doc): the verdict, and when it halts, the `label_shift`
    alert (log line, `openbid_alerts_total{alert="label_shift"}`, webhook) raised on
    `alerter` (a new one, flushed before returning, when none is given)."""
    verdict = check_rows(purpose, tables["rows"], config.monitoring)
    if verdict.halt:
        own = alerter is None
        alerter = alerter or Alerter(config.monitoring, source="openbid training")
        alerter.event(
            "label_shift",
            {"purpose": purpose},
            f"training halted: {verdict.reason}",
            verdict.change,
            severity="critical",
        )
        if own:
            alerter.close()
    return verdict
