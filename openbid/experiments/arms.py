"""Live A/B arms: which share of a purpose's traffic another model serves, and the stable
assignment of each request to an arm (a hash and a compare, on the auction's path).

An arm names a model by registered version (`"7"`) or alias (`"@challenger"`) and a share;
what the arms leave is `control` (the model the servers follow, `models.alias`). A request
is assigned by MurmurHash3 of its user id (else its request id), seeded by the purpose and
the experiment's name: the same user lands in the same arm in every process and after every
restart, and the purposes' assignments are independent of each other.

Arms come from the model store's `<purpose>/ab/arms.json` when it exists (written by
`openbid ab start|resize|stop`, read by every server's model sync: run-time changes reach
all workers within a poll), else from `[experiments]` in the config.

>>> plan = build_plan({"shaping": (ArmsFile(purpose="shaping", experiment="e1",
...     arms=[Arm(name="challenger", model="@challenger", share=0.25)]), {"challenger": None})})
>>> router = ArmRouter(plan)
>>> labels = [router.assign(f"user-{i}").label for i in range(10_000)]
>>> round(labels.count("shaping=challenger") / len(labels), 2)
0.25
>>> router.assign("user-42") is router.assign("user-42")
True
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import mmh3
import msgspec

from openbid import clock
from openbid.config import ExperimentsConfig
from openbid.errors import OpenbidError

PURPOSES = ("shaping", "ctr", "cvr")
CONTROL = "control"
HASH_SPACE = 1 << 32
ARMS_FILE = "ab/arms.json"
"""Under the purpose's directory of the model store."""


class ArmsError(OpenbidError):
    """An arms file or command is not valid; the message names the field."""


class Arm(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    model: str
    """A registered version ("7") or an alias ("@challenger")."""
    share: float


class ArmsFile(msgspec.Struct, frozen=True, kw_only=True):
    """The arms of one purpose. Unknown fields are ignored (a newer writer may add some)."""

    purpose: str
    experiment: str
    """Salts the hash: a new experiment deals the users out again; a resize keeps it."""
    arms: list[Arm] = []
    started_at_micros: int = 0
    """When the experiment started (openbid's clock): `openbid ab report` reads from here."""
    updated_at_micros: int = 0


def check_arms(arms: ArmsFile) -> ArmsFile:
    """`arms` if valid, else `ArmsError` naming the field."""
    if arms.purpose not in PURPOSES:
        raise ArmsError(f"purpose: {arms.purpose!r} is not one of {', '.join(PURPOSES)}")
    if not arms.experiment:
        raise ArmsError("experiment: must not be empty")
    names = set()
    for i, arm in enumerate(arms.arms):
        if not arm.name or arm.name == CONTROL or arm.name in names or "=" in arm.name:
            raise ArmsError(f"arms[{i}].name: {arm.name!r} is empty, 'control' or repeated")
        names.add(arm.name)
        if not (arm.model.startswith("@") and len(arm.model) > 1) and not arm.model.isdigit():
            raise ArmsError(f"arms[{i}].model: {arm.model!r} is neither a version nor @alias")
        if not 0.0 < arm.share < 1.0:
            raise ArmsError(f"arms[{i}].share: {arm.share} is not in (0, 1)")
    total = sum(arm.share for arm in arms.arms)
    if total >= 1.0:
        raise ArmsError(f"arms: shares add up to {total:g}; control needs some traffic")
    return arms


def from_config(settings: ExperimentsConfig, purpose: str) -> ArmsFile | None:
    """The config's arms of `purpose` (None when it has none)."""
    arms = getattr(settings, purpose)
    if not arms:
        return None
    return check_arms(
        ArmsFile(
            purpose=purpose,
            experiment=settings.experiment,
            arms=[Arm(a.name, a.model, a.share) for a in arms],
        )
    )


# --- the arms file in the model store (`store`: an `openbid.pipeline.modelstore.ModelStore`)
def arms_path(store: Any, purpose: str) -> str:
    if purpose not in PURPOSES:
        raise ArmsError(f"purpose: {purpose!r} is not one of {', '.join(PURPOSES)}")
    return f"{store.root}/{purpose}/{ARMS_FILE}"


def read_arms(store: Any, purpose: str) -> ArmsFile | None:
    """The store's arms file of `purpose`; None when there is none. Raises OSError when the
    store cannot be read and `ArmsError` for a file that is not an arms file."""
    path = arms_path(store, purpose)
    try:
        raw = store.fs.cat_file(path)
    except FileNotFoundError:
        return None
    try:
        arms = msgspec.json.decode(raw, type=ArmsFile)
    except msgspec.DecodeError as exc:
        raise ArmsError(f"{path}: not an arms file: {exc}") from None
    if arms.purpose != purpose:
        raise ArmsError(f"{path}: field purpose: says {arms.purpose!r}")
    return check_arms(arms)


def write_arms(store: Any, arms: ArmsFile) -> None:
    """Replaces the arms file atomically (a reader sees the old file or the new one)."""
    path = arms_path(store, check_arms(arms).purpose)
    data = msgspec.json.format(msgspec.json.encode(arms))
    if not store.local:  # an object store publishes an upload whole
        store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        store.fs.pipe_file(path, data)
        return
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".arms.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def start_arm(current: ArmsFile | None, purpose: str, name: str, model: str, share: float):
    """`current` with arm `name` added (a new experiment when none runs)."""
    now = clock.now_micros()
    if current is None or not current.arms:
        current = ArmsFile(
            purpose=purpose,
            experiment=f"{purpose}-{now}-{secrets.token_hex(2)}",
            started_at_micros=now,
        )
    if any(arm.name == name for arm in current.arms):
        raise ArmsError(f"arm {name!r} already runs: resize or stop it")
    arms = [*current.arms, Arm(name, model, share)]
    return check_arms(msgspec.structs.replace(current, arms=arms, updated_at_micros=now))


def resize_arm(current: ArmsFile | None, name: str, share: float) -> ArmsFile:
    """`current` with arm `name` given `share` (same experiment: users stay where they are,
    except those the new boundaries move)."""
    if current is None or not any(arm.name == name for arm in current.arms):
        raise ArmsError(f"no arm {name!r} runs")
    arms = [Arm(a.name, a.model, share) if a.name == name else a for a in current.arms]
    return check_arms(
        msgspec.structs.replace(current, arms=arms, updated_at_micros=clock.now_micros())
    )


def stop_arm(current: ArmsFile | None, purpose: str, name: str | None) -> ArmsFile:
    """`current` without arm `name` (every arm when None): its traffic goes back to control.
    The file stays (with no arms) so that config arms do not come back."""
    now = clock.now_micros()
    if current is None:
        return ArmsFile(purpose=purpose, experiment="stopped", updated_at_micros=now)
    if name is not None and not any(arm.name == name for arm in current.arms):
        raise ArmsError(f"no arm {name!r} runs")
    arms = [] if name is None else [a for a in current.arms if a.name != name]
    return msgspec.structs.replace(current, arms=arms, updated_at_micros=now)


# --- assignment (the hot path)
def seed_of(purpose: str, experiment: str) -> int:
    """The hash seed of one purpose's experiment (stable across processes and versions)."""
    return mmh3.hash(f"{purpose}\x1f{experiment}", 0x0B1D, signed=False)


def bounds_of(shares: Sequence[float]) -> tuple[int, ...]:
    """Cumulative upper bounds in the 32-bit hash space, one per arm (control is the rest).

    >>> bounds_of([0.25, 0.5])
    (1073741824, 3221225472)
    """
    total = 0.0
    bounds = []
    for share in shares:
        total += share
        bounds.append(min(round(total * HASH_SPACE), HASH_SPACE))
    return tuple(bounds)


def arm_index(h: int, bounds: tuple[int, ...]) -> int:
    """The arm a 32-bit hash falls in: the first whose bound exceeds it; `len(bounds)`
    (control) when none does."""
    i = 0
    for bound in bounds:
        if h < bound:
            return i
        i += 1
    return i


class Assignment:
    """One request's arms in every purpose under test; built once per arms change, shared
    by every request that falls in them (the hot path allocates nothing)."""

    __slots__ = ("label", "shaper", "models", "arms")

    def __init__(
        self, label: str, shaper: Any, models: Mapping[str, Any], arms: Mapping[str, str]
    ) -> None:
        self.label = label
        """`purpose=arm` per purpose under test, comma-separated: what the auction logs."""
        self.shaper = shaper
        """The shaping arm's shaper; None: the exchange's own (control, or no test)."""
        self.models = models
        """Per pricing purpose (`ctr`, `cvr`) in a non-control arm, that arm's model slot."""
        self.arms = arms
        """Per purpose under test, the arm's name."""

    def __repr__(self) -> str:
        return f"Assignment({self.label!r})"


NO_TEST = Assignment("", None, {}, {})


class Plan:
    """The assignment of every purpose under test: per purpose its seed and bounds, and
    every combination of arms as one `Assignment` (index: mixed radix over purposes)."""

    __slots__ = ("purposes", "assignments", "arms")

    def __init__(
        self,
        purposes: tuple[tuple[int, tuple[int, ...], int], ...],
        assignments: tuple[Assignment, ...],
        arms: Mapping[str, ArmsFile],
    ) -> None:
        self.purposes = purposes
        """(seed, bounds, stride) per purpose under test."""
        self.assignments = assignments
        self.arms = arms
        """The arms each purpose runs (only arms whose model serves)."""


EMPTY_PLAN = Plan((), (NO_TEST,), {})


def build_plan(live: Mapping[str, tuple[ArmsFile, Mapping[str, Any]]]) -> Plan:
    """The plan of `live`: per purpose, its arms (those whose model serves) and each arm's
    serving object by arm name (a shaper for `shaping`, a model slot for `ctr`/`cvr`)."""
    purposes: list[tuple[int, tuple[int, ...], int]] = []
    names: list[tuple[str, list[str]]] = []
    kept: dict[str, ArmsFile] = {}
    stride = 1
    for purpose in PURPOSES:
        if purpose not in live:
            continue
        arms_file, _ = live[purpose]
        arms = arms_file.arms
        if not arms:
            continue
        kept[purpose] = arms_file
        purposes.append(
            (seed_of(purpose, arms_file.experiment), bounds_of([a.share for a in arms]), stride)
        )
        names.append((purpose, [a.name for a in arms] + [CONTROL]))
        stride *= len(arms) + 1
    if not purposes:
        return EMPTY_PLAN
    assignments = []
    # mixed radix: the first purpose varies fastest, as `ArmRouter.assign` adds index*stride
    for combo in itertools.product(*[range(len(arm_names)) for _, arm_names in reversed(names)]):
        chosen = dict(zip([p for p, _ in reversed(names)], combo, strict=True))
        arms_of: dict[str, str] = {}
        models: dict[str, Any] = {}
        shaper = None
        for purpose, arm_names in names:
            arm = arm_names[chosen[purpose]]
            arms_of[purpose] = arm
            if arm == CONTROL:
                continue
            serving = live[purpose][1][arm]
            if purpose == "shaping":
                shaper = serving
            else:
                models[purpose] = serving
        label = ",".join(f"{purpose}={arm}" for purpose, arm in arms_of.items())
        assignments.append(Assignment(label, shaper, models, arms_of))
    return Plan(tuple(purposes), tuple(assignments), kept)


class ArmRouter:
    """What the exchange asks once per auction (`assign`); the model sync replaces its plan
    (one reference) when arms start, resize or stop, or an arm's model changes."""

    def __init__(self, plan: Plan = EMPTY_PLAN) -> None:
        self.plan = plan

    def assign(self, key: str) -> Assignment:
        """The arms of the request whose user id (else request id) is `key`."""
        plan = self.plan
        index = 0
        for seed, bounds, stride in plan.purposes:
            h = mmh3.hash(key, seed, signed=False)
            i = 0
            for bound in bounds:
                if h < bound:
                    break
                i += 1
            index += i * stride
        return plan.assignments[index]


def parse_label(label: str) -> dict[str, str]:
    """An auction's logged `ab_arm` as {purpose: arm}.

    >>> parse_label("shaping=challenger,ctr=control")
    {'shaping': 'challenger', 'ctr': 'control'}
    >>> parse_label("")
    {}
    """
    out = {}
    for part in label.split(","):
        purpose, sep, arm = part.partition("=")
        if sep:
            out[purpose] = arm
    return out


def ensure_arm(
    store: Any,
    purpose: str = "shaping",
    name: str = "challenger",
    model: str = "@challenger",
    share: float = 0.1,
) -> ArmsFile:
    """Starts arm `name` unless the store already has arms for `purpose` (then leaves them):
    what `make demo` calls at start so that a challenger serves 10% of the traffic as soon
    as a model is promoted to `@challenger` (until then its share stays with control)."""
    current = read_arms(store, purpose)
    if current is not None:
        return current
    arms = start_arm(None, purpose, name, model, share)
    write_arms(store, arms)
    return arms
