"""Attribution against ChannelAttribution (the standard Markov attribution package; GPL, so
a peer here only) on the same aggregated paths: heuristics must be equal, Markov conversions
within 2% for every channel holding at least 1% of conversions, and paths per CPU second.

ChannelAttribution's `markov_model` has no exact mode: it simulates journeys through the
fitted chain (`nsim_start` simulations, repeated until the results move less than
`conv_par`) and cuts each simulated path at `max_step` steps (default: the longest path of
the data, which biases the result against the chain's exact answer). We run it with
`--peer-nsim` simulations, `conv_par` 0.01 and `max_step` `--peer-max-step` (1,000: no cut
in practice), seeded; ours solves the chain exactly. Its default `max_step` is measured too
(`peer_default_markov_max_rel_diff`), for what a user of its defaults would see.

    python bench/attribution.py [--quick] [--csv PATHS [--sep ';'] [--path-sep '>']
        [--path-col C --conv-col C --value-col C --null-col C]] [--order 1]

Without --csv it simulates journeys (seeded) and writes them to a CSV in ChannelAttribution's
layout, read back through the same code path.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from importlib.metadata import version

import pyarrow as pa
import pyarrow.csv as pacsv

from openbid.insights.attribution import markov, paths_from_table, simulate_paths
from openbid.insights.attribution.heuristics import first_touch, last_touch, linear


def _peer():
    """ChannelAttribution, imported quietly (it prints a banner on import)."""
    with contextlib.redirect_stdout(io.StringIO()):
        import ChannelAttribution

    return ChannelAttribution


def _simulated_csv(journeys: int, channels: int, seed: int, directory: str) -> str:
    paths = simulate_paths(journeys, channels, seed=seed)
    table = paths.to_table(" > ").rename_columns(
        ["path", "total_conversions", "total_conversion_value", "total_null"]
    )
    path = os.path.join(directory, "paths.csv")
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(delimiter=";"))
    return path


def _cpu_wall(fn):
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--csv", default=None, help="aggregated paths (one row per distinct path)")
    parser.add_argument("--sep", default=";", help="CSV field separator")
    parser.add_argument("--path-sep", default=">", help="separator between a path's channels")
    parser.add_argument("--path-col", default="path")
    parser.add_argument("--conv-col", default="total_conversions")
    parser.add_argument("--value-col", default=None)
    parser.add_argument("--null-col", default=None)
    parser.add_argument("--order", type=int, default=1, help="Markov order (1 to 3)")
    parser.add_argument("--journeys", type=int, default=None, help="simulated journeys")
    parser.add_argument("--channels", type=int, default=10, help="simulated channels")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--peer-nsim", type=float, default=None, help="peer's nsim_start")
    parser.add_argument("--peer-max-step", type=int, default=1000, help="peer's max_step")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.csv is None:
            journeys = args.journeys or (60_000 if args.quick else 300_000)
            csv_path = _simulated_csv(journeys, args.channels, args.seed, tmp)
            value_col, null_col = "total_conversion_value", "total_null"
            source = f"simulated: {journeys:,} journeys, {args.channels} channels, seed {args.seed}"
        else:
            csv_path, value_col, null_col = args.csv, args.value_col, args.null_col
            source = args.csv
        table = pacsv.read_csv(
            csv_path,
            parse_options=pacsv.ParseOptions(delimiter=args.sep),
            convert_options=pacsv.ConvertOptions(column_types={args.path_col: pa.string()}),
        )

    def ours(rows=None):
        paths = paths_from_table(
            table if rows is None else table.slice(0, rows),
            path_col=args.path_col,
            conv_col=args.conv_col,
            value_col=value_col,
            null_col=null_col,
            path_sep=args.path_sep,
        )
        heuristics = {
            "first": first_touch(paths),
            "last": last_touch(paths),
            "linear": linear(paths),
        }
        return paths, heuristics, markov(paths, args.order)

    ours(50)  # first calls load kernels (pyarrow compute, SciPy): not the work measured
    (paths, heuristics, result), our_cpu_s, our_wall_s = _cpu_wall(ours)

    ca = _peer()
    frame = table.to_pandas()
    nsim = args.peer_nsim or (2e5 if args.quick else 1e6)
    peer_options = dict(
        var_value=value_col,
        var_null=null_col,
        order=args.order,
        sep=args.path_sep,
        ncore=1,
        seed=0,
        verbose=False,
        flg_pro=False,
    )

    def peer(max_step, rows=None):
        data = frame if rows is None else frame.head(rows)
        h = ca.heuristic_models(
            data,
            args.path_col,
            args.conv_col,
            var_value=value_col,
            sep=args.path_sep,
            flg_pro=False,
        )
        m = ca.markov_model(
            data,
            args.path_col,
            args.conv_col,
            nsim_start=nsim if rows is None else 1e4,
            conv_par=0.01,
            max_step=max_step,
            out_more=True,
            **peer_options,
        )
        return h, m

    peer(None, 50)
    (peer_h, peer_m), peer_cpu_s, peer_wall_s = _cpu_wall(lambda: peer(args.peer_max_step))
    _, peer_default = peer(None)

    def by_channel(frame_, column):
        return dict(
            zip(frame_["channel_name"].astype(str).str.strip(), frame_[column], strict=True)
        )

    total = paths.total_conversions
    peer_conv = by_channel(peer_m["result"], "total_conversions")
    peer_default_conv = by_channel(peer_default["result"], "total_conversions")
    effects = peer_m["removal_effects"]
    effect_col = (
        "removal_effects_conversion"
        if "removal_effects_conversion" in effects
        else "removal_effect"
    )
    peer_effect = by_channel(effects, effect_col)
    suffix = "_conversions" if "first_touch_conversions" in peer_h else ""
    peer_heur = {
        name: by_channel(peer_h, f"{name}_touch{suffix}") for name in ("first", "last", "linear")
    }

    rows, rel, rel_default = [], [], []
    heuristics_equal = True
    for i, channel in enumerate(paths.channels):
        ours_conv = float(result.conversions[i])
        theirs = float(peer_conv.get(channel, 0.0))
        share = ours_conv / total if total else 0.0
        diff = abs(ours_conv - theirs) / ours_conv if ours_conv else float(theirs != 0)
        if share >= 0.01:
            rel.append(diff)
            default = float(peer_default_conv.get(channel, 0.0))
            rel_default.append(abs(ours_conv - default) / ours_conv)
        for name, credit in heuristics.items():
            mine, peers = float(credit.conversions[i]), float(peer_heur[name].get(channel, 0.0))
            if abs(mine - peers) > 1e-6 * max(1.0, abs(mine)):
                heuristics_equal = False
        rows.append(
            (
                channel,
                share,
                ours_conv,
                theirs,
                diff,
                float(result.removal_effect[i]),
                float(peer_effect.get(channel, float("nan"))),
                float(heuristics["last"].conversions[i]),
                float(peer_heur["last"].get(channel, 0.0)),
            )
        )
    value_rel = None
    if value_col and "total_conversion_value" in peer_m["result"]:
        peer_value = by_channel(peer_m["result"], "total_conversion_value")
        diffs = [
            abs(float(result.value[i]) - float(peer_value.get(c, 0.0))) / float(result.value[i])
            for i, c in enumerate(paths.channels)
            if total and result.conversions[i] / total >= 0.01 and result.value[i] > 0
        ]
        value_rel = max(diffs) if diffs else 0.0

    print(
        f"paths: {source}; {paths.n_paths:,} distinct paths, {total:,.0f} conversions, "
        f"Markov order {args.order}, nulls {'yes' if paths.has_nulls else 'no'}"
    )
    print(
        f"peer: ChannelAttribution markov_model, nsim_start={nsim:.0f}, conv_par=0.01, "
        f"max_step={args.peer_max_step}, seed 0 (simulation; ours is exact)"
    )
    header = (
        "channel",
        "share",
        "markov ours",
        "markov peer",
        "rel diff",
        "RE ours",
        "RE peer",
        "last ours",
        "last peer",
    )
    print("  ".join(f"{h:>12}" for h in header))
    for row in rows:
        name, *numbers = row
        print(
            f"{name:>12}  "
            + "  ".join(
                f"{x:>12.4f}" if j in (0, 3, 4, 5) else f"{x:>12.2f}" for j, x in enumerate(numbers)
            )
        )
    ours_rate = paths.n_paths / our_cpu_s if our_cpu_s else float("inf")
    peer_rate = paths.n_paths / peer_cpu_s if peer_cpu_s else float("inf")
    print(f"{'work':<34}{'peer':>14}{'ours':>14}{'ratio':>10}")
    print(
        f"{'paths per CPU second':<34}{peer_rate:>14,.0f}{ours_rate:>14,.0f}{ours_rate / peer_rate:>10.1f}"
    )
    print(f"{'wall seconds':<34}{peer_wall_s:>14.2f}{our_wall_s:>14.2f}")
    print(f"{'Markov max rel diff':<34}{max(rel):>14.4f}{'':>14}{'':>10}")
    print(f"{'  the same, peer max_step default':<34}{max(rel_default):>14.4f}")
    summary = {
        "bench": "attribution",
        "source": source,
        "order": args.order,
        "paths": paths.n_paths,
        "channels": paths.n_channels,
        "conversions": total,
        "markov_max_rel_diff": round(max(rel), 5),
        "markov_value_max_rel_diff": None if value_rel is None else round(value_rel, 5),
        "peer_default_markov_max_rel_diff": round(max(rel_default), 5),
        "heuristics_equal": heuristics_equal,
        "paths_per_s": round(ours_rate, 1),
        "peer_paths_per_s": round(peer_rate, 1),
        "ratio": round(ours_rate / peer_rate, 2),
        "peer_nsim": nsim,
        "peer_max_step": args.peer_max_step,
        "peer_version": version("ChannelAttribution"),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
