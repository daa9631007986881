"""Rows for the demo's live panel (`openbid up --demo`): each shaping arm of this process,
the model serving it, its share, the calls it scored, their expected / actual bids and the
alerts firing; then the last alerts raised. Plain strings: the panel lays them out.

>>> PANEL_COLUMNS[:3]
('arm', 'model', 'share')
"""

from __future__ import annotations

from typing import Any

PANEL_COLUMNS = ("arm", "model", "share", "calls scored", "expected / actual", "alerts firing")


def panel_rows(platform: Any) -> list[tuple[str, ...]]:
    """One row per arm the live calibration has seen (`control` first)."""
    watch = getattr(platform, "watch", None)
    if watch is None:
        return []
    shares: dict[str, float] = {}
    arm_sync = getattr(platform, "arm_sync", None)
    if arm_sync is not None and arm_sync.arms.get("shaping") is not None:
        live_arms = arm_sync.arms["shaping"]
        for arm in live_arms.arms:
            if arm.name in arm_sync.serving["shaping"]:
                shares[arm.name] = arm.share
        shares["control"] = 1.0 - sum(shares.values())
    firing: dict[str, int] = {}
    for key in watch.alerter.firing:
        firing[key[2]] = firing.get(key[2], 0) + 1
    rows = []
    books = sorted(watch.live.books.values(), key=lambda b: (b.arm != "control", b.arm))
    for book in books:
        ratio = book.expected / book.actual if book.actual else float("inf")
        share = shares.get(book.arm)
        rows.append(
            (
                book.arm,
                book.model,
                "-" if share is None else f"{share:.0%}",
                f"{book.predictions:,}",
                f"{ratio:.3f}" if book.actual else "-",
                str(firing.get(book.arm, 0)),
            )
        )
    return rows


def recent_alerts(platform: Any, count: int = 3) -> list[str]:
    """The last alerts raised in this process, newest last, one line each."""
    watch = getattr(platform, "watch", None)
    if watch is None:
        return []
    return [f"{alert.at} {alert.text}" for alert in watch.alerter.raised[-count:]]
