"""`openbid up --demo` serves the console on its own port from a process of its own, with
an admin whose credentials are printed and written to `var/demo-credentials` (0600)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from openbid.console.auth.bootstrap import ensure_admin
from tests.console.conftest import console_config


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def test_ensure_admin_gives_new_credentials_each_run(tmp_path):
    config = console_config(tmp_path)
    user, password, token, path = ensure_admin(config)
    again = ensure_admin(config)
    assert user == again[0] == "admin" and password != again[1] and token != again[2]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().splitlines() == [
        "user: admin",
        f"password: {again[1]}",
        f"token: {again[2]}",
    ]


@pytest.mark.slow
def test_demo_serves_the_console_with_its_admin(tmp_path):
    port = _free_port()
    env = dict(os.environ)
    env.update(
        OPENBID_SERVER__PORT="0",
        OPENBID_EVENTS__DIR=str(tmp_path / "events"),
        OPENBID_STORES__CATALOG_URL=f"sqlite:///{tmp_path}/catalog.db",
        OPENBID_CONSOLE__PORT=str(port),
        OPENBID_LOGGING__FORMAT="json",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "openbid.cli", "up", "--demo", "--rate", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    credentials = tmp_path / "demo-credentials"
    try:
        deadline = time.monotonic() + 90
        token = ""
        while not token:
            assert process.poll() is None, "".join(lines)[-3000:]
            assert time.monotonic() < deadline, (
                "no console with its admin: " + "".join(lines)[-3000:]
            )
            time.sleep(0.3)
            if not credentials.exists():
                continue
            token = credentials.read_text().split("token: ")[1].strip()
            try:
                status, body = _get(
                    f"http://127.0.0.1:{port}/api/v1/auth/me", {"authorization": f"Bearer {token}"}
                )
            except OSError:
                token = ""  # the console is still starting
        assert status == 200 and json.loads(body)["role"] == "admin"
        assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
        assert f"http://127.0.0.1:{port}" in "".join(lines)  # the banner says where
        status, body = _get(f"http://127.0.0.1:{port}/openapi.json")
        assert status == 200 and "/api/v1/campaigns" in json.loads(body)["paths"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        with pytest.raises(OSError):
            _get(f"http://127.0.0.1:{port}/healthz")  # the console stopped with it
    finally:
        if process.poll() is None:
            process.kill()
