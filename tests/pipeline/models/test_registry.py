"""The registry on a real MLflow (SQLite, local artifacts): register, promote, rollback,
the alias history, serialised writers, the CLI, and an unreachable tracking server."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from openbid import clock
from openbid.ml import CalibrationCurve
from openbid.pipeline.modelstore import MANIFEST_FILE, ModelStore
from openbid.pipeline.registry import Registry, RegistryError, RegistryUnavailable

ALPHA = {"alpha": {"site-1": 6.0}, "beta": {}}
BETA = {"alpha": {}, "beta": {"site-1": 6.0}}


def _files(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }


def test_register_logs_params_metrics_the_calibration_plot_and_the_artifact(
    registry, make_ctr, tmp_path
):
    model = make_ctr()
    info = registry.register(
        "ctr", model, params={"window": "1h"}, metrics={"heldout_log_loss": 0.21}
    )
    assert info.version == "1" and info.aliases == []
    assert info.params["kind"] == "ftrl_lr" and info.params["window"] == "1h"
    assert info.metrics["log_loss"] == pytest.approx(0.2)
    assert info.metrics["heldout_log_loss"] == pytest.approx(0.21)
    assert info.trained_end_micros > 0 and info.rows == 500
    plot = registry.client.download_artifacts(info.run_id, "plots/calibration.png", str(tmp_path))
    assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    copy = registry.artifact("ctr", info.version, tmp_path / "download")
    assert _files(copy) == _files(model)
    assert registry.client.get_run(info.run_id).info.status == "FINISHED"


def test_held_out_curves_are_plotted_and_a_model_without_calibration_has_no_plot(
    registry, make_ctr
):
    curves = {"held-out": CalibrationCurve([0.01, 0.05], [0.012, 0.047], [900, 100])}
    with_curves = registry.register("ctr", make_ctr(calibrated=False), calibration_curves=curves)
    bare = registry.register("ctr", make_ctr(calibrated=False))
    listed = [f.path for f in registry.client.list_artifacts(with_curves.run_id, "plots")]
    assert listed == ["plots/calibration.png"]
    assert registry.client.list_artifacts(bare.run_id, "plots") == []


def test_an_invalid_artifact_is_refused_naming_the_problem_and_nothing_is_registered(
    registry, make_ctr, make_shaping, tmp_path
):
    broken = shutil.copytree(make_ctr(), tmp_path / "broken")
    weights = broken / "weights.npy"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\1")
    with pytest.raises(RegistryError, match="weights.npy: checksum mismatch"):
        registry.register("ctr", broken)
    with pytest.raises(RegistryError, match="a ctr model must be an openbid.ml model"):
        registry.register("ctr", make_shaping(ALPHA))
    with pytest.raises(RegistryError, match="purpose 'bid'"):
        registry.register("bid", make_ctr())
    assert registry.versions("ctr") == []


def test_promote_moves_the_alias_and_publishes_the_artifact_then_the_pointer(
    registry, make_shaping, models_settings
):
    first = registry.register("shaping", make_shaping(ALPHA))
    second_dir = make_shaping(BETA)
    second = registry.register("shaping", second_dir)
    previous_clock = clock.set_clock(clock.MarketClock(speed=1.0, start_s=1_700_000_000.0))
    try:
        done = registry.promote("shaping", first.version)
        done = registry.promote("shaping", second.version, reason="better log loss")
    finally:
        clock.set_clock(previous_clock)
    assert (done.previous, done.version) == ("1", "2")
    assert registry.version("shaping", "@production").version == "2"
    assert registry.version("shaping", "1").aliases == []
    store = ModelStore(models_settings.store_url)
    pointer = store.read_pointer("shaping", "production")
    assert pointer == done.pointer
    published = Path(models_settings.store_url) / pointer.artifact
    manifest = (published / MANIFEST_FILE).read_bytes()
    assert pointer.checksum == hashlib.sha256(manifest).hexdigest()
    assert _files(published) == _files(second_dir)
    assert pointer.model_version == second.model_version
    # promoted_at comes from openbid's clock (here a market clock set in the past)
    assert abs(pointer.promoted_at_micros / 1e6 - 1_700_000_000.0) < 60
    assert pointer.promoted_at.startswith("2023-11-14")
    assert [h.version for h in registry.history("shaping")] == ["1", "2"]
    assert registry.history("shaping")[-1].reason == "better log loss"


def test_rollback_returns_production_to_the_version_it_had_before(registry, make_shaping):
    for weights in (ALPHA, BETA, ALPHA):
        registry.register("shaping", make_shaping(weights))
    for version in ("1", "2", "3"):
        registry.promote("shaping", version)
    registry.promote("shaping", "3")  # promoting the serving version again: no new entry
    done = registry.rollback("shaping")
    assert (done.previous, done.version) == ("3", "2")
    assert registry.pointer("shaping").version == "2"
    assert registry.version("shaping", "3").tags["openbid.rolled_back.production"]
    assert registry.rollback("shaping").version == "1"
    assert registry.version("shaping", "@production").version == "1"
    with pytest.raises(RegistryError, match="no earlier version to roll back to"):
        registry.rollback("shaping")
    assert registry.pointer("shaping").version == "1"


def test_a_version_registered_as_challenger_gets_its_own_pointer(registry, make_shaping):
    info = registry.register("shaping", make_shaping(ALPHA), alias="challenger")
    assert info.aliases == ["challenger"]
    assert registry.pointer("shaping", "challenger").version == info.version
    assert registry.pointer("shaping", "production") is None


def test_promoting_an_unknown_version_is_a_clear_error(registry, make_shaping):
    registry.register("shaping", make_shaping(ALPHA))
    with pytest.raises(RegistryError, match="promote shaping version 9"):
        registry.promote("shaping", "9")
    with pytest.raises(RegistryError, match="alias 'latest'"):
        registry.promote("shaping", "1", "latest")


WRITER = textwrap.dedent(
    """
    import sys
    import msgspec
    from openbid.config import ModelsConfig
    from openbid.pipeline.registry import Registry

    settings = msgspec.json.decode(sys.argv[1], type=ModelsConfig)
    registry = Registry(settings)
    for model in sys.argv[2:]:
        info = registry.register("shaping", model)
        registry.promote("shaping", info.version)
    """
)


@pytest.mark.slow
def test_two_processes_writing_at_once_are_serialised_without_database_locked(
    models_settings, make_shaping
):
    models = [str(make_shaping(ALPHA if i % 2 else BETA)) for i in range(6)]
    settings = msgspec.json.encode(models_settings).decode()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, settings, *models[i::2]],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for writer in writers:
        _, stderr = writer.communicate(timeout=240)
        assert writer.returncode == 0, stderr[-3000:]
    registry = Registry(models_settings)
    versions = registry.versions("shaping")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4, 5, 6]
    history = [entry.version for entry in registry.history("shaping")]
    assert sorted(history, key=int) == ["1", "2", "3", "4", "5", "6"]
    assert registry.pointer("shaping").version == history[-1]


def _env(settings) -> dict[str, str]:
    env = {
        f"OPENBID_MODELS__{key.upper()}": str(value)
        for key, value in msgspec.to_builtins(settings).items()
        if isinstance(value, str | int | float)
    }
    return env


def test_the_models_commands_register_list_show_promote_and_roll_back(
    models_settings, make_shaping
):
    from openbid.cli import main

    runner = CliRunner()
    env = _env(models_settings)

    def run(*args: str) -> str:
        result = runner.invoke(main, ["models", *args], env=env)
        assert result.exit_code == 0, result.output
        return result.output

    assert "no models registered" in run("list")
    assert "registered shaping version 1" in run("register", "shaping", str(make_shaping(ALPHA)))
    out = run("register", "shaping", str(make_shaping(BETA)), "--alias", "challenger")
    assert "registered shaping version 2 as @challenger" in out
    assert "shaping@production: version - -> 1" in run("promote", "shaping", "1")
    assert "version 1 -> 2" in run("promote", "shaping", "2", "--reason", "test")
    listed = run("list", "shaping").splitlines()
    assert listed[1].split()[:3] == ["shaping", "2", "challenger,production"]
    assert listed[2].split()[:3] == ["shaping", "1", "-"]
    shown = run("show", "shaping")
    assert "shaping version 2" in shown and "store: production -> version 2" in shown
    assert "alpha.log_loss" in shown and "layout" in shown
    assert "rolled back 2 -> 1" in run("rollback", "shaping")
    failed = runner.invoke(main, ["models", "rollback", "shaping"], env=env)
    assert failed.exit_code == 1 and "no earlier version to roll back to" in failed.output
    assert "Traceback" not in failed.output


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_tracking_server_is_a_clear_error_soon(models_settings, monkeypatch):
    for name in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)  # Registry sets its own defaults
    settings = msgspec.structs.replace(
        models_settings,
        tracking_uri=f"http://127.0.0.1:{_closed_port()}",
        request_retries=0,
        request_timeout_s=2.0,
    )
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="unreachable.*serving is not affected"):
        Registry(settings).versions("shaping")
    assert time.monotonic() - started < 30
    result = CliRunner().invoke(
        __import__("openbid.cli", fromlist=["main"]).main,
        ["models", "list"],
        env={**_env(settings), **{k: v for k, v in os.environ.items() if k.startswith("MLFLOW")}},
    )
    assert result.exit_code == 1 and "unreachable" in result.output


def test_prune_deletes_old_versions_no_alias_names_now_or_in_its_history(
    registry, make_shaping, models_settings
):
    for i in range(6):
        registry.register("shaping", make_shaping(ALPHA if i % 2 else BETA))
    registry.promote("shaping", "1")
    registry.promote("shaping", "2")  # production's history: 1, 2
    registry.promote("shaping", "3", "challenger")
    store = ModelStore(models_settings.store_url)
    store.publish(
        "shaping", "4", registry.artifact("shaping", "4", Path(models_settings.cache_dir))
    )
    assert registry.prune("shaping", keep=1) == ["5", "4"]
    assert [v.version for v in registry.versions("shaping")] == ["6", "3", "2", "1"]
    assert store.published_checksum("shaping", "4") is None
    assert store.published_checksum("shaping", "2") is not None
    assert registry.rollback("shaping").version == "1"  # the history still works
