"""The maintained-server rows of `bench/exchange.py`: waiting for them to serve, their table.

The servers themselves, with the adapters from their interfaces to our handlers, are in
`bench/maintained_adapter.py` (run as a process of its own, pinned like ours).
"""

from __future__ import annotations

import subprocess
import time
import urllib.request

MAINTAINED = ("granian", "uvicorn")
"""Maintained servers measured in front of the same exchange (`bench/maintained_adapter.py`)."""
WITHIN = 0.85
"""A maintained server within 15% of ours (theirs / ours >= 0.85) is to replace ours
(issue 13, section 3)."""


LABELS = {"granian": "engine=granian", "uvicorn": "uvicorn + httptools"}


def wait_healthy(base: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Waits until `base` answers /healthz (granian listens before its worker has opened
    the platform); a `RuntimeError` if the process exits or `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{base} did not become healthy (exit code {process.poll()})")
        time.sleep(0.1)


def maintained_table(
    ours: dict, ours_runs: list[dict], runs: dict[str, list[dict]], theirs_medians: dict[str, dict]
) -> dict:
    """Prints the rows of the same exchange behind maintained servers; returns their keys.

    Two ratios: peak auctions/s, and auctions per CPU second of the serving processes. On a
    quiet machine the exchange's core is all its own and they agree; on a shared one the
    core is contended, and a server of several threads (granian: a Rust runtime thread
    beside Python's) wins a larger share of it, which the first ratio counts as speed.
    The `cpu` column shows the share each had (1.00: the whole core)."""
    print(
        "the same exchange (platform, routes, fan-out client, event log) behind maintained "
        "servers (bench/maintained_adapter.py), one process, one worker, pinned to cpu 0; medians"
    )
    print(
        f"{'':<20} {'auctions/s':>10} {'vs ours':>7} {'cpu':>5} {'per cpu s':>9} {'vs ours':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'calls':>5}"
    )
    rows = {"openbid (ours)": ours}
    rows.update({LABELS[server]: theirs_medians[server] for server in runs})
    for label, figures in rows.items():
        print(
            f"{label:<20} {figures['auctions_per_s']:>10,.0f} "
            f"{figures['auctions_per_s'] / max(ours['auctions_per_s'], 1e-9):>7.2f} "
            f"{figures['cpu_share']:>5.2f} {figures['auctions_per_cpu_s']:>9,.0f} "
            f"{figures['auctions_per_cpu_s'] / max(ours['auctions_per_cpu_s'], 1e-9):>7.2f} "
            f"{figures['p50_ms']:>7.2f} {figures['p99_ms']:>7.2f} {figures['p999_ms']:>8.2f} "
            f"{figures['calls_per_auction']:>5.2f}"
        )
    keys: dict = {}
    within = []
    for server, server_runs in runs.items():
        theirs = theirs_medians[server]
        versus = theirs["auctions_per_s"] / max(ours["auctions_per_s"], 1e-9)
        versus_cpu = theirs["auctions_per_cpu_s"] / max(ours["auctions_per_cpu_s"], 1e-9)
        per_round = [
            (
                t["auctions_per_s"] / o["auctions_per_s"],
                t["auctions_per_cpu_s"] / o["auctions_per_cpu_s"],
            )
            for t, o in zip(server_runs, ours_runs, strict=True)
        ]
        print(
            f"{server} against ours in the same round (auctions/s, per cpu s): "
            + ", ".join(f"{r:.2f} {c:.2f}" for r, c in per_round)
            + f"; statuses at half peak {theirs['statuses']}; wrk: "
            + f"{sum(r['non_2xx'] for r in server_runs)} non-2xx, socket errors "
            + (", ".join(r["socket_errors"] for r in server_runs if r["socket_errors"]) or "none")
        )
        if min(versus, versus_cpu) >= WITHIN:
            within.append(server)
        keys.update(
            {
                f"{server}_auctions_per_s": round(theirs["auctions_per_s"]),
                f"{server}_ratio_vs_ours": round(versus, 3),
                f"{server}_auctions_per_cpu_s": round(theirs["auctions_per_cpu_s"]),
                f"{server}_cpu_ratio_vs_ours": round(versus_cpu, 3),
                f"{server}_cpu_share_at_peak": round(theirs["cpu_share"], 2),
                f"{server}_p50_added_ms": round(theirs["p50_ms"], 2),
                f"{server}_p99_added_ms": round(theirs["p99_ms"], 2),
                f"{server}_p999_added_ms": round(theirs["p999_ms"], 2),
                f"{server}_auctions_per_s_rounds": [
                    round(r["auctions_per_s"]) for r in server_runs
                ],
                f"{server}_ratio_vs_ours_rounds": [round(r, 3) for r, _ in per_round],
                f"{server}_cpu_ratio_vs_ours_rounds": [round(c, 3) for _, c in per_round],
            }
        )
    print(
        "within 15% of ours on both ratios (theirs / ours >= 0.85): "
        + (", ".join(within) if within else "none: ours stays")
    )
    keys["maintained_within_15pct"] = within
    return keys
