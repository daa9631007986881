"""`server.workers = N`: the supervisor and its workers, run for real (`openbid up` in a
subprocess, Redis counters), driven over HTTP and with signals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from openbid.demand.registry import DemandRegistry
from openbid.domain import DemandPartner
from openbid.events import EventReader
from openbid.workers.metrics import merge, totals
from openbid.workers.qps import TICK_S, SharedQpsKeeper, take_tokens
from openbid.workers.supervisor import claim_port, restart_delay_s

DEMO_KEY = "demo-publisher-key"


class Up:
    """`openbid up` with `workers` workers; its stderr lines are collected as they come."""

    def __init__(self, tmp_path, redis_url: str, *args: str, workers: int = 2, **env: str):
        environ = dict(os.environ)
        environ.update(
            OPENBID_SERVER__PORT="0",
            OPENBID_SERVER__WORKERS=str(workers),
            OPENBID_STORES__COUNTERS="redis",
            OPENBID_STORES__REDIS_URL=redis_url,
            OPENBID_EVENTS__DIR=str(tmp_path / "events"),
            OPENBID_EVENTS__FLUSH_INTERVAL_S="0.1",
            OPENBID_STORES__CATALOG_URL=f"sqlite:///{tmp_path}/catalog.db",
            OPENBID_LOGGING__FORMAT="json",
        )
        environ.update(env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "openbid.cli", "up", *args],
            env=environ,
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

    def wait_for(self, message: str, timeout_s: float = 90) -> dict:
        """The first JSON log line whose msg is `message`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if f'"msg":"{message}"' in line:
                    return json.loads(line)
            assert self.process.poll() is None or self.lines, "openbid up exited"
            time.sleep(0.05)
        raise AssertionError(f"no {message!r} in time; stderr: {''.join(self.lines)[-2000:]}")

    def count(self, message: str) -> int:
        return sum(f'"msg":"{message}"' in line for line in self.lines)

    def stop(self, timeout_s: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _auction(port: int, request_id: str) -> int:
    body = {
        "id": request_id,
        "imp": [{"id": "1", "banner": {"format": [{"w": 300, "h": 250}]}}],
        "site": {"id": "s1", "domain": "news.example", "page": "https://news.example/a"},
        "device": {"ua": "Mozilla/5.0", "ip": "203.0.113.7", "geo": {"country": "USA"}},
        "tmax": 300,
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/openrtb2/auction",
        data=json.dumps(body).encode(),
        headers={"x-api-key": DEMO_KEY, "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # a new connection each
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _samples(metrics: bytes, name: str) -> dict[str, float]:
    """Sum of `name`'s samples by worker label."""
    by_worker: dict[str, float] = {}
    for line in metrics.decode().splitlines():
        found = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if found:
            worker = re.search(r'worker="(\d+)"', found.group(1))
            assert worker, line
            by_worker[worker.group(1)] = by_worker.get(worker.group(1), 0) + float(found.group(2))
    return by_worker


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["builtin", "granian"])  # server.engine: both serve N workers
def test_two_workers_share_the_port_see_the_demo_dsps_and_stop_with_every_event(
    tmp_path, redis_url, engine
):
    up = Up(tmp_path, redis_url, "--demo", "--rate", "0", OPENBID_SERVER__ENGINE=engine)
    try:
        serving = up.wait_for("openbid workers serving")
        port, pids = serving["port"], serving["pids"]
        assert serving["workers"] == 2 and len(set(pids)) == 2
        # The demo registers its DSPs after the workers started: every worker must see them.
        up.wait_for("catalog refreshed on request")
        deadline = time.monotonic() + 30
        while up.count("catalog refreshed on request") < 2:
            assert time.monotonic() < deadline, "not every worker refreshed its catalog"
            time.sleep(0.05)
        statuses = [_auction(port, f"r{i}") for i in range(40)]
        assert set(statuses) <= {200, 204} and len(statuses) == 40
        status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        # Fresh connections spread over both workers (SO_REUSEPORT), and each called DSPs.
        auctions = _samples(metrics, "openbid_requests_total")
        calls = _samples(metrics, "openbid_dsp_calls_total")
        assert set(auctions) == {"0", "1"} and set(calls) == {"0", "1"}
        assert all(calls[w] > 0 for w in calls)
        assert b"openbid_workers_metrics_missing 0" in metrics
        assert up.stop() == 0
        assert up.count("openbid stopped") == 3  # two workers, then the supervisor
    finally:
        up.kill()
    reader = EventReader(tmp_path / "events")
    request_ids = {row["request_id"] for row in reader.read_table("auction").to_pylist()}
    assert request_ids == {f"r{i}" for i in range(40)}
    # Both writers closed cleanly: everything rolled into segments, no log file left over.
    assert not list((tmp_path / "events" / "wal").glob("*.log*"))


@pytest.mark.slow
def test_a_killed_worker_is_logged_and_restarted_while_the_other_serves(tmp_path, redis_url):
    up = Up(tmp_path, redis_url)
    try:
        serving = up.wait_for("openbid workers serving")
        port, (victim, survivor) = serving["port"], serving["pids"]
        os.kill(victim, signal.SIGKILL)
        exited = up.wait_for("worker exited: restarting it")
        assert exited["pid"] == victim and exited["status"] == "killed by SIGKILL"
        assert exited["restart_in_s"] == restart_delay_s(1)
        # Meanwhile the port answers: the dead worker's socket left the group at once.
        for _ in range(20):
            assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        restarted = up.wait_for("worker restarted")
        assert restarted["worker"] == exited["worker"] and restarted["pid"] not in (
            victim,
            survivor,
        )
        deadline = time.monotonic() + 30
        while set(
            _samples(_get(f"http://127.0.0.1:{port}/metrics")[1], "openbid_events_dropped_total")
        ) != {"0", "1"}:
            assert time.monotonic() < deadline, "the restarted worker's metrics never showed"
            time.sleep(0.1)
        assert up.stop() == 0
    finally:
        up.kill()


def test_workers_refuse_a_port_in_use_with_one_message(tmp_path, redis_url):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        up = Up(tmp_path, redis_url, OPENBID_SERVER__PORT=str(port))
        try:
            assert up.process.wait(timeout=60) == 1
        finally:
            up.kill()
    stderr = "".join(up.lines)
    assert f"Error: server.port: cannot listen on 127.0.0.1:{port}" in stderr
    assert "Traceback" not in stderr


def test_claiming_a_port_refuses_another_processs_reuseport_group():
    # Another openbid's workers hold the port with SO_REUSEPORT: joining their group would
    # split the traffic between two exchanges without a word.
    group = socket.socket()
    group.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    group.bind(("127.0.0.1", 0))
    group.listen()
    try:
        with pytest.raises(Exception, match="address already in use|Address already in use"):
            claim_port("127.0.0.1", group.getsockname()[1])
    finally:
        group.close()
    assert claim_port("127.0.0.1", 0) > 0


def test_restart_backoff_doubles_and_is_capped():
    delays = [restart_delay_s(n) for n in range(1, 12)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays == sorted(delays) and max(delays) == 30.0


def _counter(name: str, dsp: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, "help", labels=["dsp"])
    family.add_metric([dsp], value)
    return family


def _gauge(value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily("circuit", "help", labels=["dsp"])
    family.add_metric(["a"], value)
    return family


def test_merged_metrics_keep_each_workers_samples_under_its_label():
    merged = merge(
        {"0": [_counter("calls", "a", 2), _gauge(0)], "1": [_counter("calls", "a", 3), _gauge(2)]}
    )
    assert len(merged) == 2  # one family per name
    calls = next(f for f in merged if f.name == "calls")
    assert [(s.labels, s.value) for s in calls.samples] == [
        ({"dsp": "a", "worker": "0"}, 2),
        ({"dsp": "a", "worker": "1"}, 3),
    ]


def test_totals_add_counters_and_take_the_largest_gauge():
    summed = totals(
        {"0": [_counter("calls", "a", 2), _gauge(0)], "1": [_counter("calls", "a", 3), _gauge(2)]}
    )
    values = {(f.name, s.name): s.value for f in summed for s in f.samples}
    assert values == {("calls", "calls_total"): 5, ("circuit", "circuit"): 2}


# --- QPS caps shared through Redis


@pytest.fixture
def redis_store(redis_url):
    from openbid.stores import RedisCounterStore

    store = RedisCounterStore(redis_url, prefix=f"test-{secrets.token_hex(4)}:", timeout_s=1.0)
    yield store
    store.close()


def test_taking_tokens_concurrently_never_hands_out_more_than_the_cap(redis_store):
    async def main():
        takes = await asyncio.gather(*(take_tokens(redis_store, "k", 7, 100) for _ in range(40)))
        more = await take_tokens(redis_store, "k", 5, 100)
        await redis_store.aclose()
        return takes, more

    takes, more = asyncio.run(main())
    assert sum(takes) == 100 and all(0 <= t <= 7 for t in takes)
    assert more == 0


def _registry(cap: int) -> DemandRegistry:
    return DemandRegistry([DemandPartner("dsp", "http://dsp.example/bid", qps_cap=cap)])


def test_workers_share_one_cap_by_what_each_asks(redis_store):
    """Two workers, one asked 60 calls a tick, the other 2: per second they never call more
    than the cap together, and the busy one gets what the quiet one leaves."""
    cap = 200
    busy, quiet = _registry(cap), _registry(cap)
    keepers = [SharedQpsKeeper(r, redis_store, 2, i) for i, r in enumerate((busy, quiet))]
    start_s = 4_000_000_000.0  # a second no other test uses
    allowed: dict[int, dict[str, int]] = {}

    async def main():
        for tick in range(50):  # 5 seconds of ticks
            now_s = start_s + tick * TICK_S + 0.01
            for keeper in keepers:
                await keeper.tick(now_s)
            second = allowed.setdefault(int(now_s), {"busy": 0, "quiet": 0})
            for name, registry, asks in (("busy", busy, 60), ("quiet", quiet, 2)):
                limiter = registry.by_id["dsp"].limiter
                second[name] += sum(limiter.allow(now_s) for _ in range(asks))
        await redis_store.aclose()

    asyncio.run(main())
    for counts in allowed.values():
        assert counts["busy"] + counts["quiet"] <= cap
    steady = [allowed[int(start_s) + s] for s in (2, 3, 4)]
    assert all(c["quiet"] >= 15 for c in steady)  # it asked 20 a second
    assert all(c["busy"] + c["quiet"] >= 0.9 * cap for c in steady)  # the cap is used


def test_without_the_store_each_worker_keeps_to_its_share_of_the_cap():
    from openbid.stores import RedisCounterStore

    store = RedisCounterStore("redis://127.0.0.1:1/0", timeout_s=0.2)  # nothing listens
    registry = _registry(100)
    keeper = SharedQpsKeeper(registry, store, workers=4, index=0)

    async def main():
        allowed = 0
        for tick in range(10):
            now_s = 4_100_000_000.0 + tick * TICK_S
            await keeper.tick(now_s)
            allowed += sum(registry.by_id["dsp"].limiter.allow(now_s) for _ in range(50))
        await store.aclose()
        return allowed

    assert asyncio.run(main()) == 25  # 100 / 4 workers, for that second


def test_a_store_failing_mid_second_grants_no_second_share_of_that_second(redis_store):
    """Two workers spend the whole cap through the store in the first half of a second; the
    store then fails: the fallback's 1/N share starts with the next second, not on top of
    what this second already spent (it gave 2x the cap in the second Redis stopped)."""
    from openbid.stores import RedisCounterStore

    cap = 100
    registries = [_registry(cap), _registry(cap)]
    keepers = [SharedQpsKeeper(r, redis_store, 2, i) for i, r in enumerate(registries)]
    dead = RedisCounterStore("redis://127.0.0.1:1/0", timeout_s=0.2)  # nothing listens
    start_s = 4_200_000_000.0
    allowed: dict[int, int] = {}

    async def main():
        for tick in range(20):  # 2 seconds: the store fails half-way through the first
            now_s = start_s + tick * TICK_S + 0.01
            if tick == 5:
                for keeper in keepers:
                    keeper.store = dead
            for keeper, registry in zip(keepers, registries, strict=True):
                await keeper.tick(now_s)
                limiter = registry.by_id["dsp"].limiter
                second = int(now_s)
                allowed[second] = allowed.get(second, 0) + sum(
                    limiter.allow(now_s) for _ in range(60)
                )
        await redis_store.aclose()
        await dead.aclose()

    asyncio.run(main())
    assert allowed[int(start_s)] <= cap
    assert allowed[int(start_s) + 1] == cap  # then each its 1/N share, on its own
