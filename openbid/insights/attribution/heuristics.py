"""Rule-based attribution: each converting path's conversions (and value) are shared among
its touches by a fixed rule. Repeated touches of a channel each take their share, as in
ChannelAttribution's heuristic models.

| model | share of a path's credit |
| --- | --- |
| `last_touch` | all to the last touch |
| `first_touch` | all to the first touch |
| `linear` | equal per touch |
| `position_based` | 40% first, 40% last, 20% spread over the middle (50/50 for two touches) |
| `time_decay` | halves every `half_life` before the conversion (touches, or seconds when ages are given) |

>>> from openbid.insights.attribution.paths import Paths
>>> p = Paths.from_strings(["a > b > c"], conversions=[10])
>>> position_based(p).conversions.round(6).tolist()
[4.0, 2.0, 4.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openbid.insights.attribution.paths import Paths
from openbid.insights.errors import InsightsError

HEURISTICS: tuple[str, ...] = (
    "last_touch",
    "first_touch",
    "linear",
    "position_based",
    "time_decay",
)


@dataclass(frozen=True, slots=True)
class Credit:
    """Conversions and value credited to each channel (aligned with `Paths.channels`)."""

    conversions: np.ndarray
    value: np.ndarray


def _credit(paths: Paths, touch_share: np.ndarray) -> Credit:
    """Sums per channel each touch's share of its path's conversions and value."""
    path_of_touch = np.repeat(np.arange(paths.n_paths), paths.lengths)
    n = paths.n_channels
    conversions = np.bincount(
        paths.touches, weights=touch_share * paths.conversions[path_of_touch], minlength=n
    )
    value = np.bincount(
        paths.touches, weights=touch_share * paths.value[path_of_touch], minlength=n
    )
    return Credit(conversions=conversions, value=value)


def _position(paths: Paths) -> tuple[np.ndarray, np.ndarray]:
    """Each touch's position in its path (0-based) and its path's length."""
    lengths = paths.lengths
    length_of_touch = np.repeat(lengths, lengths)
    position = np.arange(len(paths.touches)) - np.repeat(paths.offsets[:-1], lengths)
    return position, length_of_touch


def last_touch(paths: Paths) -> Credit:
    position, length = _position(paths)
    return _credit(paths, (position == length - 1).astype(np.float64))


def first_touch(paths: Paths) -> Credit:
    position, _ = _position(paths)
    return _credit(paths, (position == 0).astype(np.float64))


def linear(paths: Paths) -> Credit:
    _, length = _position(paths)
    return _credit(paths, 1.0 / length)


def position_based(paths: Paths, first_share: float = 0.4, last_share: float = 0.4) -> Credit:
    """U-shaped: `first_share` to the first touch, `last_share` to the last, the rest spread
    over the touches between; a path of two touches splits in the ratio of the two shares, a
    path of one touch takes all."""
    if first_share < 0 or last_share < 0 or first_share + last_share > 1:
        raise InsightsError(
            f"position_based: first_share ({first_share}) and last_share ({last_share}) must be "
            "non-negative and sum to at most 1"
        )
    position, length = _position(paths)
    share = np.zeros(len(position))
    single = length == 1
    share[single] = 1.0
    pair = length == 2
    ends = first_share + last_share
    share[pair & (position == 0)] = first_share / ends if ends else 0.5
    share[pair & (position == 1)] = last_share / ends if ends else 0.5
    longer = length >= 3
    share[longer & (position == 0)] = first_share
    share[longer & (position == length - 1)] = last_share
    middle = longer & (position > 0) & (position < length - 1)
    share[middle] = (1.0 - first_share - last_share) / (length[middle] - 2)
    return _credit(paths, share)


def time_decay(paths: Paths, half_life: float = 1.0, touch_age: np.ndarray | None = None) -> Credit:
    """A touch's weight halves every `half_life` before the conversion: by touches counted
    from the end of its path, or, with `touch_age` (aligned with `paths.touches`: time from
    the touch to its journey's end), by that age in the same unit as `half_life`."""
    if not half_life > 0:
        raise InsightsError(f"time_decay: half_life must be positive, got {half_life}")
    position, length = _position(paths)
    if touch_age is None:
        age = (length - 1 - position).astype(np.float64)
    else:
        age = np.asarray(touch_age, dtype=np.float64)
        if age.shape != position.shape:
            raise InsightsError(
                f"time_decay: touch_age has {age.size} values for {position.size} touches"
            )
    weight = np.exp2(-np.maximum(age, 0.0) / half_life)
    path_of_touch = np.repeat(np.arange(paths.n_paths), paths.lengths)
    total = np.bincount(path_of_touch, weights=weight, minlength=paths.n_paths)
    return _credit(paths, weight / total[path_of_touch])


def heuristic(paths: Paths, model: str, **options: float) -> Credit:
    """The heuristic model called `model` (one of `HEURISTICS`)."""
    functions = {
        "last_touch": last_touch,
        "first_touch": first_touch,
        "linear": linear,
        "position_based": position_based,
        "time_decay": time_decay,
    }
    if model not in functions:
        raise InsightsError(
            f"unknown heuristic model {model!r}; expected one of {list(HEURISTICS)}"
        )
    return functions[model](paths, **options)
