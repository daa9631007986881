"""Model versions, read from the registry's tracking store (MLflow, imported here only, on
first use: the console runs in a process of its own, never a serving one). Admins only:
models are the exchange's own business."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Path

from openbid.console.api.schemas import Model
from openbid.console.api.tenancy import Admin, Ctx
from openbid.console.errors import ApiError, not_found
from openbid.pipeline.modelstore import PURPOSES

router = APIRouter()
Purpose = Annotated[Literal[tuple(PURPOSES)], Path(description="What the model is for")]  # type: ignore[valid-type]


class ModelVersion(Model):
    purpose: str
    version: str
    aliases: list[str]
    registered_at: str
    run_id: str
    model_version: str
    spec_hash: str
    trained_end_micros: int
    rows: int
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


def _registry(ctx: Ctx):  # type: ignore[no-untyped-def]
    from openbid.pipeline.registry import Registry

    registry = getattr(ctx, "_registry", None)
    if registry is None:
        registry = Registry(ctx.config.models)
        ctx._registry = registry  # type: ignore[attr-defined]
    return registry


def _registry_errors(exc: Exception) -> ApiError:
    from openbid.pipeline.registry import RegistryUnavailable

    if isinstance(exc, RegistryUnavailable):
        return ApiError(503, "", str(exc))
    return ApiError(404, "purpose", str(exc))


@router.get("/models/{purpose}/versions", response_model=list[ModelVersion], tags=["models"])
def list_versions(purpose: Purpose, who: Admin, ctx: Ctx) -> list[dict]:
    from openbid.pipeline.registry import RegistryError

    try:
        return [msgspec.to_builtins(v) for v in _registry(ctx).versions(purpose)]
    except RegistryError as exc:
        raise _registry_errors(exc) from None


@router.get("/models/{purpose}/versions/{version}", response_model=ModelVersion, tags=["models"])
def get_version(
    purpose: Purpose,
    version: Annotated[str, Path(pattern=r"^([0-9]{1,9}|@[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")],
    who: Admin,
    ctx: Ctx,
) -> dict:
    from openbid.pipeline.registry import RegistryError, RegistryUnavailable

    try:
        return msgspec.to_builtins(_registry(ctx).version(purpose, version))
    except RegistryUnavailable as exc:
        raise ApiError(503, "", str(exc)) from None
    except RegistryError:
        raise not_found("version", f"{purpose} model version", version) from None
