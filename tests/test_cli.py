"""The command line: config display and errors, and `openbid up` stopping on a signal."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
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


def _env(tmp_path, **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OPENBID_SERVER__PORT="0",
        OPENBID_EVENTS__DIR=str(tmp_path / "events"),
        OPENBID_STORES__CATALOG_URL=f"sqlite:///{tmp_path}/catalog.db",
        OPENBID_LOGGING__FORMAT="json",
    )
    env.update(overrides)
    return env


def _serving_port(process: subprocess.Popen, timeout_s: float = 60) -> int:
    """The port of the "openbid is serving" log line (read from the process's stderr)."""
    deadline = time.monotonic() + timeout_s
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if '"openbid is serving"' in line:
            return int(line.split('"port":')[1].split(",")[0].split("}")[0])
        if not line and process.poll() is not None:
            break
    raise AssertionError("the server did not report its port")


def test_up_serves_health_and_metrics_and_stops_on_sigterm(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "openbid.cli", "up"],
        env=_env(tmp_path),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = _serving_port(process)
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


def _up_fails(tmp_path, *args: str, **env: str) -> str:
    """Runs `openbid up` expecting it to refuse to start; returns its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "openbid.cli", "up", *args],
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_a_port_in_use_is_one_clear_message(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        stderr = _up_fails(tmp_path, OPENBID_SERVER__PORT=str(port))
    assert f"Error: server.port: cannot listen on 127.0.0.1:{port}" in stderr
    assert "choose another server.port" in stderr


def test_a_short_tracker_secret_is_one_clear_message(tmp_path):
    stderr = _up_fails(tmp_path, OPENBID_EXCHANGE__TRACKER_SECRET="too-short")
    assert "Error: OPENBID_EXCHANGE__TRACKER_SECRET: exchange: tracker_secret is 9 bytes" in stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"short\n", "holds a 5-byte key: an HMAC key needs at least 16"), (None, "cannot read")],
)
def test_a_bad_tracker_secret_file_is_one_clear_message(tmp_path, content, message):
    path = tmp_path / "tracker.key"
    if content is not None:
        path.write_bytes(content)
    stderr = _up_fails(tmp_path, OPENBID_EXCHANGE__TRACKER_SECRET_FILE=str(path))
    assert "Error: exchange.tracker_secret_file: " in stderr
    assert str(path) in stderr and message in stderr


def test_a_negative_demo_rate_is_refused():
    result = CliRunner().invoke(main, ["up", "--demo", "--rate", "-1"])
    assert result.exit_code == 2 and "--rate" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("rate", ["0", "0.2"])
def test_demo_at_a_low_rate_answers_health_and_stops_on_sigterm(tmp_path, rate):
    # Below 0.5 requests/s a chunk held no request and the loop never yielded: 100% CPU,
    # no /healthz, SIGTERM ignored.
    process = subprocess.Popen(
        [sys.executable, "-m", "openbid.cli", "up", "--demo", "--rate", rate],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = _serving_port(process)
        deadline = time.monotonic() + 30
        while True:  # the demo's DSPs are registered once their servers listen
            status, body = _get(f"http://127.0.0.1:{port}/healthz")
            assert status == 200 and b'"status":"ok"' in body
            if _catalog_has_dsps(tmp_path):
                break
            assert time.monotonic() < deadline, "the demo registered no DSP"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        threading.Thread(target=process.stderr.read, daemon=True).start()
    finally:
        if process.poll() is None:
            process.kill()


def _catalog_has_dsps(tmp_path) -> bool:
    import sqlite3

    with sqlite3.connect(tmp_path / "catalog.db") as connection:
        return connection.execute("SELECT count(*) FROM demand_partners").fetchone()[0] > 0
