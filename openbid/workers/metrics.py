"""Metrics with several workers: each worker keeps its own registry (the hot path's counters
are plain numbers, see `openbid.obs.LoopMetric`), and whichever worker answers `/metrics`
gathers every worker's, each sample labelled `worker="<index>"`.

A worker also serves its own metrics on a private Unix socket, `worker-<index>.sock` in the
run directory the supervisor made; a sibling reads it there. A counter of a restarted
worker starts again at 0 under its own label, which Prometheus reads as the counter reset it
is (a sum over workers would look like a drop). A worker that does not answer within
`GATHER_TIMEOUT_S` (restarting) is left out of that scrape and counted in
`openbid_workers_metrics_missing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from openbid.http.server import HttpServer, Request, Response, Router
from openbid.obs import METRICS_CONTENT_TYPE, metrics_payload

log = logging.getLogger(__name__)

GATHER_TIMEOUT_S = 2.0
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
SOCKET_PREFIX = "worker-"


def socket_path(run_dir: Path, index: int) -> Path:
    return run_dir / f"{SOCKET_PREFIX}{index}.sock"


def _index_of(path: Path) -> str:
    return path.stem[len(SOCKET_PREFIX) :]


async def fetch_payload(path: Path, timeout_s: float = GATHER_TIMEOUT_S) -> bytes | None:
    """One worker's own metrics (Prometheus text) from its private socket, or None."""

    async def fetch() -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=2**20)
        try:
            writer.write(b"GET /metrics/own HTTP/1.1\r\nhost: worker\r\nconnection: close\r\n\r\n")
            data = await reader.read(MAX_PAYLOAD_BYTES)
            while chunk := await reader.read(MAX_PAYLOAD_BYTES):
                data += chunk
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(head[:40].decode(errors="replace"))
        return body

    try:
        return await asyncio.wait_for(fetch(), timeout_s)
    except (OSError, ConnectionError, TimeoutError) as exc:
        log.debug("worker metrics unavailable", extra={"socket": str(path), "error": str(exc)})
        return None


def labelled(families: Iterable[Metric], worker: str) -> list[Metric]:
    """`families` with `worker=<worker>` added to every sample."""
    out = []
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        copy.samples = [
            sample._replace(labels={**sample.labels, "worker": worker}) for sample in family.samples
        ]
        out.append(copy)
    return out


def merge(per_worker: dict[str, Iterable[Metric]]) -> list[Metric]:
    """One family per name, holding every worker's samples, labelled by worker."""
    merged: dict[str, Metric] = {}
    for worker, families in sorted(per_worker.items()):
        for family in labelled(families, worker):
            target = merged.get(family.name)
            if target is None:
                merged[family.name] = family
            else:
                target.samples.extend(family.samples)
    return list(merged.values())


def totals(per_worker: dict[str, Iterable[Metric]]) -> list[Metric]:
    """One family per name, samples added up over workers (a gauge: the largest value), as
    one process would have counted them: what the demo's summary reads.

    >>> from prometheus_client.core import CounterMetricFamily
    >>> def calls(n):
    ...     family = CounterMetricFamily("calls", "", labels=["dsp"])
    ...     family.add_metric(["a"], n)
    ...     return [family]
    >>> [(s.name, s.value) for s in totals({"0": calls(2), "1": calls(3)})[0].samples]
    [('calls_total', 5.0)]
    """
    values: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
    families: dict[str, Metric] = {}
    for worker_families in per_worker.values():
        for family in worker_families:
            families.setdefault(family.name, family)
            for sample in family.samples:
                key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                if family.type == "gauge":
                    values[key] = max(values.get(key, sample.value), sample.value)
                else:
                    values[key] = values.get(key, 0.0) + sample.value
    out: dict[str, Metric] = {}
    for (family_name, sample_name, labels), value in values.items():
        family = families[family_name]
        target = out.get(family_name)
        if target is None:
            target = out[family_name] = Metric(
                family.name, family.documentation, family.type, family.unit
            )
        target.add_sample(sample_name, dict(labels), value)
    return list(out.values())


def _parse(payload: bytes) -> list[Metric]:
    return list(text_string_to_metric_families(payload.decode("utf-8", errors="replace")))


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> list[Metric]:
        return self.families


MISSING_HELP = "# HELP openbid_workers_metrics_missing Workers whose metrics this scrape lacks\n"


class WorkerMetrics:
    """One worker's side: its private socket, and the gathering `/metrics` handler."""

    def __init__(self, index: int, run_dir: Path) -> None:
        self.index = index
        self.run_dir = run_dir
        self._server: HttpServer | None = None

    async def start(self) -> None:
        path = socket_path(self.run_dir, self.index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # the socket of this worker's crashed predecessor
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.listen(64)
        router = Router()
        router.add("GET", "/metrics/own", self.own, safe=True)
        self._server = HttpServer(router)
        await self._server.start(sock=listener)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace_s=1.0)
        with contextlib.suppress(FileNotFoundError):
            socket_path(self.run_dir, self.index).unlink()

    async def own(self, request: Request) -> Response:
        return Response(200, metrics_payload(), METRICS_CONTENT_TYPE)

    async def gathered(self, request: Request) -> Response:
        """Every worker's metrics, labelled by worker (this one's read in process)."""
        own = str(self.index)
        # This worker's own metrics go through the text format too, as its siblings' do:
        # the same families come out of both (a counter's `_created`, for one).
        per_worker: dict[str, Any] = {own: _parse(metrics_payload())}
        paths = [
            path
            for path in sorted(self.run_dir.glob(f"{SOCKET_PREFIX}*.sock"))
            if _index_of(path) != own
        ]
        payloads = await asyncio.gather(*(fetch_payload(path) for path in paths))
        missing = 0
        for path, payload in zip(paths, payloads, strict=True):
            if payload is None:
                missing += 1
            else:
                per_worker[_index_of(path)] = _parse(payload)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(merge(per_worker)))  # type: ignore[arg-type]
        body = generate_latest(registry)
        body += MISSING_HELP.encode()
        body += b"# TYPE openbid_workers_metrics_missing gauge\n"
        body += f"openbid_workers_metrics_missing {missing}\n".encode()
        return Response(200, body, METRICS_CONTENT_TYPE)


class WorkerTotals:
    """A collector for the supervisor's registry: every worker's metrics added up, from a
    snapshot `refresh()` takes (so that reading it, as the demo's summary does many times a
    second, costs no I/O)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._families: list[Metric] = []

    async def refresh(self) -> None:
        paths = sorted(self.run_dir.glob(f"{SOCKET_PREFIX}*.sock"))
        payloads = await asyncio.gather(*(fetch_payload(path) for path in paths))
        per_worker = {
            _index_of(path): _parse(payload)
            for path, payload in zip(paths, payloads, strict=True)
            if payload is not None
        }
        self._families = totals(per_worker)

    async def refresh_forever(self, interval_s: float = 1.0) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(interval_s)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> list[Metric]:
        return self._families
