"""A/B arms: stable assignment (across processes and restarts), shares as configured, arms
started, resized and stopped at run time through the store with every auction logging its
arm, and the config's arms refused with the key named."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbid.config import ConfigError, load_config
from openbid.events import EventReader
from openbid.experiments.arms import (
    Arm,
    ArmRouter,
    ArmsError,
    ArmsFile,
    arm_index,
    bounds_of,
    build_plan,
    from_config,
    read_arms,
    resize_arm,
    start_arm,
    stop_arm,
    write_arms,
)

from .conftest import start_server


def _router(shares: dict[str, float], experiment: str = "e1", purpose: str = "shaping"):
    arms = ArmsFile(
        purpose=purpose,
        experiment=experiment,
        arms=[Arm(name, f"@{name}", share) for name, share in shares.items()],
    )
    return ArmRouter(build_plan({purpose: (arms, {name: object() for name in shares})}))


def _labels(router: ArmRouter, keys) -> list[str]:
    return [router.assign(key).label for key in keys]


USERS = [f"user-{i}" for i in range(20_000)]


def test_observed_shares_match_the_configured_shares_within_sampling_noise():
    router = _router({"b": 0.1, "c": 0.25})
    labels = _labels(router, USERS)
    for arm, share in (("b", 0.1), ("c", 0.25), ("control", 0.65)):
        observed = labels.count(f"shaping={arm}") / len(labels)
        sigma = (share * (1 - share) / len(labels)) ** 0.5
        assert abs(observed - share) < 4 * sigma, (arm, observed)


def test_the_same_user_gets_the_same_arm_in_another_process():
    script = (
        "from openbid.experiments.arms import Arm, ArmsFile, ArmRouter, build_plan\n"
        "arms = ArmsFile(purpose='shaping', experiment='e1', arms=[Arm('b', '@b', 0.1), "
        "Arm('c', '@c', 0.25)])\n"
        "router = ArmRouter(build_plan({'shaping': (arms, {'b': 1, 'c': 2})}))\n"
        "print('\\n'.join(router.assign(f'user-{i}').label for i in range(2000)))\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert other == _labels(_router({"b": 0.1, "c": 0.25}), USERS[:2000])


def test_purposes_are_assigned_independently_of_each_other():
    shaping = ArmsFile(purpose="shaping", experiment="e", arms=[Arm("b", "@b", 0.5)])
    ctr = ArmsFile(purpose="ctr", experiment="e", arms=[Arm("b", "@b", 0.5)])
    router = ArmRouter(build_plan({"shaping": (shaping, {"b": 1}), "ctr": (ctr, {"b": 2})}))
    labels = _labels(router, USERS)
    both = labels.count("shaping=b,ctr=b") / len(labels)
    assert abs(both - 0.25) < 0.02  # independent: 0.5 * 0.5, not 0.5
    assert router.assign(USERS[0]).arms.keys() == {"shaping", "ctr"}


def test_a_new_experiment_deals_the_users_out_again_and_a_resize_keeps_them():
    first = _labels(_router({"b": 0.2}, "e1"), USERS)
    again = _labels(_router({"b": 0.2}, "e2"), USERS)
    in_b = {u for u, label in zip(USERS, first, strict=True) if label == "shaping=b"}
    overlap = len(in_b & {u for u, label in zip(USERS, again, strict=True) if label == "shaping=b"})
    assert overlap / len(in_b) < 0.3  # about 0.2 by chance, not 1
    grown = _labels(_router({"b": 0.3}, "e1"), USERS)
    assert all(g == "shaping=b" for f, g in zip(first, grown, strict=True) if f == "shaping=b")


@given(
    shares=st.lists(st.floats(0.001, 0.3), min_size=1, max_size=3),
    h=st.integers(0, (1 << 32) - 1),
)
def test_arm_index_is_the_first_arm_whose_bound_exceeds_the_hash(shares, h):
    bounds = bounds_of(shares)
    index = arm_index(h, bounds)
    assert 0 <= index <= len(shares)
    assert all(h >= bound for bound in bounds[:index])
    assert index == len(shares) or h < bounds[index]


def test_arms_files_refuse_bad_fields_by_name(store):
    with pytest.raises(ArmsError, match="arms: shares add up to 1.1"):
        start_arm(start_arm(None, "shaping", "b", "@b", 0.6), "shaping", "c", "@c", 0.5)
    with pytest.raises(ArmsError, match=r"arms\[0\].model"):
        start_arm(None, "shaping", "b", "latest", 0.1)
    with pytest.raises(ArmsError, match=r"arms\[0\].name"):
        start_arm(None, "shaping", "control", "@b", 0.1)
    store.fs.makedirs(f"{store.root}/shaping/ab", exist_ok=True)
    store.fs.pipe_file(f"{store.root}/shaping/ab/arms.json", b'{"purpose": "ctr"}')
    with pytest.raises(ArmsError, match="arms.json"):
        read_arms(store, "shaping")


def test_config_arms_are_checked_with_the_key_named():
    with pytest.raises(ConfigError, match="experiments.shaping"):
        load_config(environ={"OPENBID_EXPERIMENTS__SHAPING": '[{name="b", model="@c", share=1.5}]'})
    with pytest.raises(ConfigError, match="experiments.shaping"):
        load_config(environ={"OPENBID_EXPERIMENTS__SHAPING": '[{name="b", model="@c", shar=0.1}]'})
    settings = load_config(
        environ={"OPENBID_EXPERIMENTS__SHAPING": '[{name="b", model="@challenger", share=0.1}]'}
    ).experiments
    assert from_config(settings, "shaping").arms == [Arm("b", "@challenger", 0.1)]


def _arm_of(server, users):
    return {user: next(iter(asyncio.run(server.routed(user)))) for user in users}


def test_arms_start_resize_and_stop_at_run_time_and_every_auction_logs_its_arm(
    tmp_path, models_settings, store, two_models
):
    users = [f"u{i}" for i in range(60)]

    async def main():
        server = await start_server(tmp_path, models_settings)
        sync = server.platform.model_sync
        try:
            assert {await _one(server, u) for u in users} == {"alpha"}  # no test: production
            write_arms(store, start_arm(None, "shaping", "challenger", "@challenger", 0.5))
            await server.until(
                lambda: server.platform.arm_sync.serving["shaping"] == ["challenger"]
            )
            half = {u: await _one(server, u) for u in users}
            assert 15 < sum(d == "beta" for d in half.values()) < 45
            assert {u: await _one(server, u) for u in users} == half  # sticky
            write_arms(store, resize_arm(read_arms(store, "shaping"), "challenger", 0.9))
            await server.until(
                lambda: server.platform.exchange.arms.plan.arms["shaping"].arms[0].share == 0.9
            )
            grown = {u: await _one(server, u) for u in users}
            assert all(grown[u] == "beta" for u in users if half[u] == "beta")
            assert sum(d == "beta" for d in grown.values()) > 45
            write_arms(store, stop_arm(read_arms(store, "shaping"), "shaping", None))
            await server.until(lambda: not server.platform.exchange.arms.plan.arms)
            assert {await _one(server, u) for u in users} == {"alpha"}
            assert sync.extra == {}
            metrics = await server.metrics()
        finally:
            await server.stop()
        return half, grown, metrics

    half, grown, metrics = asyncio.run(main())
    auctions = EventReader(tmp_path / "events").read_table("auction").to_pylist()
    arms = [a["ab_arm"] for a in auctions]
    assert arms[:60] == [""] * 60
    expected = [f"shaping={'challenger' if half[u] == 'beta' else 'control'}" for u in users]
    assert arms[60:120] == expected
    assert arms[120:180] == expected
    assert arms[180:240] == [
        f"shaping={'challenger' if grown[u] == 'beta' else 'control'}" for u in users
    ]
    assert arms[240:] == [""] * 60
    models = {(a["ab_arm"], a["shaping_model"]) for a in auctions[60:120]}
    assert len({m for _, m in models}) == 2  # each arm logged its own model


async def _one(server, user):
    routed = await server.routed(user)
    assert len(routed) == 1, routed
    return next(iter(routed))


def test_a_restarted_server_puts_every_user_back_in_the_same_arm(
    tmp_path, models_settings, store, two_models
):
    write_arms(store, start_arm(None, "shaping", "challenger", "@challenger", 0.3))
    users = [f"u{i}" for i in range(40)] + [None] * 5  # no user: the request id decides

    async def run_once():
        server = await start_server(tmp_path, models_settings)
        try:
            return [await server.routed(u, request_id=f"r{i}") for i, u in enumerate(users)]
        finally:
            await server.stop()

    first = asyncio.run(run_once())
    second = asyncio.run(run_once())
    assert first == second
    assert {"alpha"} in first and {"beta"} in first


def test_an_arm_whose_model_cannot_be_found_leaves_its_traffic_to_control(
    tmp_path, models_settings, store, two_models
):
    write_arms(store, start_arm(None, "shaping", "ghost", "@nobody", 0.5))

    async def main():
        server = await start_server(tmp_path, models_settings)
        try:
            routed = {d for i in range(30) for d in await server.routed(f"u{i}")}
            return routed, await server.metrics()
        finally:
            await server.stop()

    routed, metrics = asyncio.run(main())
    assert routed == {"alpha"}
    assert (
        'openbid_ab_arm_share{arm="ghost",model="@nobody",purpose="shaping",serving="0"} 0.5'
        in metrics
    )


def test_the_serving_side_of_experiments_and_monitoring_loads_neither_mlflow_nor_duckdb():
    code = (
        "import sys, openbid.experiments.armsync, openbid.monitoring.watch\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'duckdb')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_ab_commands_start_resize_and_stop_arms_in_the_store(tmp_path, store):
    from click.testing import CliRunner

    from openbid.cli import main

    env = {"OPENBID_MODELS__STORE_URL": store.url}
    runner = CliRunner()
    started = runner.invoke(main, ["ab", "start", "shaping", "--model", "@challenger",
                                   "--share", "0.2"], env=env)  # fmt: skip
    assert started.exit_code == 0, started.output
    assert read_arms(store, "shaping").arms == [Arm("challenger", "@challenger", 0.2)]
    assert (
        runner.invoke(main, ["ab", "resize", "shaping", "challenger", "0.3"], env=env).exit_code
        == 0
    )
    status = runner.invoke(main, ["ab", "status"], env=env).output
    assert "shaping: challenger=@challenger 30.0%" in status and "from the store" in status
    again = runner.invoke(main, ["ab", "start", "shaping", "--share", "0.9"], env=env)
    assert again.exit_code != 0 and "already runs" in again.output
    assert runner.invoke(main, ["ab", "stop", "shaping"], env=env).exit_code == 0
    assert read_arms(store, "shaping").arms == []
    assert "shaping: no arm" in runner.invoke(main, ["ab", "status"], env=env).output
