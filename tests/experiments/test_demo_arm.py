"""The demo's A/B test (`openbid up --demo`, issue 16): once a second shaping model has been
registered, the demo puts `@challenger` on 10% of the traffic, every auction logs its arm,
and `openbid ab report` on that log shows the challenger against control."""

from __future__ import annotations

import asyncio
import re

import msgspec
from click.testing import CliRunner

from openbid.cli import main
from openbid.config import Config
from openbid.demo_loop import AB_SHARE, ChallengerArm
from openbid.events import EventReader
from openbid.experiments.arms import Arm, read_arms

from .conftest import publish, shaping_model, start_server


def test_the_demo_starts_its_challenger_arm_at_the_second_model_and_ab_report_shows_it(
    tmp_path, models_settings, store
):
    first = shaping_model(tmp_path / "made" / "a", {"alpha": 4.0, "beta": -4.0})
    second = shaping_model(tmp_path / "made" / "b", {"alpha": -4.0, "beta": 4.0})
    publish(store, "shaping", "1", first, alias="production")
    # the first model passed the gate: registered as challenger, promoted to production
    store.write_pointer(
        msgspec.structs.replace(store.read_pointer("shaping", "production"), alias="challenger")
    )
    arm = ChallengerArm(Config(models=models_settings))
    assert arm.check() is None  # one model: nothing to test it against
    assert read_arms(store, "shaping") is None
    publish(store, "shaping", "2", second, alias="challenger")
    arms = arm.check()
    assert arms is not None and arms.arms == [Arm("challenger", "@challenger", AB_SHARE)]
    assert read_arms(store, "shaping") == arms

    users = [f"user-{i}" for i in range(250)]

    async def run() -> dict[str, set[str]]:
        server = await start_server(tmp_path, models_settings)
        try:
            await server.until(
                lambda: server.platform.arm_sync.serving["shaping"] == ["challenger"]
            )
            return {user: await server.routed(user, f"r-{user}") for user in users}
        finally:
            await server.stop()

    routed = asyncio.run(run())
    on_challenger = sum(dsps == {"beta"} for dsps in routed.values())
    assert sum(dsps == {"alpha"} for dsps in routed.values()) + on_challenger == len(users)
    assert 0.04 * len(users) < on_challenger < 0.18 * len(users)  # 10%: 25 +/- 4.7 (sd)
    arms_logged = EventReader(tmp_path / "events").read_table("auction")["ab_arm"].to_pylist()
    assert arms_logged.count("shaping=challenger") == on_challenger

    result = CliRunner().invoke(
        main,
        ["ab", "report", "shaping"],  # from the arm's start to the end of the log
        env={"OPENBID_EVENTS__DIR": str(tmp_path / "events"),
             "OPENBID_MODELS__STORE_URL": models_settings.store_url},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert re.search(rf"challenger \({on_challenger:,}\)", result.output), result.output
    assert re.search(rf"control \({len(users) - on_challenger:,}\)", result.output)
    assert "challenger against control:" in result.output
