"""The shaper as its own small HTTP service, for deployments that run it in a separate
container (as the AWS guidance does), and the exchange-side client.

The service wraps a `ModelShaper` (same model directory, thresholds, exploration, QPS caps,
fail-open) behind msgspec JSON on the lean `openbid.http.server`:

| request | answer |
| --- | --- |
| `POST /shape` `{"features": {...}, "dsps": [...]}` | `{"model_version", "decisions": [{"dsp", "send", "score", "explored", "send_probability"}]}` |
| `POST /reload` `{"path": "..."}`, `Authorization: Bearer <reload token>` | 200 `{"model_version"}`; 422 with the reason (the old model keeps serving); 401 without the token; 403 for a path outside the model store, or when reloading is off (no token or store given) |
| `GET /healthz` | `{"model_version", "failing_open"}` |
| `GET /metrics` | Prometheus text |

A reload names a model directory inside the service's model store (relative to it, or
absolute), never anywhere else: the resolved path (symbolic links followed) must lie in the
store, so a caller cannot make the service read arbitrary files.

`RemoteShaper.decide_async` calls it with a deadline and fails open (every DSP called) when
the service is slow, down or answers nonsense: shaping may cost callouts, never auctions.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from openbid.http.server import HttpServer, Request, Response, Router
from openbid.obs import METRICS_CONTENT_TYPE, metrics_payload
from openbid.shaping.base import ShapingDecision
from openbid.shaping.errors import ShapingModelError
from openbid.shaping.serving import ModelShaper

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
MIN_RELOAD_TOKEN_BYTES = 16


class ShapeRequest(msgspec.Struct, forbid_unknown_fields=True):
    features: dict[str, str]
    dsps: list[str]


class ShapeResponse(msgspec.Struct):
    model_version: str
    decisions: list[ShapingDecision]


class ReloadRequest(msgspec.Struct, forbid_unknown_fields=True):
    path: str


_shape_decoder = msgspec.json.Decoder(ShapeRequest)
_reload_decoder = msgspec.json.Decoder(ReloadRequest)
_response_decoder = msgspec.json.Decoder(ShapeResponse)
_encoder = msgspec.json.Encoder()


def _error(status: int, message: str) -> Response:
    return Response(status, _encoder.encode({"error": message}))


class ShapingService:
    """Serves one `ModelShaper` over HTTP until `stop()`.

    `/reload` is on only with both a `reload_token` (at least 16 bytes, sent as
    `Authorization: Bearer <token>`) and a `model_store`, the directory it may load from.
    """

    def __init__(
        self,
        shaper: ModelShaper,
        *,
        model_store: str | Path | None = None,
        reload_token: str = "",
        max_in_flight: int = 2048,
    ) -> None:
        if reload_token and len(reload_token.encode()) < MIN_RELOAD_TOKEN_BYTES:
            raise ValueError(f"reload token must be at least {MIN_RELOAD_TOKEN_BYTES} bytes")
        self.shaper = shaper
        self.model_store = Path(model_store).resolve() if model_store is not None else None
        self._reload_token = reload_token.encode()
        router = Router()
        router.add("POST", "/shape", self._shape)
        router.add("POST", "/reload", self._reload)
        router.add("GET", "/healthz", self._health)
        router.add("GET", "/metrics", self._metrics)
        self._server = HttpServer(
            router, max_body_bytes=MAX_BODY_BYTES, max_in_flight=max_in_flight
        )

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Starts listening; returns the bound port."""
        return await self._server.start(host, port)

    async def stop(self) -> None:
        await self._server.stop()

    async def _shape(self, request: Request) -> Response:
        try:
            body = _shape_decoder.decode(request.body)
        except msgspec.ValidationError as exc:
            return _error(400, f"invalid shape request: {exc}")
        except msgspec.DecodeError as exc:
            return _error(400, f"shape request is not JSON: {exc}")
        decisions = self.shaper.decide(body.features, body.dsps)
        return Response(200, _encoder.encode(ShapeResponse(self.shaper.model_version, decisions)))

    async def _reload(self, request: Request) -> Response:
        if not self._reload_token or self.model_store is None:
            return _error(403, "reload is off: the service was started without a token and store")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self._reload_token
        ):
            log.warning(
                "shaping reload refused: bad or missing token", extra={"client": request.client}
            )
            return Response(
                401,
                _encoder.encode({"error": "reload needs Authorization: Bearer <reload token>"}),
                headers=[("www-authenticate", 'Bearer realm="shaping"')],
            )
        try:
            body = _reload_decoder.decode(request.body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _error(400, f"invalid reload request: {exc}")
        path = model_in_store(self.model_store, body.path)
        if path is None:
            return _error(403, "path must name a model directory inside the model store")
        try:
            version = self.shaper.load(path)
        except ShapingModelError as exc:
            return _error(422, f"{exc}; still serving {self.shaper.model_version or 'no model'}")
        return Response(200, _encoder.encode({"model_version": version}))

    async def _health(self, request: Request) -> Response:
        return Response(
            200,
            _encoder.encode(
                {
                    "model_version": self.shaper.model_version,
                    "failing_open": self.shaper.failing_open,
                }
            ),
        )

    async def _metrics(self, request: Request) -> Response:
        return Response(200, metrics_payload(), METRICS_CONTENT_TYPE)


def model_in_store(store: Path, name: str) -> Path | None:
    """`name` (relative to `store`, or absolute) resolved, if it lies inside `store` (links
    followed: one pointing out of the store does not count), else None.

    >>> store = Path("/srv/models")
    >>> model_in_store(store, "shaping-v2"), model_in_store(store, "../../etc")
    (PosixPath('/srv/models/shaping-v2'), None)
    """
    if not name or "\x00" in name:
        return None
    resolved = (store / name).resolve()
    if resolved == store or not resolved.is_relative_to(store):
        return None
    return resolved


class RemoteShaper:
    """The exchange's side of a `ShapingService`: same decisions, over HTTP, fail-open.

    `client` is an `openbid.http.client.FanoutClient` (or anything with its
    `post(url, body, timeout_s=...)` coroutine returning `.status` and `.body`).
    """

    def __init__(self, url: str, client, *, timeout_s: float = 0.005) -> None:
        self.url = url.rstrip("/") + "/shape"
        self.client = client
        self.timeout_s = timeout_s
        self.model_version = ""
        self.failures = 0

    async def decide_async(
        self, features: Mapping[str, str], dsps: Sequence[str]
    ) -> list[ShapingDecision]:
        body = _encoder.encode(ShapeRequest(dict(features), list(dsps)))
        try:
            reply = await self.client.post(self.url, body, timeout_s=self.timeout_s)
            if reply.status != 200:
                raise ValueError(f"HTTP {reply.status}")
            answer = _response_decoder.decode(reply.body)
            if [d.dsp for d in answer.decisions] != list(dsps):
                raise ValueError("decisions do not match the DSPs asked about")
        except Exception as exc:  # any failure of the service costs callouts, not auctions
            self.failures += 1
            if self.failures & (self.failures - 1) == 0:  # log 1st, 2nd, 4th, ...
                log.warning(
                    "shaping service unavailable: calling every DSP",
                    extra={"url": self.url, "error": str(exc), "failures": self.failures},
                )
            return [ShapingDecision(dsp, True) for dsp in dsps]
        self.model_version = answer.model_version
        return answer.decisions

    def decide(self, features: Mapping[str, str], dsps: Sequence[str]) -> list[ShapingDecision]:
        """The service cannot be asked without awaiting: every DSP called (fail open)."""
        return [ShapingDecision(dsp, True) for dsp in dsps]

    def observe(self, decision: ShapingDecision, bid: bool) -> None:
        """Outcomes are not sent to the service (it learns from the event log)."""
