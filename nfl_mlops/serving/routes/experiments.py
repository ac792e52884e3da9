"""Experiments over HTTP: start, log metrics, finish, list (rows in the state DB; see `tracking.records`)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from nfl_mlops.serving import schemas as sc
from nfl_mlops.serving.routes.deps import require_api_key, require_read_key, settings
from nfl_mlops.tracking import records

router = APIRouter(tags=["experiments"], dependencies=[Depends(require_read_key)])


def _http(call: Any, *args: Any) -> Any:
    """Run a record function; unknown ids answer 404, a finished experiment 409."""
    try:
        return call(*args)
    except records.ExperimentNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except records.ExperimentNotRunning as exc:
        raise HTTPException(409, str(exc)) from exc


@router.post(
    "/experiments",
    response_model=sc.ExperimentOut,
    status_code=201,
    dependencies=[Depends(require_api_key)],
    summary="Start an experiment",
)
async def start(body: sc.StartExperimentRequest, cfg: Any = Depends(settings)) -> sc.ExperimentOut:
    """Open a tracked run; log metrics to it with its `experiment_id`. Secret-looking config keys are dropped."""
    return await asyncio.to_thread(
        _http, records.start_experiment, cfg.db_url, body.experiment_name, body.config, body.tags
    )


@router.post(
    "/experiments/metrics",
    response_model=sc.LogMetricsOut,
    dependencies=[Depends(require_api_key)],
    summary="Log metrics to a running experiment",
    responses={404: {"description": "Unknown experiment"}, 409: {"description": "Experiment finished"}},
)
async def metrics(body: sc.LogMetricsRequest, cfg: Any = Depends(settings)) -> sc.LogMetricsOut:
    """Record scalar metrics (optionally at a step); the experiment keeps each metric's latest value and the
    whole history."""
    return await asyncio.to_thread(
        _http, records.log_metrics, cfg.db_url, body.experiment_id, body.metrics, body.step
    )


@router.post(
    "/experiments/{experiment_id}/finish",
    response_model=sc.ExperimentOut,
    dependencies=[Depends(require_api_key)],
    summary="Finish an experiment",
    responses={404: {"description": "Unknown experiment"}, 409: {"description": "Already finished"}},
)
async def finish(
    experiment_id: str, body: sc.FinishExperimentRequest | None = None, cfg: Any = Depends(settings)
) -> sc.ExperimentOut:
    """Close the run with its final metrics (its summary)."""
    body = body or sc.FinishExperimentRequest()
    return await asyncio.to_thread(
        _http, records.finish_experiment, cfg.db_url, experiment_id, body.metrics, body.status
    )


@router.get("/experiments", response_model=list[sc.ExperimentOut], summary="List experiments")
async def list_all(
    cfg: Any = Depends(settings),
    status: str | None = Query(None, max_length=20, description="Only running, finished or failed."),
    limit: int = Query(100, ge=1, le=1000, description="Newest first, at most this many."),
) -> list[sc.ExperimentOut]:
    """Experiments from the API, the SDK and the training flows (W&B runs are listed with their run id)."""
    return await asyncio.to_thread(_http, records.list_experiments, cfg.db_url, limit, status)


@router.get(
    "/experiments/{experiment_id}",
    response_model=sc.ExperimentOut,
    summary="One experiment",
    responses={404: {"description": "Unknown experiment"}},
)
async def get_one(experiment_id: str, cfg: Any = Depends(settings)) -> sc.ExperimentOut:
    """An experiment with the history of its logged metrics."""
    return await asyncio.to_thread(_http, records.get_experiment, cfg.db_url, experiment_id)
