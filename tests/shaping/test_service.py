"""The shaping service over HTTP and its fail-open client."""

from __future__ import annotations

import asyncio

import msgspec

from openbid.http.client import FanoutClient
from openbid.shaping import ModelShaper
from openbid.shaping.service import RemoteShaper, ShapingService

DSPS = ["alpha", "beta"]
WEIGHTS = {"alpha": {"good": 6.0}, "beta": {"bad": 6.0}}


def test_remote_decisions_equal_in_process_ones(model_factory, tmp_path):
    path = model_factory(DSPS, WEIGHTS)
    local = ModelShaper(path, exploration_share=0.0)

    async def main():
        service = ShapingService(ModelShaper(path, exploration_share=0.0))
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
