"""The serving side of A/B tests: every serving process follows each purpose's arms and
serves each arm's model from a slot of its own, then hands the exchange a new assignment
plan (one reference swapped), without a restart.

`ArmSync` is an extension of the process's `ModelSync` (`openbid.pipeline.modelsync`): after
each poll of the store it reads the arms file of each purpose the server follows (else the
config's arms), follows each arm's model (`ModelSync.follow`: fetched, checked, loaded like
the alias's model), and only arms whose model serves get traffic; an arm whose model is
missing or refused leaves its share to control, and says so in the log and `/metrics`.
Every worker reads the same file, so all agree within one poll (`models.poll_interval_s`).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from openbid.config import Config
from openbid.experiments.arms import (
    ArmRouter,
    ArmsError,
    ArmsFile,
    build_plan,
    from_config,
    read_arms,
)
from openbid.obs import REGISTRY

log = logging.getLogger(__name__)


class ArmSync:
    """Follows the arms of `purposes` in `sync`'s store for `router` (module doc)."""

    def __init__(self, router: ArmRouter, config: Config, purposes: list[str]) -> None:
        self.router = router
        self.config = config
        self.purposes = purposes
        self.arms: dict[str, ArmsFile | None] = {purpose: None for purpose in purposes}
        """What each purpose runs (file or config), whether its models serve or not."""
        self.serving: dict[str, list[str]] = {purpose: [] for purpose in purposes}
        """The arms whose model serves, by purpose."""
        self.refs: dict[str, set[str]] = {purpose: set() for purpose in purposes}
        self.slots: dict[tuple[str, str], Any] = {}
        self.read_errors = 0
        self._failing = False
        self._key: tuple = ()
        _ARM_SYNCS.add(self)

    def _read(self, store: Any, purpose: str) -> ArmsFile | None:
        try:
            arms = read_arms(store, purpose)
        except (OSError, ArmsError) as exc:  # the arms in force stay
            self.read_errors += 1
            if not self._failing:
                self._failing = True
                log.error(
                    "cannot read the A/B arms; the arms in force stay",
                    extra={"purpose": purpose, "error": str(exc)},
                )
            return self.arms[purpose]
        self._failing = False
        return arms if arms is not None else from_config(self.config.experiments, purpose)

    def _slot(self, purpose: str, ref: str) -> Any:
        from openbid.pipeline.modelsync import ScoringSlot, ShaperSlot

        if purpose == "shaping":
            from openbid.shaping import ModelShaper

            shaper = ModelShaper(
                exploration_share=self.config.exchange.exploration_share, name=f"ab:{ref}"
            )
            return ShaperSlot(shaper)
        return ScoringSlot(purpose)

    def poll(self, sync: Any, force: bool) -> None:
        """`ModelSync`'s extension hook (in its poll thread)."""
        live: dict[str, tuple[ArmsFile, dict[str, Any]]] = {}
        key = []
        for purpose in self.purposes:
            arms = self._read(sync.store, purpose)
            self.arms[purpose] = arms
            wanted = {arm.model for arm in arms.arms} if arms is not None else set()
            for ref in wanted - self.refs[purpose]:
                slot = self.slots[(purpose, ref)] = self._slot(purpose, ref)
                sync.follow(purpose, ref, slot)
            for ref in self.refs[purpose] - wanted:
                sync.unfollow(purpose, ref)
                self.slots.pop((purpose, ref), None)
            self.refs[purpose] = wanted
            for ref in sorted(wanted):
                sync.poll_extra(purpose, ref, force)
            if arms is None:
                self.serving[purpose] = []
                continue
            serving = [arm for arm in arms.arms if sync.extra[(purpose, arm.model)].pointer]
            self.serving[purpose] = [arm.name for arm in serving]
            if serving:
                objects = {
                    arm.name: _serving_object(self.slots[(purpose, arm.model)]) for arm in serving
                }
                live[purpose] = (ArmsFile(purpose=purpose, experiment=arms.experiment,
                                          arms=serving, started_at_micros=arms.started_at_micros),
                                 objects)  # fmt: skip
            key.append(
                (purpose, arms.experiment, tuple((a.name, a.model, a.share) for a in serving))
            )
        if tuple(key) != self._key:
            self._key = tuple(key)
            self.router.plan = build_plan(live)
            log.info(
                "A/B arms in force",
                extra={
                    "arms": {
                        p: [f"{a.name}={a.model}:{a.share:g}" for a in f.arms]
                        for p, (f, _) in live.items()
                    },
                    "not_serving": {
                        p: [a.name for a in f.arms if a.name not in self.serving[p]]
                        for p, f in self.arms.items()
                        if f is not None
                    },
                },
            )


def _serving_object(slot: Any) -> Any:
    """What an arm's requests use: a shaper (`shaping`) or the model slot (`ctr`, `cvr`)."""
    return getattr(slot, "shaper", slot)


def attach_arms(platform: Any) -> ArmSync | None:
    """Gives `platform`'s exchange an `ArmRouter` and its model sync an `ArmSync` (arms of
    the purposes it serves, `models.serve`); reads the arms once before serving."""
    sync = platform.model_sync
    exchange = platform.exchange
    if exchange is None:
        return None
    router = ArmRouter()
    exchange.arms = router
    if sync is None:
        configured = [
            p for p in ("shaping", "ctr", "cvr") if getattr(platform.config.experiments, p)
        ]
        if configured:
            log.warning(
                "A/B arms configured for purposes the servers do not follow (models.serve)",
                extra={"purposes": configured},
            )
        return None
    arm_sync = ArmSync(router, platform.config, list(sync.followed))
    sync.extensions.append(arm_sync)
    arm_sync.poll(sync, False)
    return arm_sync


_ARM_SYNCS: weakref.WeakSet[ArmSync] = weakref.WeakSet()


class _ArmCollector:
    """`openbid_ab_arm_share{purpose,arm,model,serving}`: the share of each arm in force."""

    def collect(self):
        share = GaugeMetricFamily(
            "openbid_ab_arm_share",
            "Share of a purpose's traffic an A/B arm is given (serving=0: its model does not "
            "serve yet, and its share goes to control)",
            labels=["purpose", "arm", "model", "serving"],
        )
        errors = GaugeMetricFamily(
            "openbid_ab_arms_read_errors", "Reads of the arms files that failed", labels=[]
        )
        total_errors = 0
        for arm_sync in list(_ARM_SYNCS):
            total_errors += arm_sync.read_errors
            for purpose, arms in arm_sync.arms.items():
                if arms is None:
                    continue
                serving = arm_sync.serving[purpose]
                for arm in arms.arms:
                    share.add_metric(
                        [purpose, arm.name, arm.model, "1" if arm.name in serving else "0"],
                        arm.share,
                    )
        errors.add_metric([], total_errors)
        yield share
        yield errors


REGISTRY.register(_ArmCollector())
