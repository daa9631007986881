"""Monitoring: live calibration of the models serving (expected / actual by slice, in
`/metrics`: `live`), the periodic checks that raise alerts (`watch`: calibration, model age,
swap failures; `labels`: the label-rate shift that halts training), the alerts themselves
(`alerts`: log line, metric, webhook), the periodic job over the event log (`job`: by slice,
calibration curves, prediction and feature drift) and the demo panel's rows (`panel`).
`docs/experiments.md`.

This `__init__` imports nothing: serving processes load `live`, `watch` and `alerts` only.
"""
