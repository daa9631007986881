"""The monitoring job over the event log: expected / actual clicks of the serving click
model replayed on the window's impressions, by slice, with the calibration alert for a
model that expects three times the clicks; shaping scores as logged; feature drift against
the training window; the Prometheus text file."""

from __future__ import annotations

import math

import numpy as np

from openbid.config import load_config
from openbid.experiments.synthetic import signal_tables
from openbid.ml import FeatureSpec, Featurizer, save_model
from openbid.ml.artifacts import TrainingWindow
from openbid.monitoring.alerts import Alerter
from openbid.monitoring.job import run_monitor_job, write_outputs
from openbid.pipeline.modelstore import ModelStore
from openbid.pipeline.synthetic import write_segments
from tests.experiments.conftest import _learner, publish

START = 1_700_000_000 * 1_000_000
HOUR = 3_600 * 1_000_000


def _ctr_model(path, rate: float):
    spec = FeatureSpec(categorical=["country", "site_id"], hash_bits=18)
    coef = np.zeros(spec.n_features, dtype=np.float32)
    coef[Featurizer(spec).bias_index] = math.log(rate / (1 - rate))
    window = TrainingWindow(START, START + 3 * HOUR, 1000)
    return save_model(_learner(coef), path, spec, name=f"ctr-{rate}", training_window=window)


def test_the_job_judges_the_serving_click_model_on_the_logged_impressions(tmp_path):
    tables = signal_tables(30_000, start_micros=START, span_s=6 * 3600)
    write_segments(tables, str(tmp_path / "events" / "segments"))
    rate = tables["click"].num_rows / tables["impression"].num_rows
    store = ModelStore(str(tmp_path / "store"))
    config = load_config(environ={"OPENBID_EVENTS__DIR": str(tmp_path / "events"),
                                  "OPENBID_MODELS__STORE_URL": str(tmp_path / "store"),
                                  "OPENBID_MODELS__CACHE_DIR": str(tmp_path / "cache")})  # fmt: skip
    now = START + 6 * HOUR
    publish(store, "ctr", "1", _ctr_model(tmp_path / "m1", rate), alias="production")
    alerter = Alerter(config.monitoring)
    job = run_monitor_job(config, window_s=3 * 3600, now_micros=now, alerter=alerter)
    ctr = next(p for p in job.purposes if p.purpose == "ctr")
    overall = ctr.slices[0]
    assert overall.dimension == "all" and overall.state == "ok"
    assert ctr.rows > 5_000 and abs(ctr.expected / ctr.actual - 1) < 0.1
    assert ctr.unseen_share["country"] == 0.0 and 0.0 <= ctr.unseen_share["site_id"] < 0.5
    by_country = {s.value: s for s in ctr.slices if s.dimension == "country"}
    assert by_country["USA"].state == "off"  # a bias-only model misses what country does
    publish(store, "ctr", "2", _ctr_model(tmp_path / "m2", 3 * rate), alias="production")
    job = run_monitor_job(config, window_s=3 * 3600, now_micros=now, alerter=alerter)
    ctr = next(p for p in job.purposes if p.purpose == "ctr")
    assert ctr.slices[0].state == "off" and 2.5 < ctr.expected / ctr.actual < 3.5
    assert ("calibration", "ctr", "job", "all") in alerter.firing
    shaping = next(p for p in job.purposes if p.purpose == "shaping")
    assert shaping.rows > 0 and shaping.note == ""  # scores as logged (no model: no drift)
    report, prom = write_outputs(job, tmp_path / "out")
    text = prom.read_text()
    assert 'openbid_monitor_expected{purpose="ctr",dimension="all",value="all"}' in text
    assert 'openbid_monitor_unseen_share{purpose="ctr",field="country"} 0' in text
    assert report.stat().st_size > 0
