"""Backtests: the YAML loader is strict (unknown keys refused by name), the windows parse,
and `openbid backtest a.yaml b.yaml` runs both in parallel processes on logged events,
prints them side by side, writes a self-contained HTML report and logs each run to MLflow;
the features that drive the labels win, on click and shaping models alike."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from openbid.cli import main
from openbid.experiments.spec import ExperimentError, load_experiment, parse_experiment, parse_time
from openbid.experiments.synthetic import signal_tables
from openbid.pipeline.synthetic import write_segments

BASE = {"purpose": "click", "features": {"categorical": ["country"], "hash_bits": 18}}


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"learnr": {}}, "learnr"),
        ({"learner": {"kind": "ftrl_lr", "params": {"alpah": 0.1}}}, "learner.params.alpah"),
        ({"learner": {"kind": "auto", "params": {"alpha": 0.1}}}, "learner.params.alpha"),
        ({"features": {"categorical": ["a"], "cross": [["a", "b"]]}}, "features.cross"),
        ({"train": {"since": "-1d", "untill": "-1h"}}, "train.untill"),
        ({"sampling": {"negative_keep_rate": 0.0}}, "sampling.negative_keep_rate"),
        ({"shaping": {"target": 2}}, "shaping.target"),
        ({"test": {"since": "last tuesday"}}, "test.since"),
    ],
)
def test_the_loader_refuses_unknown_keys_and_bad_values_naming_the_key(tmp_path, extra, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, **extra}))
    with pytest.raises(ExperimentError) as caught:
        load_experiment(path)
    assert str(caught.value).startswith(f"{path}: {key}: ")


def test_an_experiment_file_loads_with_its_defaults_and_its_name(tmp_path):
    path = tmp_path / "ctr-country.yaml"
    path.write_text(yaml.safe_dump({**BASE, "learner": {"params": {"alpha": 0.2}}}))
    experiment = load_experiment(path)
    assert experiment.name == "ctr-country"
    assert experiment.learner_params().alpha == 0.2 and experiment.learner_params().n_passes == 2


@given(st.dictionaries(st.sampled_from(["purpose", "features", "learner", "x", "test"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                 st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))))  # fmt: skip
def test_the_loader_raises_only_its_own_error_on_any_mapping(data):
    with contextlib.suppress(ExperimentError):
        parse_experiment(data)


@given(st.integers(0, 10_000), st.sampled_from("smhd"), st.integers(10**15, 2 * 10**15))
def test_relative_times_count_back_from_the_end_of_the_data(n, unit, end):
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_time(f"-{n}{unit}", end_micros=end) == end - n * seconds * 1_000_000


START = 1_700_000_000 * 1_000_000  # in the past: every window of the ETL is closed


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    directory = tmp_path_factory.mktemp("events")
    write_segments(
        signal_tables(20_000, start_micros=START, span_s=6 * 3600), str(directory / "segments")
    )
    return directory


def _write(path: Path, name: str, purpose: str, fields: list[str], events: Path, **extra) -> Path:
    data = {"name": name, "purpose": purpose, "data": {"events": str(events)},
            "features": {"categorical": fields, "hash_bits": 18},
            "train": {"until": "-1h"}, "test": {"since": "-1h"}, **extra}  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    return path


def test_backtests_run_side_by_side_write_a_report_and_log_each_run_to_mlflow(
    tmp_path, events, mlflow_db
):
    good = _write(tmp_path / "good.yaml", "ctr-good", "click", ["country", "device_type"], events)
    poor = _write(tmp_path / "poor.yaml", "ctr-poor", "click", ["os"], events)
    env = {"OPENBID_MODELS__TRACKING_URI": f"sqlite:///{mlflow_db}",
           "OPENBID_MODELS__ARTIFACT_LOCATION": str(tmp_path / "artifacts"),
           "OPENBID_MODELS__LOCK_FILE": str(tmp_path / "registry.lock")}  # fmt: skip
    report = tmp_path / "report.html"
    result = CliRunner().invoke(
        main, ["backtest", str(good), str(poor), "--jobs", "2", "--report", str(report)], env=env
    )
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0]
    assert "ctr-good" in header and "ctr-poor" in header
    lines = {line.split("  ")[0]: line.split() for line in result.output.splitlines()}
    good_loss, poor_loss = (float(v) for v in lines["log loss"][-2:])
    assert good_loss < poor_loss  # country and device drive the clicks, the OS does not
    page = report.read_text()
    assert page.count("<svg") >= 1 and "<script" not in page and "ctr-good" in page
    assert "src=" not in page and "href=" not in page  # nothing fetched: self-contained
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{mlflow_db}")
    experiment = client.get_experiment_by_name("openbid-backtest-click")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["ctr-good", "ctr-poor"]
    by_name = {r.info.run_name: r for r in runs}
    assert by_name["ctr-good"].data.metrics["logloss"] == pytest.approx(good_loss, abs=1e-5)
    assert by_name["ctr-good"].data.params["features.categorical"] == "['country', 'device_type']"
    assert {a.path for a in client.list_artifacts(by_name["ctr-good"].info.run_id)} >= {
        "good.yaml", "result.json", "report.html"}  # fmt: skip


def test_a_shaping_backtest_reports_callouts_saved_and_bids_kept_on_the_test_window(
    tmp_path, events
):
    rich = _write(tmp_path / "rich.yaml", "rich", "shaping", ["country", "media"], events,
                  shaping={"target": 0.99})  # fmt: skip
    bare = _write(
        tmp_path / "bare.yaml", "bare", "shaping", ["os"], events, shaping={"target": 0.99}
    )
    result = CliRunner().invoke(main, ["backtest", str(rich), str(bare), "--jobs", "1",
                                       "--no-mlflow", "--report", str(tmp_path / "r.html")])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = {line.split("  ")[0]: line.split() for line in result.output.splitlines()}
    rich_saved, bare_saved = (float(v.rstrip("%")) for v in lines["callouts saved"][-2:])
    rich_kept = float(lines["bids kept"][-2].rstrip("%"))
    assert rich_saved > bare_saved  # the fields the DSPs bid on let it filter more
    assert rich_kept > 97.0  # thresholds chosen on the training tail hold on the test window
    assert "frontier" in (tmp_path / "r.html").read_text()


def test_an_experiment_whose_window_has_no_rows_fails_with_a_reason(tmp_path, events):
    empty = _write(tmp_path / "e.yaml", "empty", "click", ["country"], events,
                   train={"since": "2001-01-01", "until": "2001-01-02"})  # fmt: skip
    result = CliRunner().invoke(main, ["backtest", str(empty), "--no-mlflow", "--report",
                                       str(tmp_path / "r.html")])  # fmt: skip
    assert result.exit_code == 1
    assert "the train window has 0 rows" in result.output


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory):
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "template.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_db(tmp_path, mlflow_template):
    database = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template, database)
    return database
