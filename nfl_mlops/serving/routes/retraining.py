"""Retraining over HTTP: start the `retraining/retraining` Prefect deployment, list jobs, explain the triggers
(the logic lives in `nfl_mlops.retraining`)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse

from nfl_mlops import retraining as rt
from nfl_mlops.serving import schemas as sc
from nfl_mlops.serving.routes.deps import require_api_key, require_read_key, service, settings
from nfl_mlops.serving.service import PredictionService

router = APIRouter(tags=["retraining"], dependencies=[Depends(require_read_key)])


@router.post(
    "/retraining/trigger",
    response_model=sc.RetrainingJobOut,
    status_code=202,
    dependencies=[Depends(require_api_key)],
    summary="Start a retraining",
    responses={
        404: {"description": "Unknown model"},
        422: {"description": "Invalid training overrides"},
        503: {"description": "Prefect is not reachable; the job is recorded as failed"},
    },
)
async def trigger(
    body: sc.RetrainRequest, svc: PredictionService = Depends(service), cfg: Any = Depends(settings)
) -> Any:
    """Record a retraining job and start the `retraining/retraining` Prefect deployment for it
    (training -> registration gate -> deployment of a challenger that passes). Returns at once; follow
    the job with `GET /retraining/jobs`. `config` overrides the champion's training recipe field by field."""
    try:
        return await rt.request_retraining(
            svc.registry,
            body.model_name or cfg.model_name,
            body.reason,
            body.config,
            body.strategy,
            "api",
            cfg.db_url,
        )
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    except rt.RetrainingNotStarted as exc:
        return JSONResponse(status_code=503, content={"detail": str(exc), "job_id": exc.job_id})


@router.get("/retraining/jobs", response_model=list[sc.RetrainingJobOut], summary="List retraining jobs")
async def jobs(
    cfg: Any = Depends(settings),
    model_name: str | None = Query(None, max_length=200, description="Only this model."),
    limit: int = Query(100, ge=1, le=1000, description="Newest first, at most this many."),
) -> list[sc.RetrainingJobOut]:
    """Retraining jobs from the API, the schedule, the automation and by hand, newest first."""
    return await asyncio.to_thread(rt.list_jobs, cfg.db_url, model_name, limit)


@router.get(
    "/retraining/triggers/{model_name}",
    response_model=sc.TriggerCheckOut,
    summary="What would trigger a retraining now, and why",
    responses={404: {"description": "Unknown model"}},
)
async def triggers(
    model_name: str, svc: PredictionService = Depends(service), cfg: Any = Depends(settings)
) -> sc.TriggerCheckOut:
    """The latest monitoring verdict (drift, performance), the cooldown and daily budget of automatic
    retraining, the schedule and the events whose automation starts it."""
    known = bool(await asyncio.to_thread(svc.registry.list_versions, model_name))
    try:
        return await asyncio.to_thread(rt.trigger_check, cfg.db_url, model_name, known)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
