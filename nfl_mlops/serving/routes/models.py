"""The model registry: register an existing Hugging Face folder, list versions, show one model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from nfl_mlops.registry.store import RegistryError, VersionInfo, check_model_folder
from nfl_mlops.security import ImportRefused, import_folder, portable_path
from nfl_mlops.serving import schemas as sc
from nfl_mlops.serving.routes.deps import require_api_key, require_read_key, service, settings
from nfl_mlops.serving.service import PredictionService

router = APIRouter(tags=["models"], dependencies=[Depends(require_read_key)])


def version_out(v: VersionInfo) -> sc.ModelVersionOut:
    from nfl_mlops.modeling.runtimes import RECORD_FILE, read_record

    # the registry row holds the record too: a replica on another host may not have the version's folder
    local = Path(v.path) / RECORD_FILE
    runtimes = read_record(v.path) if local.exists() else (v.metrics.get("runtimes") or read_record(v.path))
    return sc.ModelVersionOut(
        runtimes=runtimes,
        artifact_uri=v.artifact_uri,
        model_id=v.model_name,
        version=v.version,
        status=v.status,
        aliases=v.aliases,
        path=v.path,
        model_type=v.model_type,
        metrics=v.metrics,
        params=v.params,
        lineage=v.lineage,
        description=v.description,
        reason=v.reason,
        created_at=v.created_at,
    )


@router.post(
    "/models/register",
    response_model=sc.ModelVersionOut,
    status_code=201,
    dependencies=[Depends(require_api_key)],
    summary="Register a model folder as a new version",
    responses={422: {"description": "Not a usable model folder"}},
)
async def register_model(
    body: sc.RegisterModelRequest, svc: PredictionService = Depends(service), cfg: Any = Depends(settings)
) -> sc.ModelVersionOut:
    """Copy an existing Hugging Face folder into the registry as the next version of `model_name`.

    Only folders below an import root (MLOPS_IMPORT_ROOTS, default MLOPS_HOME) are read, and none with a
    symbolic link in it; a refused path and a missing one get the same answer.

    Atomic: the version becomes visible only when its files are complete and its row is committed.
    """
    try:
        path = import_folder(body.model_path, cfg.import_root_paths)
    except ImportRefused as exc:
        raise HTTPException(422, str(exc)) from exc
    try:
        check_model_folder(path)
    except RegistryError as exc:
        raise HTTPException(422, str(exc)) from exc
    try:
        info = await asyncio.to_thread(
            svc.registry.register,
            body.model_name,
            path,
            metrics=body.metrics,
            params=body.params,
            lineage={"source": "POST /mlops/models/register", "source_path": portable_path(str(path))},
            description=body.description,
            model_type=body.model_type,
        )
    except RegistryError as exc:
        raise HTTPException(422, str(exc)) from exc
    return version_out(info)


@router.get("/models", response_model=list[sc.ModelVersionOut], summary="List registered versions")
async def list_models(svc: PredictionService = Depends(service)) -> list[sc.ModelVersionOut]:
    """Every registered version of every model, with metrics, lineage and aliases."""
    return [version_out(v) for v in await asyncio.to_thread(svc.registry.list_versions)]


@router.get(
    "/models/{model_id}",
    response_model=list[sc.ModelVersionOut],
    summary="Versions of one model",
    responses={404: {"description": "Unknown model"}},
)
async def get_model(model_id: str, svc: PredictionService = Depends(service)) -> list[sc.ModelVersionOut]:
    """The versions of one registered model, oldest first."""
    versions = await asyncio.to_thread(svc.registry.list_versions, model_id)
    if not versions:
        raise HTTPException(404, f"no model named {model_id!r}")
    return [version_out(v) for v in versions]


def resolve(svc: PredictionService, model_id: str, version: Any) -> VersionInfo:
    """A servable version, or 404 (unknown) / 409 (not servable)."""
    from nfl_mlops.registry.store import NotFoundError

    try:
        info = svc.registry.get(model_id, version)
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from exc
    if info.status != "ready":
        raise HTTPException(409, f"{info.model_name} v{info.version} is {info.status} and cannot be deployed")
    return info
