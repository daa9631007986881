"""The shaping service over HTTP and its fail-open client."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from openbid.http.client import FanoutClient
from openbid.shaping import ModelShaper
from openbid.shaping.service import RemoteShaper, ShapingService

DSPS = ["alpha", "beta"]
WEIGHTS = {"alpha": {"good": 6.0}, "beta": {"bad": 6.0}}
TOKEN = "reload-token-0123456789"
AUTH = f"authorization: Bearer {TOKEN}\r\n".encode()


def test_remote_decisions_equal_in_process_ones(model_factory, tmp_path):
    path = model_factory(DSPS, WEIGHTS)
    local = ModelShaper(path, exploration_share=0.0)

    async def main():
        service = ShapingService(
            ModelShaper(path, exploration_share=0.0), model_store=tmp_path, reload_token=TOKEN
        )
        port = await service.start()
        client = FanoutClient()
        try:
            remote = RemoteShaper(f"http://127.0.0.1:{port}", client, timeout_s=2.0)
            decisions = [
                await remote.decide_async({"site_id": site}, DSPS) for site in ("good", "bad", "x")
            ]
            health = await client.get(f"http://127.0.0.1:{port}/healthz", timeout_s=2.0)
            metrics = await client.get(f"http://127.0.0.1:{port}/metrics", timeout_s=2.0)
            bad_reload = await client.post(
                f"http://127.0.0.1:{port}/reload",
                msgspec.json.encode({"path": str(tmp_path / "nowhere")}),
                timeout_s=2.0,
                headers=AUTH,
            )
            bad_shape = await client.post(
                f"http://127.0.0.1:{port}/shape", b'{"features": 1}', timeout_s=2.0
            )
            return remote, decisions, health, metrics, bad_reload, bad_shape
        finally:
            client.close()
            await service.stop()

    remote, decisions, health, metrics, bad_reload, bad_shape = asyncio.run(main())
    assert decisions == [local.decide({"site_id": site}, DSPS) for site in ("good", "bad", "x")]
    assert remote.model_version == local.model_version
    assert msgspec.json.decode(health.body) == {
        "model_version": local.model_version,
        "failing_open": False,
    }
    assert b"openbid_shaping_decisions_total" in metrics.body
    assert bad_reload.status == 422 and b"still serving" in bad_reload.body
    assert bad_shape.status == 400


def test_remote_shaper_fails_open_when_the_service_is_down():
    async def main():
        client = FanoutClient()
        try:
            # a port nothing listens on: connection refused
            remote = RemoteShaper("http://127.0.0.1:9", client, timeout_s=0.5)
            return remote, await remote.decide_async({"site_id": "good"}, DSPS)
        finally:
            client.close()

    remote, decisions = asyncio.run(main())
    assert [(d.dsp, d.send, d.score) for d in decisions] == [
        ("alpha", True, -1.0),
        ("beta", True, -1.0),
    ]
    assert remote.failures == 1


async def _reload(port: int, path: str, headers: bytes = AUTH):
    client = FanoutClient()
    try:
        return await client.post(
            f"http://127.0.0.1:{port}/reload",
            msgspec.json.encode({"path": path}),
            timeout_s=2.0,
            headers=headers,
        )
    finally:
        client.close()


def _serve(shaper, **kwargs):
    """Runs `check(port)` against a service around `shaper`."""

    def run(check):
        async def main():
            service = ShapingService(shaper, **kwargs)
            port = await service.start()
            try:
                return await check(port)
            finally:
                await service.stop()

        return asyncio.run(main())

    return run


def test_reload_needs_the_token(model_factory, tmp_path):
    first, second = model_factory(DSPS, WEIGHTS), model_factory(DSPS, {"alpha": {"x": 1.0}})
    shaper = ModelShaper(first)
    before = shaper.model_version
    run = _serve(shaper, model_store=tmp_path, reload_token=TOKEN)
    for headers in (
        b"",
        b"authorization: Bearer wrong-token-0123456789\r\n",
        b"authorization: Basic x\r\n",
    ):
        reply = run(lambda port, h=headers: _reload(port, second.name, h))
        assert reply.status == 401 and b"Bearer" in reply.body
        assert shaper.model_version == before
    reply = run(lambda port: _reload(port, second.name))
    assert reply.status == 200
    assert msgspec.json.decode(reply.body)["model_version"] == shaper.model_version != before


def test_reload_refuses_paths_outside_the_model_store(model_factory, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    outside = model_factory(DSPS, WEIGHTS)  # a valid model, but not in the store
    (store / "link").symlink_to(outside)
    shaper = ModelShaper()
    run = _serve(shaper, model_store=store, reload_token=TOKEN)
    for path in (str(outside), "../" + outside.name, "link", ".", "/etc"):
        reply = run(lambda port, p=path: _reload(port, p))
        assert reply.status == 403, path
        assert b"inside the model store" in reply.body
    assert shaper.failing_open  # nothing was loaded


def test_reload_is_off_without_a_token_or_a_store(model_factory, tmp_path):
    path = model_factory(DSPS, WEIGHTS)
    for kwargs in ({}, {"model_store": tmp_path}, {"reload_token": TOKEN}):
        shaper = ModelShaper()
        reply = _serve(shaper, **kwargs)(lambda port, p=path: _reload(port, p.name))
        assert reply.status == 403 and b"reload is off" in reply.body
        assert shaper.failing_open


def test_a_short_reload_token_is_refused():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        ShapingService(ModelShaper(), model_store=".", reload_token="short")
