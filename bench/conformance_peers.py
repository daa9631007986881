"""The raw-bytes conformance table against ours, granian and uvicorn serving the same app.

Evidence for issue 13, section 3 (keep our HTTP server, or switch to a maintained one?): the
table `tests/http/conformance.json` pins our server's behaviour, case by case (bytes in,
statuses and effects out). Here each case runs, with the same runner and the same app,
against three servers in this process, on uvloop:

- ours: `openbid.http.server.HttpServer` with the case's options;
- granian: `openbid.http.granian_server.GranianServer`, as `server.engine = "granian"` runs
  it (the options it has: body limit, in-flight cap, header and body timeouts, head size);
- uvicorn with httptools, in this process (`uvicorn.Server` on our socket), through an ASGI
  adapter like `bench/maintained_adapter.py`'s plus the body limit; its options mapped where
  it has them (`timeout_keep_alive` from `idle_timeout_s`, `limit_concurrency`).

Each cell says pass, or what the server did instead: the statuses it answered, and
`closed` when it closed the connection (`silent close` when it closed without a reply). A
security case (smuggling, bounds on heads, bodies, time, pipelining) that a peer fails is
graded: `refused` (it did not serve the request: a 4xx/5xx or a close, only another status
than ours) or `SERVED` (it ran the handler for a request ours refuses). The table's
baseline is ours (it should pass every case); the JSON line counts passes per server and
lists each peer's failed security cases.

    python bench/conformance_peers.py [--quick] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

import uvloop

from openbid.http.granian_server import GranianServer
from openbid.http.server import HttpServer, Request, Response


def _load_runner():
    """The tests' runner, by its path: a bench dependency (iab-tcf) installs a top-level
    package named `tests` that `import tests...` would find first."""
    path = Path(__file__).resolve().parent.parent / "tests" / "http" / "conformance_runner.py"
    spec = importlib.util.spec_from_file_location("conformance_runner", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_runner = _load_runner()
CASES, is_security_case, run_case = _runner.CASES, _runner.is_security_case, _runner.run_case

SERVERS = ("ours", "granian", "uvicorn")
QUICK_CASES = 24
"""`--quick`: every security case but the slow timing ones, and a few others (< 1 min)."""
GRANIAN_OPTIONS = (
    "max_body_bytes",
    "max_in_flight",
    "header_timeout_s",
    "request_timeout_s",
    "max_header_bytes",
)


async def start_ours(app, options):
    server = HttpServer(app, **options)
    port = await server.start("127.0.0.1", 0)

    def queued() -> int:
        return sum(len(c._queue) for c in server._state.connections)

    return port, lambda: server.stop(grace_s=0.5), queued


async def start_granian(app, options):
    server = GranianServer(app, **{k: v for k, v in options.items() if k in GRANIAN_OPTIONS})
    port = await server.start("127.0.0.1", 0)
    return port, lambda: server.stop(grace_s=0.5), None


class AsgiAdapter:
    """The conformance app as ASGI 3, with the body limit ours applies (413)."""

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _send(send, Response(413, b'{"error":"request body too large"}'))
                return
            parts.append(chunk)
            if not message.get("more_body"):
                break
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        client = scope.get("client")
        request = Request(
            scope["method"],
            scope["path"],
            scope["query_string"].decode("latin-1"),
            headers,
            b"".join(parts),
            client[0] if client else "",
        )
        response = await self.app(request)
        await _send(send, response)


async def _send(send, response: Response) -> None:
    extra = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in response.headers]
    if response.status in (204, 304):
        await send({"type": "http.response.start", "status": response.status, "headers": extra})
        await send({"type": "http.response.body", "body": b""})
        return
    head = [
        (b"content-type", response.content_type.encode("latin-1")),
        (b"content-length", b"%d" % len(response.body)),
        *extra,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": head})
    await send({"type": "http.response.body", "body": response.body})


async def start_uvicorn(app, options):
    import socket

    import uvicorn

    sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
    config = uvicorn.Config(
        AsgiAdapter(app, options.get("max_body_bytes", 65536)),
        loop="none",
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        log_level="critical",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=int(options.get("idle_timeout_s", 75) + 0.999),
        limit_concurrency=options.get("max_in_flight"),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)

    async def stop() -> None:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 5)
        except TimeoutError:
            server.force_exit = True
            await asyncio.gather(task, return_exceptions=True)
        sock.close()

    return sock.getsockname()[1], stop, None


STARTS = {"ours": start_ours, "granian": start_granian, "uvicorn": start_uvicorn}


def cell(case: dict, outcome: dict) -> str:
    if not outcome["failures"]:
        return "pass"
    statuses = outcome["statuses"]
    if not statuses and outcome["closed"]:
        what = "silent close"
    else:
        what = "/".join(map(str, statuses)) or "no reply"
        what += " closed" if outcome["closed"] else " open"
    expected = case.get("statuses") or case.get("first_statuses") or []
    if is_security_case(case) and expected and expected[0] >= 400:
        served = bool(statuses) and statuses[0] < 400
        return f"{'SERVED' if served else 'refused'}: {what}"
    return what


async def run_all(cases: list[dict], close_wait_s: float) -> dict[str, dict[str, dict]]:
    results: dict[str, dict[str, dict]] = {}
    for case in cases:
        results[case["name"]] = {}
        for server in SERVERS:
            results[case["name"]][server] = await run_case(case, STARTS[server], close_wait_s)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated case names")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # granian logs a handler's error: not ours
    cases = CASES
    if args.only:
        names = set(args.only.split(","))
        cases = [case for case in CASES if case["name"] in names]
    elif args.quick:
        fast = [case for case in CASES if not _slow(case)]
        cases = [case for case in fast if is_security_case(case)][:QUICK_CASES]
    started = time.monotonic()
    # A connection a case expects closed is waited for this long: one a server keeps open
    # costs it, and the table's slowest timers close within 1 s.
    results = uvloop.run(run_all(cases, 1.5 if args.quick else 3.0))
    seconds = time.monotonic() - started
    width = max(len(case["name"]) for case in cases)
    print(
        f"conformance table (tests/http/conformance.json): {len(cases)} of {len(CASES)} cases, "
        f"each against ours, granian (server.engine) and uvicorn + httptools, same app; "
        f"{seconds:.0f} s"
    )
    print(f"{'case':<{width}} {'sec':>3}  {'ours':<16} {'granian':<28} {'uvicorn':<28}")
    for case in cases:
        row = results[case["name"]]
        print(
            f"{case['name']:<{width}} {'*' if is_security_case(case) else '':>3}  "
            f"{cell(case, row['ours']):<16} {cell(case, row['granian']):<28} "
            f"{cell(case, row['uvicorn']):<28}"
        )
    print("sec *: a security case (smuggling, bounds on heads, bodies, time, pipelining)")
    summary: dict = {"bench": "conformance_peers", "cases": len(cases)}
    security = [case for case in cases if is_security_case(case)]
    summary["security_cases"] = len(security)
    for server in SERVERS:
        outcomes = {name: row[server] for name, row in results.items()}
        summary[f"{server}_pass"] = sum(not o["failures"] for o in outcomes.values())
    for server in SERVERS:
        failed = [c for c in security if results[c["name"]][server]["failures"]]
        summary[f"{server}_security_failed"] = [c["name"] for c in failed]
        summary[f"{server}_security_served"] = [
            c["name"] for c in failed if cell(c, results[c["name"]][server]).startswith("SERVED")
        ]
    summary["seconds"] = round(seconds, 1)
    print(json.dumps(summary))


def _slow(case: dict) -> bool:
    """Cases that wait out a timer or send slowly (a second or more each)."""
    pauses = sum(step.get("pause_s", 0) * step.get("times", 1) for step in case["steps"])
    return pauses >= 0.5 or "timeout" in case["covers"] or "idle" in case["name"]


if __name__ == "__main__":
    main()
