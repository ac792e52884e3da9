"""Deployments (rollouts): start one with a strategy, list them, show one, roll one back."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from nfl_mlops.registry.store import RegistryError
from nfl_mlops.rollout import actions
from nfl_mlops.rollout import state as rollouts
from nfl_mlops.rollout.records import deployment_out
from nfl_mlops.serving import schemas as sc
from nfl_mlops.serving.routes.deps import require_api_key, require_read_key, service, settings
from nfl_mlops.serving.routes.models import resolve
from nfl_mlops.serving.service import PredictionService

router = APIRouter(tags=["deployments"], dependencies=[Depends(require_read_key)])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown model, version or deployment"},
    409: {
        "description": "Conflicts with the current deployment (in progress, not active, nothing to "
        "compare with)"
    },
    422: {"description": "Invalid request, or the version failed its smoke test"},
}


async def start(
    svc: PredictionService,
    cfg: Any,
    model_id: str,
    version: int,
    strategy: str,
    environment: str,
    params: Any,
    reason: str,
    test_name: str | None = None,
    version_a: int | None = None,
) -> rollouts.RolloutInfo:
    """Check the version is servable (warmed in this process when this API serves the model), start the
    rollout (`rollout.actions`), follow it at once."""
    served_here = model_id == svc.model_name and environment == svc.environment
    loader = (lambda info: svc.ensure_loaded(info.version)) if served_here else actions.load_model
    try:
        await asyncio.to_thread(actions.check_servable, svc.registry, model_id, version, loader)
    except actions.NotServable as exc:
        raise HTTPException(422, str(exc)) from exc
    try:
        r = await asyncio.to_thread(
            actions.deploy,
            svc.registry,
            model_id,
            version,
            strategy,
            environment,
            params=params,
            reason=reason,
            driver="api",
            test_name=test_name,
            version_a=version_a,
            db_url=cfg.db_url,
        )
    except (rollouts.RolloutError, RegistryError) as exc:
        raise HTTPException(409, str(exc)) from exc
    if served_here:  # this replica serves it now; with no other live replica the switch is confirmed at once
        await svc.refresh()
        r = (await asyncio.to_thread(actions.settle, svc.registry, r.id, cfg.db_url)).rollout
    return r


@router.post(
    "/deployments",
    response_model=sc.DeploymentOut,
    status_code=201,
    responses=ERRORS,
    dependencies=[Depends(require_api_key)],
    summary="Deploy a version with a strategy",
)
async def deploy(
    body: sc.DeployRequest, svc: PredictionService = Depends(service), cfg: Any = Depends(settings)
) -> sc.DeploymentOut:
    """Roll out a registered version.

    blue_green switches all traffic at once (the previous version stays warm). canary, shadow and
    ab_test start at their first step; this API's replicas then advance them as their gates decide
    (a failed gate rolls back by itself), and end an A/B test when its duration is over.
    """
    info = await asyncio.to_thread(resolve, svc, body.model_id, body.model_version)
    test_name = body.test_name or (
        f"{info.model_name}-v{info.version}-{body.environment}"[:200] if body.strategy == "ab_test" else None
    )
    r = await start(
        svc,
        cfg,
        info.model_name,
        info.version,
        body.strategy,
        body.environment,
        body.strategy_params(),
        body.reason or "POST /mlops/deployments",
        test_name,
    )
    return deployment_out(r)


@router.get("/deployments", response_model=list[sc.DeploymentOut], summary="List deployments")
async def list_deployments(
    cfg: Any = Depends(settings),
    model_id: str | None = Query(None, max_length=200, description="Only this model."),
    limit: int = Query(100, ge=1, le=1000, description="Newest first, at most this many."),
) -> list[sc.DeploymentOut]:
    """Rollouts, newest first, with their traffic, progress and history."""
    found = await asyncio.to_thread(rollouts.list_rollouts, model_id, cfg.db_url, limit)
    return [deployment_out(r) for r in found]


@router.get(
    "/deployments/{deployment_id}",
    response_model=sc.DeploymentOut,
    summary="One deployment",
    responses={404: {"description": "Unknown deployment"}},
)
async def get_deployment(deployment_id: str, cfg: Any = Depends(settings)) -> sc.DeploymentOut:
    """A rollout with its traffic, step, last gate check and history (why it moved or rolled back)."""
    try:
        return deployment_out(await asyncio.to_thread(rollouts.get_rollout, deployment_id, cfg.db_url))
    except rollouts.RolloutNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


@router.post(
    "/deployments/{deployment_id}/rollback",
    response_model=sc.DeploymentOut,
    responses=ERRORS,
    dependencies=[Depends(require_api_key)],
    summary="Roll a deployment back",
)
async def rollback(
    deployment_id: str,
    body: sc.RollbackRequest | None = None,
    svc: PredictionService = Depends(service),
    cfg: Any = Depends(settings),
) -> sc.DeploymentOut:
    """Send all traffic back to the version that served before; returns the new active deployment."""
    reason = (body or sc.RollbackRequest()).reason
    try:
        r = await asyncio.to_thread(actions.rollback, svc.registry, deployment_id, reason, cfg.db_url)
    except rollouts.RolloutNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except (rollouts.RolloutError, RegistryError) as exc:
        raise HTTPException(409, str(exc)) from exc
    if r.model_name == svc.model_name:
        await svc.refresh()
    return deployment_out(r)
