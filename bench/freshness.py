"""Freshness: how soon what happened serves traffic, and what swapping a model costs.

Each section measures its part and returns table rows and JSON keys; the last line is one
JSON object with every section's keys. Sections:

- `swap`: the exchange (`openbid up`, one worker pinned to cpu 0) follows the model store
  (`models.serve = ["shaping"]`, polled every 0.2 s); 8 DSPs (nginx) and the load run on
  cpu 1. Open-loop auctions at `--rate` for `--seconds`, once with no swap and once while
  `--swaps` new shaping versions (8 per-DSP learners each, 2^20 weights; `--quick`: 2^18
  weights, 3 versions, 5 s runs) are promoted through the real MLflow registry, one every
  seconds / (swaps + 1) (or as soon as the one before serves), each waited for until the
  server serves it. Latency is measured the same way in both runs and `/metrics` is read
  every 0.25 s in both. Every version is published to the store (as `challenger`) before
  the runs, and the promotions run in a process of their own, so a promotion during the
  run is the registry's small write plus the server's whole swap (fetch, checks, load).
  Keys: `swaps` (versions the server swapped in), `swap_failed_requests` (goal 0 over 10
  swaps), `swap_p99_ms`, `no_swap_p99_ms`.
- `event_to_serving`: the demo as a newcomer runs it (`openbid up --demo --speed 60`:
  the scheduler trains every 30 real seconds (`--loop-interval`; 10 with `--quick`, which
  stops at a model's second version), the exchange polls the store every second),
  for `--loop-seconds`, with `/metrics` read every 0.5 s. At each swap of a new version
  the model's age since its training window's end (`openbid_model_age_seconds`, market
  time) says when the newest event it learned from was logged. Keys: `event_to_serving_s`
  (real seconds from an event being logged to a model trained on it serving, in the worst
  case: an event logged just after a serving model's training window ended waits for the
  next version; the largest over the swaps after the first), `event_to_serving_newest_s`
  (the newest event trained on, median), `first_model_s` (from the start to the first
  model serving), `loop_swaps`, `loop_runs` (by status); goal: `event_to_serving_s` <= 120.

    python bench/freshness.py [--quick] [--only swap|event_to_serving] [--rate N]
        [--seconds S] [--swaps N] [--loop-seconds S] [--loop-rate N] [--loop-interval S]

Timings move with whatever else the machine runs: compare figures of one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
from exchange import API_KEY, PRICES, VENDOR_IDS, bodies_file
from upstreams import _taskset, _wait_listening, free_ports, start_dsps

from openbid.config import ModelsConfig
from openbid.domain import DemandPartner
from openbid.http.client import FanoutClient, UpstreamError
from openbid.ml import Featurizer, FTRLLogisticRegression
from openbid.shaping.features import shaping_spec
from openbid.shaping.model import save_shaping_model
from openbid.shaping.training import TrainedShaping
from openbid.stores.catalog import Catalog


@dataclass
class Section:
    """One section's result: table rows (work, baseline, ours, ratio) and JSON keys."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    keys: dict[str, object] = field(default_factory=dict)


# --- the swap section

PROMOTER = """
import sys
import msgspec
from openbid.config import ModelsConfig
from openbid.pipeline.registry import Registry

registry = Registry(msgspec.json.decode(sys.argv[1], type=ModelsConfig))
registry.versions("shaping")  # creates MLflow's database while the models are made
print("up", flush=True)
for line in sys.stdin:
    command, argument = line.split()
    if command == "register":  # and publish, as a training job's challenger would be
        info = registry.register("shaping", argument, alias="challenger")
        print("registered", info.version, flush=True)
    else:
        registry.promote("shaping", argument)
        print("promoted", argument, flush=True)
"""


def shaping_versions(root: Path, count: int, hash_bits: int, dsps: list[str]) -> list[Path]:
    """`count` shaping models of the same shape, each with its own random weights (seeded):
    every DSP's learner scores around its threshold, so some calls are filtered."""
    spec = shaping_spec("per_dsp", hash_bits=hash_bits)
    bias = Featurizer(spec).bias_index
    paths = []
    for version in range(count):
        rng = np.random.default_rng(version)
        learners = {}
        for dsp in dsps:
            coef = rng.normal(0.0, 0.8, spec.n_features).astype(np.float32)
            coef[bias] = -2.0
            state = np.stack([-coef, np.zeros_like(coef)], axis=1)
            learners[dsp] = FTRLLogisticRegression.from_state(
                state, alpha=1.0, beta=1.0, l1=0.0, l2=0.0
            )
        trained = TrainedShaping(
            layout="per_dsp",
            spec=spec,
            dsps=dsps,
            learners=learners,
            thresholds={dsp: 0.1 for dsp in dsps},
            target_kind="recall",
            target=0.99,
            exploration_share=0.01,
            window_start_micros=0,
            window_end_micros=int(time.time() * 1e6),
            rows=1,
        )
        paths.append(save_shaping_model(trained, root / f"shaping-{version}"))
    return paths


class Exchange:
    """`openbid up`, pinned to cpu 0, following the store's shaping pointer."""

    def __init__(self, root: Path, urls: list[str], store_url: str) -> None:
        self.port = free_ports(1)[0]
        catalog_url = f"sqlite:///{root}/catalog.db"
        catalog = Catalog(catalog_url)
        catalog.migrate()
        catalog.add_publisher("bench", "Bench publisher", api_key=API_KEY)
        for i, url in enumerate(urls):
            catalog.upsert_demand_partner(
                DemandPartner(
                    f"dsp{i}", url, seat=f"dsp{i}", vendor_id=VENDOR_IDS[i], timeout_ms=150
                )
            )
        catalog.close()
        env = dict(
            os.environ,
            OPENBID_SERVER__PORT=str(self.port),
            OPENBID_SERVER__MAX_IN_FLIGHT="100000",
            OPENBID_EVENTS__DIR=str(root / "events"),
            OPENBID_STORES__CATALOG_URL=catalog_url,
            OPENBID_EXCHANGE__TRACKER_SECRET="bench-secret-0123456789",
            OPENBID_EXCHANGE__PUBLIC_URL=f"http://127.0.0.1:{self.port}",
            OPENBID_LOGGING__LEVEL="warning",
            OPENBID_MODELS__SERVE='["shaping"]',
            OPENBID_MODELS__STORE_URL=store_url,
            OPENBID_MODELS__CACHE_DIR=str(root / "server-cache"),
            OPENBID_MODELS__POLL_INTERVAL_S="0.2",
            # the server never talks to the registry: give it one that is not there
            OPENBID_MODELS__TRACKING_URI="http://127.0.0.1:9",
        )
        self.process = subprocess.Popen(
            [*_taskset(0), sys.executable, "-m", "openbid.cli", "up"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        _wait_listening([self.port], timeout_s=120)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


_SWAPPED = re.compile(r'openbid_model_swaps_total\{purpose="shaping",result="(\w+)"\} (\S+)')
_SERVING = re.compile(r'openbid_model_info\{[^}]*purpose="shaping",version="(\w+)"\} 1')


class Monitor:
    """Reads the server's /metrics every 0.25 s (in every run alike): swaps and version."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.swaps: dict[str, float] = {}
        self.serving = ""
        self.failed_reads = 0

    def read(self) -> None:
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=10) as response:
            text = response.read().decode()
        self.swaps = {m.group(1): float(m.group(2)) for m in _SWAPPED.finditer(text)}
        found = _SERVING.search(text)
        self.serving = found.group(1) if found else ""

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.read)
            except OSError:  # a read slower than its timeout on a busy machine: the next one
                self.failed_reads += 1
            await asyncio.sleep(0.25)


async def open_loop_until(
    base: str, bodies: list[bytes], rate: float, done: Callable[[float], bool]
) -> dict:
    """Sends auctions at a fixed rate, whatever the replies, until `done(elapsed_s)`;
    latency percentiles in ms and failures (non-2xx statuses, errors, timeouts)."""
    client = FanoutClient()
    url = f"{base}/openrtb2/auction"
    headers = f"x-api-key: {API_KEY}\r\n".encode()
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    loop = asyncio.get_running_loop()

    async def one(body: bytes, measured: bool = True) -> None:
        started = time.perf_counter()
        try:
            reply = await client.post(url, body, timeout_s=2.0, headers=headers)
            key = str(reply.status)
        except UpstreamError as error:
            key = error.kind
        if measured:
            latencies.append((time.perf_counter() - started) * 1000)
            outcomes[key] = outcomes.get(key, 0) + 1

    warm = max(8, min(64, int(rate / 50)))
    await asyncio.gather(*(one(bodies[i % len(bodies)], False) for i in range(warm)))
    tasks = []
    gc.collect()
    gc.disable()
    try:
        start = loop.time()
        i = 0
        while not done(loop.time() - start):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(one(bodies[i % len(bodies)])))
            i += 1
        elapsed_s = loop.time() - start
        await asyncio.gather(*tasks)
    finally:
        gc.enable()
    client.close()
    p50, p99, p999 = np.percentile(latencies, [50, 99, 99.9])
    failed = sum(n for key, n in outcomes.items() if key not in ("200", "204"))
    return {
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "p999_ms": float(p999),
        "requests": len(latencies),
        "failed": failed,
        "outcomes": outcomes,
        "seconds": elapsed_s,
    }


async def no_swap_run(exchange: Exchange, bodies, rate: float, seconds: float) -> dict:
    monitor = Monitor(exchange.base)
    stop = asyncio.Event()
    watching = asyncio.create_task(monitor.run(stop))
    result = await open_loop_until(exchange.base, bodies, rate, lambda t: t >= seconds)
    stop.set()
    await watching
    return result


async def swap_run(
    exchange: Exchange, promoter: subprocess.Popen, versions: list[str], bodies, rate, seconds
) -> dict:
    """The same load while the promoter promotes `versions`, one every seconds / (n + 1),
    each waited for until the server serves it."""
    monitor = Monitor(exchange.base)
    stop = asyncio.Event()
    await asyncio.to_thread(monitor.read)
    swaps_before = monitor.swaps.get("ok", 0.0)
    watching = asyncio.create_task(monitor.run(stop))
    finished = asyncio.Event()
    swap_ms: list[float] = []

    async def promote_all() -> None:
        # promotion k starts at k * seconds / (n + 1), or as soon as the one before serves
        spacing_s = seconds / (len(versions) + 1)
        first = time.monotonic()
        for k, version in enumerate(versions, start=1):
            await asyncio.sleep(max(0.0, first + k * spacing_s - time.monotonic()))
            started = time.monotonic()
            promoter.stdin.write(f"promote {version}\n")
            promoter.stdin.flush()
            line = await asyncio.to_thread(promoter.stdout.readline)
            if not line.startswith("promoted"):
                raise RuntimeError(f"promotion of {version} failed: {line!r}")
            deadline = time.monotonic() + 60
            while monitor.serving != version:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not swap version {version} in")
                await asyncio.sleep(0.05)
            swap_ms.append((time.monotonic() - started) * 1000)
        finished.set()

    promoting = asyncio.create_task(promote_all())
    result = await open_loop_until(
        exchange.base, bodies, rate, lambda t: t >= seconds and finished.is_set()
    )
    await promoting
    stop.set()
    await watching
    await asyncio.to_thread(monitor.read)
    result["swaps"] = int(monitor.swaps.get("ok", 0.0) - swaps_before)
    result["refused"] = int(monitor.swaps.get("refused", 0.0))
    result["promote_to_serving_ms"] = float(np.median(swap_ms)) if swap_ms else 0.0
    return result


def _stage(what: str, since: float) -> None:
    print(f"[{time.monotonic() - since:6.1f} s] {what}", file=sys.stderr)


def swap_section(args: argparse.Namespace, root: Path) -> Section:
    began = time.monotonic()
    hash_bits = 18 if args.quick else 20
    dsps = [f"dsp{i}" for i in range(len(PRICES))]
    urls, dsp_kind, stop_dsps = start_dsps(PRICES, cpu=1)
    promoter = exchange = None
    settings = ModelsConfig(
        tracking_uri=f"sqlite:///{root}/mlflow.db",
        artifact_location=str(root / "mlflow-artifacts"),
        store_url=str(root / "store"),
        cache_dir=str(root / "registry-cache"),
        lock_file=str(root / "registry.lock"),
    )
    try:
        promoter = subprocess.Popen(
            [*_taskset(1), sys.executable, "-c", PROMOTER, msgspec.json.encode(settings).decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        exchange = Exchange(root, urls, settings.store_url)
        _, bodies = bodies_file(root, 2000)
        models = shaping_versions(root / "trained", args.swaps + 1, hash_bits, dsps)
        _stage(f"{len(models)} shaping models made", began)

        def ask(command: str) -> str:
            promoter.stdin.write(f"{command}\n")
            promoter.stdin.flush()
            answer = promoter.stdout.readline().split()
            if len(answer) != 2:
                raise RuntimeError(f"the registry process failed at {command!r}")
            return answer[1]

        if promoter.stdout.readline().strip() != "up":
            raise RuntimeError("the registry process did not start")
        versions = [ask(f"register {path}") for path in models]
        ask(f"promote {versions[0]}")
        _stage("registered in MLflow, the first promoted", began)
        exchange.wait_ready()
        monitor = Monitor(exchange.base)
        deadline = time.monotonic() + 60
        while monitor.serving != versions[0]:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not load the first version")
            time.sleep(0.2)
            monitor.read()
        _stage("the exchange serves it", began)
        quiet = asyncio.run(no_swap_run(exchange, bodies, args.rate, args.seconds))
        _stage("run without swaps done", began)
        swapping = asyncio.run(
            swap_run(exchange, promoter, versions[1:], bodies, args.rate, args.seconds)
        )
        _stage("run with swaps done", began)
    finally:
        if promoter is not None:
            promoter.kill()
            promoter.wait()
        if exchange is not None:
            exchange.stop()
        stop_dsps()
    size_mb = sum(f.stat().st_size for f in models[0].rglob("*.npy")) / 2**20
    section = Section()
    section.rows = [
        (
            f"auction p99 at {args.rate:.0f}/s (ms), no swap vs {args.swaps} swaps of "
            f"{size_mb:.0f} MiB",
            f"{quiet['p99_ms']:.2f}",
            f"{swapping['p99_ms']:.2f}",
            f"{swapping['p99_ms'] / max(quiet['p99_ms'], 1e-9):.2f}",
        ),
        (
            "auction p50 (ms)",
            f"{quiet['p50_ms']:.2f}",
            f"{swapping['p50_ms']:.2f}",
            f"{swapping['p50_ms'] / max(quiet['p50_ms'], 1e-9):.2f}",
        ),
        (
            "failed requests",
            str(quiet["failed"]),
            str(swapping["failed"]),
            "",
        ),
        (
            "requests (run seconds)",
            f"{quiet['requests']} ({quiet['seconds']:.1f})",
            f"{swapping['requests']} ({swapping['seconds']:.1f})",
            "",
        ),  # fmt: skip
        ("swaps served (refused)", "0", f"{swapping['swaps']} ({swapping['refused']})", ""),
        ("promotion to serving, median (ms)", "", f"{swapping['promote_to_serving_ms']:.0f}", ""),
    ]
    section.keys = {
        "swaps": swapping["swaps"],
        "swap_failed_requests": swapping["failed"],
        "swap_p99_ms": round(swapping["p99_ms"], 3),
        "no_swap_p99_ms": round(quiet["p99_ms"], 3),
        "no_swap_failed_requests": quiet["failed"],
        "promote_to_serving_ms": round(swapping["promote_to_serving_ms"], 1),
        "swap_model_mib": round(size_mb, 1),
        "swap_rate_per_s": args.rate,
    }
    print(f"DSPs: {dsp_kind}", file=sys.stderr)
    return section


# --- the event_to_serving section

_INFO = re.compile(r'openbid_model_info\{[^}]*purpose="(\w+)",version="(\w+)"[^}]*\} (\S+)')
_AGE = re.compile(
    r'openbid_model_age_seconds\{[^}]*purpose="(\w+)",since="training_end"[^}]*\} (\S+)'
)
DEMO_SPEED = 60.0


@dataclass
class Swap:
    """A version seen serving for the first time: when (real), and its training end."""

    purpose: str
    version: str
    seen_s: float
    """Real seconds since the demo started."""
    trained_end_s: float
    """When (real seconds since the start) the newest event it trained on was logged."""


def watch_loop(base: str, started: float, until: float, want_versions: int) -> list[Swap]:
    """Reads `/metrics` every 0.5 s until `until` (monotonic) or a purpose has served
    `want_versions` versions."""
    serving: dict[str, str] = {}
    swaps: list[Swap] = []

    def enough() -> bool:
        counts: dict[str, int] = {}
        for swap in swaps:
            counts[swap.purpose] = counts.get(swap.purpose, 0) + 1
        return max(counts.values(), default=0) >= want_versions

    while time.monotonic() < until and not enough():
        try:
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
                text = response.read().decode()
        except OSError:
            time.sleep(0.5)
            continue
        now = time.monotonic() - started
        ages = {m.group(1): float(m.group(2)) for m in _AGE.finditer(text)}
        for match in _INFO.finditer(text):
            purpose, version, value = match.group(1), match.group(2), float(match.group(3))
            if value > 0 and serving.get(purpose) != version and purpose in ages:
                serving[purpose] = version
                swaps.append(Swap(purpose, version, now, now - ages[purpose] / DEMO_SPEED))
        time.sleep(0.5)
    return swaps


def event_to_serving_section(args: argparse.Namespace, root: Path) -> Section:
    began = time.monotonic()
    port = free_ports(1)[0]
    work = root / "loop"
    work.mkdir()
    env = dict(
        os.environ,
        OPENBID_SCHEDULER__INTERVAL_S=str(args.loop_interval_s * DEMO_SPEED),
        OPENBID_SERVER__PORT=str(port),
        OPENBID_STORES__CATALOG_URL=f"sqlite:///{work}/catalog.db",
        OPENBID_LOGGING__LEVEL="info",
        OPENBID_LOGGING__FORMAT="json",
    )
    log_path = work / "stderr.log"
    with log_path.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "openbid.cli", "up", "--demo",
                "--speed", str(DEMO_SPEED), "--rate", str(args.loop_rate),
            ],
            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
        try:
            _wait_listening([port], timeout_s=120)
            started = began
            swaps = watch_loop(
                f"http://127.0.0.1:{port}",
                started,
                time.monotonic() + args.loop_seconds,
                want_versions=args.loop_versions,
            )
        finally:
            process.send_signal(2)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
    _stage(f"the demo ran {time.monotonic() - began:.0f} s, {len(swaps)} swaps", began)
    runs: dict[str, int] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if '"msg":"training job done"' in line or '"msg":"model refused by the gate' in line:
            status = "refused" if "refused" in line.split('"msg":')[1][:40] else ""
            status = status or json.loads(line).get("status", "?")
            runs[status] = runs.get(status, 0) + 1
        elif '"msg":"training job skipped"' in line:
            runs["skipped"] = runs.get("skipped", 0) + 1
    worst: list[float] = []
    newest: list[float] = []
    by_purpose: dict[str, list[Swap]] = {}
    for swap in swaps:
        by_purpose.setdefault(swap.purpose, []).append(swap)
    for versions in by_purpose.values():
        for before, swap in zip(versions, versions[1:], strict=False):
            worst.append(swap.seen_s - before.trained_end_s)
        newest += [swap.seen_s - swap.trained_end_s for swap in versions]
    first = min((swap.seen_s for swap in swaps), default=float("nan"))
    section = Section()
    worst_s = max(worst) if worst else float("nan")
    newest_s = float(np.median(newest)) if newest else float("nan")
    section.rows = [
        ("event logged -> a model trained on it serves, worst (s)", "goal 120", f"{worst_s:.1f}",
         f"{worst_s / 120:.2f}" if worst else ""),
        ("newest event trained on -> serving, median (s)", "", f"{newest_s:.1f}", ""),
        ("demo start -> first model serving (s)", "", f"{first:.1f}", ""),
        ("versions swapped in (by purpose)", "",
         ", ".join(f"{p} {len(v)}" for p, v in by_purpose.items()) or "0", ""),
        ("training runs (by status)", "", ", ".join(f"{k} {v}" for k, v in runs.items()), ""),
    ]  # fmt: skip
    section.keys = {
        "event_to_serving_s": round(worst_s, 1) if worst else None,
        "event_to_serving_newest_s": round(newest_s, 1) if newest else None,
        "first_model_s": round(first, 1) if swaps else None,
        "loop_swaps": len(swaps),
        "loop_runs": runs,
        "loop_interval_real_s": args.loop_interval_s,
        "loop_speed": DEMO_SPEED,
        "loop_rate_per_s": args.loop_rate,
    }
    return section


SECTIONS: dict[str, Callable[[argparse.Namespace, Path], Section]] = {
    "swap": swap_section,
    "event_to_serving": event_to_serving_section,
}
"""Sections run in this order."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append")
    parser.add_argument("--rate", type=float, default=None, help="auctions per second")
    parser.add_argument("--seconds", type=float, default=None, help="per run")
    parser.add_argument("--swaps", type=int, default=None, help="10; 3 with --quick")
    parser.add_argument("--loop-seconds", type=float, default=None, help="the demo's run")
    parser.add_argument("--loop-rate", type=float, default=None, help="the demo's requests/s")
    parser.add_argument(
        "--loop-interval",
        type=float,
        default=None,
        dest="loop_interval_s",
        help="real seconds between the demo's training runs (the demo's: 30)",
    )
    args = parser.parse_args()
    if args.loop_seconds is None:
        args.loop_seconds = 240.0 if args.quick else 420.0
    if args.loop_interval_s is None:
        args.loop_interval_s = 10.0 if args.quick else 30.0
    if args.loop_rate is None:
        args.loop_rate = 100.0 if args.quick else 200.0
    # quick: stop at a model's second version (one worst-case figure)
    args.loop_versions = 2 if args.quick else 1000
    if args.rate is None:
        args.rate = 300.0 if args.quick else 500.0
    if args.seconds is None:
        args.seconds = 5.0 if args.quick else 30.0
    if args.swaps is None:  # quick: fewer versions to make and register (~4 s each here)
        args.swaps = 3 if args.quick else 10
    root = Path(tempfile.mkdtemp(prefix="openbid-freshness-"))
    keys: dict[str, object] = {"bench": "freshness", "quick": args.quick}
    rows: list[tuple[str, str, str, str]] = []
    try:
        for name, section in SECTIONS.items():
            if args.only and name not in args.only:
                continue
            result = section(args, root)
            rows += result.rows
            keys.update(result.keys)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    header = ("work", "baseline", "ours", "ratio")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(json.dumps(keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
