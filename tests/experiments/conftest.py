"""Fixtures of the A/B and backtest tests: a model store written directly (publish and
pointer, as promotion writes them), hand-set shaping models, and an in-process exchange
following the store with two DSPs on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest

from openbid.config import ModelsConfig, load_config
from openbid.domain import DemandPartner
from openbid.http.client import FanoutClient
from openbid.http.server import HttpServer, Request, Response, Router
from openbid.ml import Featurizer, FTRLLogisticRegression
from openbid.pipeline.modelstore import ModelStore, Pointer
from openbid.platform import Platform
from openbid.shaping.features import shaping_spec
from openbid.shaping.model import save_shaping_model
from openbid.shaping.training import TrainedShaping

HOUR_MICROS = 3_600 * 1_000_000
START_MICROS = 1_760_000_000 * 1_000_000
API_KEY = "ab-test-key"


def _learner(coef: np.ndarray) -> FTRLLogisticRegression:
    # with alpha = beta = 1 and no regularization, an FTRL weight is -z at n = 0
    state = np.stack([-coef, np.zeros_like(coef)], axis=1)
    return FTRLLogisticRegression.from_state(state, alpha=1.0, beta=1.0, l1=0.0, l2=0.0)


def shaping_model(path: Path, bias_by_dsp: dict[str, float], *, end_micros: int = START_MICROS):
    """A per-DSP shaping model scoring every request sigmoid(bias) for each DSP; threshold
    0.5: a DSP with a positive bias is always called, one with a negative bias never."""
    spec = shaping_spec("per_dsp", hash_bits=18)
    featurizer = Featurizer(spec)
    learners = {}
    for dsp, bias in bias_by_dsp.items():
        coef = np.zeros(spec.n_features, dtype=np.float32)
        coef[featurizer.bias_index] = bias
        learners[dsp] = _learner(coef)
    trained = TrainedShaping(
        layout="per_dsp",
        spec=spec,
        dsps=list(bias_by_dsp),
        learners=learners,
        thresholds={dsp: 0.5 for dsp in bias_by_dsp},
        target_kind="recall",
        target=0.99,
        exploration_share=0.01,  # the servers' share (exchange.exploration_share) wins
        window_start_micros=end_micros - HOUR_MICROS,
        window_end_micros=end_micros,
        rows=1000,
    )
    return save_shaping_model(trained, path)


def publish(store: ModelStore, purpose: str, version: str, directory: Path, alias: str = ""):
    """Publishes `directory` as `version` and, with `alias`, points the alias at it."""
    checksum = store.publish(purpose, version, directory)
    if alias:
        store.write_pointer(
            Pointer(
                purpose=purpose,
                alias=alias,
                version=version,
                artifact=ModelStore.version_dir(purpose, version),
                checksum=checksum,
                trained_end_micros=START_MICROS,
            )
        )
    return checksum


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
        return Response(
            200,
            json.dumps({"id": body["id"], "seatbid": [{"seat": self.name, "bid": [bid]}]}).encode(),
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace_s=0.1)


def auction_body(user_id: str | None, request_id: str = "r1") -> bytes:
    request = {
        "id": request_id,
        "imp": [{"id": "1", "banner": {"format": [{"w": 300, "h": 250}]}}],
        "site": {"id": "site-1", "domain": "news.example", "page": "https://news.example/a"},
        "device": {"ua": "Mozilla/5.0", "ip": "203.0.113.7", "geo": {"country": "USA"}},
        "tmax": 500,
    }
    if user_id is not None:
        request["user"] = {"id": user_id}
    return json.dumps(request).encode()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """An in-process exchange following the store (`models.serve = ["shaping"]`)."""

    def __init__(self, platform: Platform, dsps: dict[str, Dsp]) -> None:
        self.platform = platform
        self.dsps = dsps
        self.client = FanoutClient()
        self.base = f"http://127.0.0.1:{platform.port}"

    async def routed(self, user_id: str | None, request_id: str = "r1") -> set[str]:
        """The DSPs one auction called."""
        before = {name: dsp.calls for name, dsp in self.dsps.items()}
        reply = await self.client.post(
            f"{self.base}/openrtb2/auction",
            auction_body(user_id, request_id),
            timeout_s=5.0,
            headers=f"x-api-key: {API_KEY}\r\n".encode(),
        )
        assert reply.status == 200, reply.body
        return {name for name, dsp in self.dsps.items() if dsp.calls > before[name]}

    async def metrics(self) -> str:
        reply = await self.client.get(f"{self.base}/metrics", timeout_s=5.0)
        return reply.body.decode()

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


async def start_server(tmp_path: Path, models: ModelsConfig, env: dict | None = None) -> Server:
    dsps = {name: Dsp(name) for name in ("alpha", "beta")}
    for dsp in dsps.values():
        await dsp.start()
    port = _free_port()
    environ = {
        "OPENBID_SERVER__PORT": str(port),
        "OPENBID_EXCHANGE__PUBLIC_URL": f"http://127.0.0.1:{port}",
        "OPENBID_EXCHANGE__TRACKER_SECRET": "test-secret-0123456789abcdef",
        "OPENBID_EXCHANGE__EXPLORATION_SHARE": "0",
        "OPENBID_EVENTS__DIR": str(tmp_path / "events"),
        "OPENBID_EVENTS__FLUSH_INTERVAL_S": "0.05",
        "OPENBID_EVENTS__ROLL_IN_SUBPROCESS": "false",
        "OPENBID_STORES__CATALOG_URL": f"sqlite:///{tmp_path}/catalog.db",
        **(env or {}),
    }
    config = load_config(environ=environ)
    platform = Platform(msgspec.structs.replace(config, models=models))
    await asyncio.to_thread(platform.open)
    catalog = platform.catalog
    if catalog.publisher("pub-1") is None:
        catalog.add_publisher("pub-1", "News", api_key=API_KEY)
    for dsp in dsps.values():
        catalog.upsert_demand_partner(
            DemandPartner(dsp.name, f"http://127.0.0.1:{dsp.port}/bid", seat=dsp.name)
        )
    platform.exchange_server.refresh()
    await platform.serve()
    return Server(platform, dsps)


@pytest.fixture
def models_settings(tmp_path) -> ModelsConfig:
    return ModelsConfig(
        store_url=str(tmp_path / "store"),
        cache_dir=str(tmp_path / "cache"),
        serve=["shaping"],
        poll_interval_s=0.05,
    )


@pytest.fixture
def store(models_settings) -> ModelStore:
    return ModelStore(models_settings.store_url)


@pytest.fixture
def two_models(tmp_path, store):
    """Production calls only `alpha`, the challenger (version 2, alias `challenger`) only
    `beta`: which DSP an auction called says which model decided it."""
    production = shaping_model(tmp_path / "made" / "a", {"alpha": 4.0, "beta": -4.0})
    challenger = shaping_model(tmp_path / "made" / "b", {"alpha": -4.0, "beta": 4.0})
    publish(store, "shaping", "1", production, alias="production")
    publish(store, "shaping", "2", challenger, alias="challenger")
    return production, challenger
