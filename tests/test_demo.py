"""`openbid up --demo` closes the loop: it starts with no model (every DSP called), the
scheduler trains a shaping model from the demo's own log, registers and promotes it, and
every worker swaps it in without a restart; every process runs on the one market clock."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from openbid.demo_loop import demo_config, market_age, short_reason
from openbid.events import EventReader


class Up:
    """`openbid up --demo` in a subprocess; its stderr lines collected as they come."""

    def __init__(self, tmp_path, *args: str, **env: str) -> None:
        environ = dict(os.environ)
        environ.update(
            OPENBID_SERVER__PORT="0",
            OPENBID_EVENTS__DIR=str(tmp_path / "events"),
            OPENBID_STORES__CATALOG_URL=f"sqlite:///{tmp_path}/catalog.db",
            OPENBID_LOGGING__FORMAT="json",
            **env,
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "openbid.cli", "up", "--demo", *args],
            env=environ,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def logged(self, message: str, **fields: object) -> list[dict]:
        found = []
        for line in list(self.lines):
            if f'"msg":"{message}"' in line:
                entry = json.loads(line)
                if all(entry.get(k) == v for k, v in fields.items()):
                    found.append(entry)
        return found

    def wait_for(self, message: str, timeout_s: float, **fields: object) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.logged(message, **fields)
            if found:
                return found[0]
            assert self.process.poll() is None, "".join(self.lines)[-3000:]
            time.sleep(0.1)
        raise AssertionError(f"no {message!r} {fields} in time: {''.join(self.lines)[-3000:]}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=90)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def _by_worker(text: str, name: str, **labels: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            worker = re.search(r'worker="(\d+)"', match.group(1))
            key = worker.group(1) if worker else ""
            found[key] = found.get(key, 0.0) + float(match.group(2))
    return found


@pytest.mark.slow
def test_the_demo_trains_a_shaping_model_and_both_workers_swap_it_in(tmp_path, redis_url):
    speed = 120.0
    started_s = time.time()
    up = Up(
        tmp_path,
        "--speed",
        str(speed),
        "--rate",
        "60",
        OPENBID_SERVER__WORKERS="2",
        OPENBID_STORES__COUNTERS="redis",
        OPENBID_STORES__REDIS_URL=redis_url,
        OPENBID_TRAIN__MIN_EVAL_ROWS="500",
    )
    try:
        port = up.wait_for("openbid workers serving", 120)["port"]
        up.wait_for("scheduler started", 60, clock_speed=speed)
        # No model at first: every eligible DSP is called.
        first = _metrics(port)
        assert not _by_worker(first, "openbid_model_info", purpose="shaping")
        promoted = up.wait_for("training job done", 420, purpose="shaping", status="promoted")
        for worker in ("0", "1"):  # each worker swaps it in, without a restart
            up.wait_for("model swapped in", 60, purpose="shaping", worker=int(worker))
        assert not up.logged("worker exited: restarting it")
        deadline = time.monotonic() + 60
        while True:  # the swapped-in model now filters calls in both workers
            text = _metrics(port)
            serving = _by_worker(text, "openbid_model_info", purpose="shaping")
            filtered = _by_worker(text, "openbid_shaping_decisions_total", decision="filtered")
            if set(serving) == {"0", "1"} and all(filtered.get(w, 0) > 0 for w in ("0", "1")):
                break
            assert time.monotonic() < deadline, (serving, filtered)
            time.sleep(0.5)
        assert f'version="{promoted["version"]}"' in text
        runs_db = tmp_path / "demo" / "runs.db"
        assert runs_db.exists()  # the supervisor's run table, beside the event log
        assert up.stop() == 0
    finally:
        up.kill()
    # Every process stamped its events on one market clock: x120 from the start.
    auctions = EventReader(tmp_path / "events").read_table("auction")
    stamps_s = auctions["ts_micros"].to_numpy() / 1e6
    elapsed_real_s = time.time() - started_s
    assert stamps_s.max() > started_s + 0.3 * elapsed_real_s * speed
    assert stamps_s.max() < started_s + 1.1 * elapsed_real_s * speed


def test_the_demo_config_puts_its_state_beside_the_events_and_starts_afresh(tmp_path):
    from openbid.config import Config, EventsConfig

    settings = Config(events=EventsConfig(dir=str(tmp_path / "events")))
    first = demo_config(settings)
    marker = tmp_path / "demo" / "runs.db"
    marker.write_text("an earlier demo's runs")
    again = demo_config(settings, speed=30.0)
    assert not marker.exists()  # emptied: a new demo starts with no model
    assert first.clock.speed == 60.0 and again.clock.speed == 30.0
    assert again.scheduler.interval_s == 30.0 * 30.0  # 30 real seconds
    assert again.models.serve == ["shaping", "ctr"]
    assert again.scheduler.purposes == ["shaping", "ctr"]
    assert again.events.dir == str(tmp_path / "events")  # the events dir it was given
    assert again.models.store_url == str(tmp_path / "demo" / "models")


def test_a_directory_the_demo_did_not_make_is_never_emptied(tmp_path):
    from openbid.config import Config, EventsConfig

    keep = tmp_path / "demo" / "precious.txt"
    keep.parent.mkdir()
    keep.write_text("not the demo's")
    demo_config(Config(events=EventsConfig(dir=str(tmp_path / "events"))))
    assert keep.read_text() == "not the demo's"


def test_panel_texts():
    assert market_age(7200.0) == "2h00m"
    assert short_reason("data: 10 rows and 2 positives held out; need at least") == (
        "data: 10 rows and 2 positives held out"
    )
    assert short_reason("x" * 200) == "x" * 80


def test_the_summary_reads_the_metrics_once_and_shows_house_campaigns():
    from rich.console import Console

    from openbid import demo
    from openbid.campaigns.house import HOUSE_BUDGET_TODAY

    HOUSE_BUDGET_TODAY.labels("summary-test-campaign").set(50_000_000)
    console = Console(width=140, record=True)
    console.print(demo._summary(demo.DemoState(), ["atlas"]))
    text = console.export_text()
    assert "house campaigns" in text and "summary-test-campaign" in text
    assert demo._snapshot is not None  # the registry as this summary read it
    assert demo._snapshot.value("openbid_house_budget_today_micros",
                                campaign="summary-test-campaign") == 50_000_000  # fmt: skip


def test_the_house_table_names_campaigns_by_their_names_not_ids():
    from rich.console import Console

    from openbid import demo
    from openbid.campaigns.house import HOUSE_BUDGET_TODAY, HOUSE_SPEND_TODAY

    HOUSE_BUDGET_TODAY.labels("cmp-test-names").set(100_000_000)
    HOUSE_SPEND_TODAY.labels("cmp-test-names").set(25_000_000)
    state = demo.DemoState()
    state.campaign_names = {"cmp-test-names": "Spring sale, test"}
    console = Console(record=True, width=200)
    console.print(demo._summary(state, ["atlas"]))  # reads the registry, as the demo does
    row = next(line for line in console.export_text().splitlines() if "Spring sale" in line)
    assert "cmp-test-names" not in row
    assert "25.00" in row and "25.0%" in row
