"""Hot swap: a running exchange (real HTTP, DSPs on loopback) follows the store's pointer,
swaps promoted models in without a restart, refuses bad ones while the old one serves,
keeps serving with the registry and the store down, and fails no request while swapping."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import msgspec
import numpy as np
import pytest

from openbid.config import load_config
from openbid.domain import DemandPartner
from openbid.http.client import FanoutClient
from openbid.http.server import HttpServer, Request, Response, Router
from openbid.pipeline.modelstore import ModelStore, Pointer
from openbid.pipeline.modelsync import ModelSync, ScoringSlot
from openbid.platform import Platform

API_KEY = "swap-publisher-key"
ALPHA = {"alpha": {"site-1": 6.0}, "beta": {}}
"""Calls alpha only for site-1 (p = 0.95 against a 0.5 threshold; beta scores 0.05)."""
BETA = {"alpha": {}, "beta": {"site-1": 6.0}}
AUCTION = json.dumps(
    {
        "id": "r1",
        "imp": [{"id": "1", "banner": {"format": [{"w": 300, "h": 250}]}}],
        "site": {"id": "site-1", "domain": "news.example", "page": "https://news.example/a"},
        "device": {"ua": "Mozilla/5.0", "ip": "203.0.113.7", "geo": {"country": "USA"}},
        "tmax": 500,
    }
).encode()


class Dsp:
    """A DSP on loopback that bids on every call and counts them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.server: HttpServer | None = None
        self.port = 0

    async def start(self) -> None:
        router = Router()
        router.add("POST", "/bid", self._bid)
        self.server = HttpServer(router)
        self.port = await self.server.start()

    async def _bid(self, request: Request) -> Response:
        self.calls += 1
        body = json.loads(request.body)
        bid = {"id": "b1", "impid": "1", "price": 1.0, "adm": "<div/>", "crid": "c1"}
        seatbid = [{"seat": self.name, "bid": [bid]}]
        return Response(200, json.dumps({"id": body["id"], "seatbid": seatbid}).encode())

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace_s=0.1)


def _catalog_setup(catalog, dsps: list[Dsp]) -> None:
    catalog.add_publisher("pub-1", "News", api_key=API_KEY)
    for dsp in dsps:
        catalog.upsert_demand_partner(
            DemandPartner(dsp.name, f"http://127.0.0.1:{dsp.port}/bid", seat=dsp.name)
        )


def _base_env(tmp_path: Path, port: int) -> dict[str, str]:
    return {
        "OPENBID_SERVER__PORT": str(port),
        "OPENBID_EXCHANGE__PUBLIC_URL": f"http://127.0.0.1:{port}",
        "OPENBID_EXCHANGE__TRACKER_SECRET": "test-secret-0123456789abcdef",
        "OPENBID_EXCHANGE__EXPLORATION_SHARE": "0",
        "OPENBID_EVENTS__DIR": str(tmp_path / "events"),
        "OPENBID_EVENTS__FLUSH_INTERVAL_S": "0.05",
        "OPENBID_EVENTS__ROLL_IN_SUBPROCESS": "false",
        "OPENBID_STORES__CATALOG_URL": f"sqlite:///{tmp_path}/catalog.db",
    }


class Server:
    """An in-process exchange following the store, with two DSPs and an HTTP client."""

    def __init__(self, platform: Platform, dsps: dict[str, Dsp]) -> None:
        self.platform = platform
        self.dsps = dsps
        self.client = FanoutClient()
        self.base = f"http://127.0.0.1:{platform.port}"

    @property
    def sync(self) -> ModelSync:
        assert self.platform.model_sync is not None
        return self.platform.model_sync

    async def auction(self) -> int:
        reply = await self.client.post(
            f"{self.base}/openrtb2/auction",
            AUCTION,
            timeout_s=5.0,
            headers=f"x-api-key: {API_KEY}\r\n".encode(),
        )
        return reply.status

    async def routed(self) -> set[str]:
        """The DSPs one auction called."""
        before = {name: dsp.calls for name, dsp in self.dsps.items()}
        assert await self.auction() == 200
        return {name for name, dsp in self.dsps.items() if dsp.calls > before[name]}

    async def metrics(self) -> str:
        reply = await self.client.get(f"{self.base}/metrics", timeout_s=5.0)
        return reply.body.decode()

    async def until_serving(self, version: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.sync.serving("shaping") != version:
            assert time.monotonic() < deadline, f"version {version} not swapped in"
            await asyncio.sleep(0.02)

    async def until(self, condition, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.client.close()
        await self.platform.close()
        for dsp in self.dsps.values():
            await dsp.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def start(tmp_path, models_settings, serve=("shaping",), **exchange) -> Server:
    dsps = {name: Dsp(name) for name in ("alpha", "beta")}
    for dsp in dsps.values():
        await dsp.start()
    env = _base_env(tmp_path, _free_port())
    env.update({f"OPENBID_EXCHANGE__{k.upper()}": str(v) for k, v in exchange.items()})
    config = load_config(environ=env)
    models = msgspec.structs.replace(models_settings, serve=list(serve))
    platform = Platform(msgspec.structs.replace(config, models=models))
    await asyncio.to_thread(platform.open)
    _catalog_setup(platform.catalog, list(dsps.values()))
    platform.exchange_server.refresh()
    await platform.serve()
    return Server(platform, dsps)


def _register(registry, make_shaping, *weights) -> list[str]:
    return [registry.register("shaping", make_shaping(w)).version for w in weights]


def test_a_promotion_reaches_the_running_server_without_a_restart(
    tmp_path, registry, make_shaping, models_settings
):
    _register(registry, make_shaping, ALPHA, BETA)

    async def main():
        server = await start(tmp_path, models_settings)
        try:
            assert await server.routed() == {"alpha", "beta"}  # no model yet: fail open
            await asyncio.to_thread(registry.promote, "shaping", "1")
            await server.until_serving("1")
            assert await server.routed() == {"alpha"}
            metrics = await server.metrics()
            assert re.search(r'openbid_model_info\{[^}]*purpose="shaping",version="1"\} 1', metrics)
            assert re.search(
                r'openbid_model_age_seconds\{purpose="shaping",since="promotion"\}', metrics
            )
            await asyncio.to_thread(registry.promote, "shaping", "2")
            await server.until_serving("2")
            assert await server.routed() == {"beta"}
            metrics = await server.metrics()
            assert re.search(r'openbid_model_info\{[^}]*version="2"\} 1', metrics)
            assert 'version="1"' not in metrics.split("openbid_model_info")[-1].split("\n# ")[0]
            assert 'openbid_model_swaps_total{purpose="shaping",result="ok"} 2.0' in metrics
        finally:
            await server.stop()

    asyncio.run(main())


def test_a_rollback_swaps_the_running_server_back(
    tmp_path, registry, make_shaping, models_settings
):
    _register(registry, make_shaping, ALPHA, BETA)
    registry.promote("shaping", "1")
    registry.promote("shaping", "2")

    async def main():
        server = await start(tmp_path, models_settings)
        try:
            assert server.sync.serving("shaping") == "2"  # loaded before serving
            assert await server.routed() == {"beta"}
            await asyncio.to_thread(registry.rollback, "shaping")
            await server.until_serving("1")
            assert await server.routed() == {"alpha"}
        finally:
            await server.stop()

    asyncio.run(main())


def _refused(server: Server) -> int:
    return server.sync.followed["shaping"].swaps_refused


def test_a_corrupt_artifact_is_refused_counted_and_the_old_model_keeps_serving(
    tmp_path, registry, make_shaping, models_settings
):
    _register(registry, make_shaping, ALPHA, BETA, BETA)
    registry.promote("shaping", "1")
    # published under another alias first, so its files can be damaged before production
    # names it (the servers follow production only)
    registry.promote("shaping", "2", "staging")
    weights = Path(models_settings.store_url, "shaping/versions/2/models/beta/weights.npy")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    # a model whose files are intact but which no server may load: a threshold past 1
    invalid = shutil.copytree(make_shaping(BETA), tmp_path / "invalid")
    meta = json.loads((invalid / "shaping.json").read_text())
    meta["thresholds"]["beta"] = 1.5
    (invalid / "shaping.json").write_text(json.dumps(meta))

    async def main():
        server = await start(tmp_path, models_settings)
        try:
            assert await server.routed() == {"alpha"}
            await asyncio.to_thread(registry.promote, "shaping", "2")
            await server.until(lambda: _refused(server) == 1)
            assert server.sync.serving("shaping") == "1"
            assert await server.routed() == {"alpha"}

            store = ModelStore(models_settings.store_url)
            checksum = await asyncio.to_thread(store.publish, "shaping", "99", invalid)
            store.write_pointer(
                Pointer(
                    purpose="shaping",
                    alias="production",
                    version="99",
                    artifact="shaping/versions/99",
                    checksum=checksum,
                )
            )
            await server.until(lambda: _refused(server) == 2)
            assert server.sync.serving("shaping") == "1"
            assert await server.routed() == {"alpha"}
            metrics = await server.metrics()
            assert 'openbid_model_swaps_total{purpose="shaping",result="refused"} 2.0' in metrics
            assert re.search(r'openbid_model_info\{[^}]*version="1"\} 1', metrics)
            # a refused pointer is not fetched again at every poll, and a good one still swaps
            await asyncio.sleep(0.3)
            assert _refused(server) == 2
            await asyncio.to_thread(registry.promote, "shaping", "3")
            await server.until_serving("3")
            assert await server.routed() == {"beta"}
        finally:
            await server.stop()

    asyncio.run(main())


def test_a_store_that_cannot_be_read_is_counted_and_the_model_keeps_serving(
    tmp_path, registry, make_shaping, models_settings
):
    _register(registry, make_shaping, ALPHA)
    registry.promote("shaping", "1")

    async def main():
        server = await start(tmp_path, models_settings)
        try:
            store = Path(models_settings.store_url)
            store.rename(store.with_name("store-away"))
            store.write_text("not a directory any more")  # reads now fail: NotADirectoryError
            followed = server.sync.followed["shaping"]
            await server.until(lambda: followed.errors >= 3)
            assert server.sync.serving("shaping") == "1"
            statuses = [await server.auction() for _ in range(20)]
            assert statuses == [200] * 20
            assert await server.routed() == {"alpha"}
            metrics = await server.metrics()
            assert re.search(r'openbid_model_sync_errors_total\{purpose="shaping"\} [3-9]', metrics)
        finally:
            await server.stop()

    asyncio.run(main())


def test_sighup_reads_the_store_again_and_a_model_directory_serves_until_the_store_has_one(
    tmp_path, registry, make_shaping, models_settings
):
    directory_model = make_shaping(ALPHA)
    _register(registry, make_shaping, BETA)

    async def main():
        server = await start(tmp_path, models_settings, shaping_model=directory_model)
        shaper = server.platform.exchange.shaper
        try:
            assert await server.routed() == {"alpha"}  # the directory's model
            server.platform.reload_models()  # SIGHUP's handler: the directory again
            assert shaper.loads["ok"] == 2
            await asyncio.to_thread(registry.promote, "shaping", "1")
            await server.until_serving("1")
            assert await server.routed() == {"beta"}
            followed = server.sync.followed["shaping"]
            server.platform.reload_models()  # now: the store's model, read again
            await server.until(lambda: followed.swaps_ok == 2)
            assert shaper.loads["ok"] == 4  # directory twice, then the store's twice
            assert await server.routed() == {"beta"}
        finally:
            await server.stop()

    asyncio.run(main())


def test_hot_swap_under_load_fails_no_request(tmp_path, registry, make_shaping, models_settings):
    swaps = 10
    versions = _register(registry, make_shaping, *[(ALPHA, BETA)[i % 2] for i in range(swaps + 1)])
    registry.promote("shaping", versions[0])

    async def main():
        server = await start(tmp_path, models_settings)
        outcomes: list[str] = []
        stopping = asyncio.Event()

        async def drive() -> None:
            while not stopping.is_set():
                try:
                    outcomes.append(str(await server.auction()))
                except Exception as exc:  # a reset or timeout is a failed request too
                    outcomes.append(type(exc).__name__)

        try:
            drivers = [asyncio.create_task(drive()) for _ in range(4)]
            for i, version in enumerate(versions[1:], start=1):
                before = len(outcomes)
                await asyncio.to_thread(registry.promote, "shaping", version)
                await server.until_serving(version)
                await server.until(lambda before=before: len(outcomes) > before + 20)
                # the serving model's own decision (an auction's DSP calls would race with
                # the drivers' auctions decided before the swap)
                decisions = server.platform.exchange.shaper.decide(
                    {"site_id": "site-1"}, ["alpha", "beta"]
                )
                assert {d.dsp for d in decisions if d.send} == ({"beta"} if i % 2 else {"alpha"})
            stopping.set()
            await asyncio.gather(*drivers)
        finally:
            stopping.set()
            await server.stop()
        failed = [outcome for outcome in outcomes if outcome != "200"]
        assert failed == [] and len(outcomes) > 20 * swaps
        assert server.sync.followed["shaping"].swaps_ok == swaps + 1

    asyncio.run(main())


def test_click_models_swap_into_their_slot_and_a_nan_model_is_refused(
    tmp_path, registry, make_ctr, models_settings
):
    registry.register("ctr", make_ctr(bias=-3.0), alias="production")
    nan_model = shutil.copytree(make_ctr(bias=-2.0), tmp_path / "nan")
    weights = np.load(nan_model / "weights.npy")
    weights[:] = np.nan
    np.save(nan_model / "weights.npy", weights)
    meta = json.loads((nan_model / "model.json").read_text())
    import hashlib

    meta["arrays"]["weights"]["sha256"] = hashlib.sha256(
        (nan_model / "weights.npy").read_bytes()
    ).hexdigest()
    (nan_model / "model.json").write_text(json.dumps(meta))

    async def main():
        server = await start(tmp_path, models_settings, serve=("shaping", "ctr"))
        try:
            slot = server.platform.model_slots["ctr"]
            assert isinstance(slot, ScoringSlot)
            served = slot.predict({"site_id": "x", "country": "DEU"})
            # p = sigmoid(-3) = 0.047, through the calibration table (0.05 -> 0.04)
            assert served == pytest.approx(0.04 * 0.0474 / 0.05, rel=0.02)
            assert server.sync.serving("shaping") == ""  # no shaping model promoted
            store = ModelStore(models_settings.store_url)
            checksum = await asyncio.to_thread(store.publish, "ctr", "50", nan_model)
            store.write_pointer(
                Pointer(
                    purpose="ctr",
                    alias="production",
                    version="50",
                    artifact="ctr/versions/50",
                    checksum=checksum,
                )
            )
            followed = server.sync.followed["ctr"]
            await server.until(lambda: followed.swaps_refused == 1)
            assert slot.predict({"site_id": "x"}) == pytest.approx(served)
            assert server.sync.serving("ctr") == "1"
        finally:
            await server.stop()

    asyncio.run(main())


class _LoopThread:
    """An event loop in a thread, for DSPs that a server in another process calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def _post_auction(port: int) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/openrtb2/auction",
        data=AUCTION,
        headers={"x-api-key": API_KEY, "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
def test_openbid_up_workers_serve_the_promoted_model_with_the_registry_down(
    tmp_path, registry, make_shaping, models_settings, redis_url
):
    """`openbid up` with two worker processes: each follows the store; MLflow's database is
    gone and its URL points nowhere, and serving neither notices nor cares; SIGHUP makes
    every worker read the store again."""
    from openbid.stores import Catalog

    _register(registry, make_shaping, ALPHA)
    registry.promote("shaping", "1")
    Path(models_settings.tracking_uri.removeprefix("sqlite:///")).unlink()
    shutil.rmtree(models_settings.artifact_location)
    loop = _LoopThread()
    dsps = {name: Dsp(name) for name in ("alpha", "beta")}
    for dsp in dsps.values():
        loop.run(dsp.start())
    catalog = Catalog(f"sqlite:///{tmp_path}/catalog.db")
    catalog.migrate()
    _catalog_setup(catalog, list(dsps.values()))
    catalog.close()
    port = _free_port()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    env = dict(os.environ)
    env.update(_base_env(tmp_path, port))
    env.update(
        OPENBID_SERVER__WORKERS="2",
        OPENBID_STORES__COUNTERS="redis",
        OPENBID_STORES__REDIS_URL=redis_url,
        OPENBID_MODELS__SERVE='["shaping"]',
        OPENBID_MODELS__TRACKING_URI=f"http://127.0.0.1:{dead}",
        OPENBID_MODELS__STORE_URL=models_settings.store_url,
        OPENBID_MODELS__CACHE_DIR=str(tmp_path / "server-cache"),
        OPENBID_MODELS__POLL_INTERVAL_S="0.2",
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "openbid.cli", "up"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    info = re.compile(r'openbid_model_info\{[^}]*version="1",worker="(\d)"\} 1')
    swaps = re.compile(
        r'openbid_model_swaps_total\{purpose="shaping",result="ok",worker="(\d)"\} (\S+)'
    )

    def workers_with(pattern, minimum: float = 0.0) -> set[str]:
        try:
            text = _metrics(port)
        except OSError:
            return set()
        return {
            m.group(1)
            for m in pattern.finditer(text)
            if len(m.groups()) == 1 or float(m.group(2)) >= minimum
        }

    try:
        _wait(lambda: workers_with(info) == {"0", "1"}, 120, "both workers serve version 1")
        statuses = [_post_auction(port) for _ in range(30)]
        assert statuses == [200] * 30
        assert dsps["beta"].calls == 0 and dsps["alpha"].calls == 30
        up.send_signal(signal.SIGHUP)
        _wait(lambda: workers_with(swaps, 2.0) == {"0", "1"}, 60, "both workers reloaded")
        assert _post_auction(port) == 200
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for dsp in dsps.values():
            loop.run(dsp.stop())
        loop.close()


def test_a_serving_process_never_imports_mlflow():
    """import-linter checks the modules' own imports; this checks what a serving process
    actually loads, package `__init__`s included."""
    code = (
        "import sys, openbid.platform, openbid.workers.child, openbid.pipeline.modelsync\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
