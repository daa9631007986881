"""The command line: config display and errors, and `openbid up` stopping on a signal."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

from click.testing import CliRunner

from openbid.cli import main


def test_config_show_prints_effective_config_with_overrides(tmp_path):
    config_file = tmp_path / "openbid.toml"
    config_file.write_text("[server]\nport = 9001\n[events]\nflush_interval_s = 0.5\n")
    result = CliRunner().invoke(
        main,
        ["config", "show", "--config", str(config_file)],
        env={"OPENBID_STORES__COUNTERS": "redis"},
    )
    assert result.exit_code == 0, result.output
    assert "port = 9001" in result.output
    assert "flush_interval_s = 0.5" in result.output
    assert 'counters = "redis"' in result.output


def test_bad_config_is_refused_naming_the_key(tmp_path):
    config_file = tmp_path / "openbid.toml"
    config_file.write_text("[server]\nprot = 9001\n")
    result = CliRunner().invoke(main, ["config", "show", "--config", str(config_file)])
    assert result.exit_code == 1
    assert f"{config_file}: server.prot: unknown key" in result.output


def test_help_lists_the_subcommands():
    result = CliRunner().invoke(main, ["--help"])
    for command in ("up", "etl", "train", "backtest", "models", "config"):
        assert command in result.output


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def test_up_serves_health_and_metrics_and_stops_on_sigterm(tmp_path):
    env = dict(os.environ)
    env.update(
        OPENBID_SERVER__PORT="0",
        OPENBID_EVENTS__DIR=str(tmp_path / "events"),
        OPENBID_STORES__CATALOG_URL=f"sqlite:///{tmp_path}/catalog.db",
        OPENBID_LOGGING__FORMAT="json",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "openbid.cli", "up"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + 60
        assert process.stderr is not None
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if '"openbid is serving"' in line:
                port = int(line.split('"port":')[1].split(",")[0])
        assert port, "the server did not report its port"
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and b'"status":"ok"' in body
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and b"openbid_events_dropped_total" in body
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        rest = process.stderr.read()
        assert '"openbid stopped"' in rest
    finally:
        if process.poll() is None:
            process.kill()
