"""Experiments over HTTP: start, log metrics, finish, list (rows in the state DB).

Decision: these runs are recorded in the state DB only (tracker `api`), not as W&B runs. A W&B run
lives in the process that opened it (`wandb.init` ... `finish`), one at a time per process, and
costs about a second to open; an HTTP API with several stateless replicas cannot keep a run open
between a client's requests, and a client's `log_metrics` may reach another replica. Training
flows (and the Python SDK, which runs in the caller's process) track to W&B through
`nfl_mlops.tracking.experiments.ExperimentTracker`, and those runs are listed here too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import select

from nfl_mlops.db import Experiment, ExperimentLog, session_scope, utcnow
from nfl_mlops.serving import schemas as sc
from nfl_mlops.serving.routes.deps import require_api_key, settings
from nfl_mlops.tracking.experiments import scrub

router = APIRouter(tags=["experiments"])
TRACKER = "api"


def _out(row: Experiment, history: list[dict[str, Any]] | None = None) -> sc.ExperimentOut:
    return sc.ExperimentOut(
        experiment_id=row.id, name=row.name, status=row.status, tracker=row.tracker,
        tracker_run_id=row.tracker_run_id, config=dict(row.config or {}), tags=list(row.tags or []),
        metrics=dict(row.metrics or {}), created_at=row.created_at, finished_at=row.finished_at, history=history,
    )


def start_experiment(db_url: str, name: str, config: dict[str, Any], tags: list[str]) -> sc.ExperimentOut:
    with session_scope(db_url) as s:
        row = Experiment(name=name, tracker=TRACKER, config=scrub(config), tags=list(tags), metrics={})
        s.add(row)
        s.flush()
        return _out(row)


def _running(s: Any, experiment_id: str) -> Experiment:
    row = s.get(Experiment, experiment_id)
    if row is None:
        raise HTTPException(404, f"no experiment with id {experiment_id!r}")
    if row.status != "running":
        raise HTTPException(409, f"experiment {experiment_id} is {row.status}; metrics can only be logged to a "
                                 "running experiment")
    return row


def log_metrics(db_url: str, experiment_id: str, metrics: dict[str, float], step: int | None) -> sc.LogMetricsOut:
    with session_scope(db_url) as s:
        row = _running(s, experiment_id)
        row.metrics = {**(row.metrics or {}), **metrics}
        s.add(ExperimentLog(experiment_id=experiment_id, step=step, metrics=dict(metrics)))
    return sc.LogMetricsOut(experiment_id=experiment_id, logged=len(metrics), step=step)


def finish_experiment(db_url: str, experiment_id: str, metrics: dict[str, float], status: str) -> sc.ExperimentOut:
    with session_scope(db_url) as s:
        row = _running(s, experiment_id)
        row.metrics = {**(row.metrics or {}), **metrics}
        row.status = status
        row.finished_at = utcnow()
        if metrics:
            s.add(ExperimentLog(experiment_id=experiment_id, step=None, metrics={"summary": dict(metrics)}))
        s.flush()
        return _out(row)


def get_experiment(db_url: str, experiment_id: str) -> sc.ExperimentOut:
    with session_scope(db_url) as s:
        row = s.get(Experiment, experiment_id)
        if row is None:
            raise HTTPException(404, f"no experiment with id {experiment_id!r}")
        logs = s.scalars(select(ExperimentLog).where(ExperimentLog.experiment_id == experiment_id)
                         .order_by(ExperimentLog.id))
        history = [{"step": g.step, "metrics": g.metrics, "logged_at": g.logged_at.isoformat()} for g in logs]
        return _out(row, history)


def list_experiments(db_url: str, limit: int, status: str | None) -> list[sc.ExperimentOut]:
    with session_scope(db_url) as s:
        q = select(Experiment).order_by(Experiment.created_at.desc()).limit(limit)
        if status:
            q = q.where(Experiment.status == status)
        return [_out(r) for r in s.scalars(q)]


@router.post("/experiments", response_model=sc.ExperimentOut, status_code=201,
             dependencies=[Depends(require_api_key)], summary="Start an experiment")
async def start(body: sc.StartExperimentRequest, cfg: Any = Depends(settings)) -> sc.ExperimentOut:
    """Open a tracked run; log metrics to it with its `experiment_id`. Secret-looking config keys are dropped."""
    return await asyncio.to_thread(start_experiment, cfg.db_url, body.experiment_name, body.config, body.tags)


@router.post("/experiments/metrics", response_model=sc.LogMetricsOut, dependencies=[Depends(require_api_key)],
             summary="Log metrics to a running experiment",
             responses={404: {"description": "Unknown experiment"}, 409: {"description": "Experiment finished"}})
async def metrics(body: sc.LogMetricsRequest, cfg: Any = Depends(settings)) -> sc.LogMetricsOut:
    """Record scalar metrics (optionally at a step); the experiment keeps each metric's latest value and the
    whole history."""
    return await asyncio.to_thread(log_metrics, cfg.db_url, body.experiment_id, body.metrics, body.step)


@router.post("/experiments/{experiment_id}/finish", response_model=sc.ExperimentOut,
             dependencies=[Depends(require_api_key)], summary="Finish an experiment",
             responses={404: {"description": "Unknown experiment"}, 409: {"description": "Already finished"}})
async def finish(experiment_id: str, body: sc.FinishExperimentRequest | None = None,
                 cfg: Any = Depends(settings)) -> sc.ExperimentOut:
    """Close the run with its final metrics (its summary)."""
    body = body or sc.FinishExperimentRequest()
    return await asyncio.to_thread(finish_experiment, cfg.db_url, experiment_id, body.metrics, body.status)


@router.get("/experiments", response_model=list[sc.ExperimentOut], summary="List experiments")
async def list_all(cfg: Any = Depends(settings),
                   status: str | None = Query(None, max_length=20, description="Only running, finished or failed."),
                   limit: int = Query(100, ge=1, le=1000, description="Newest first, at most this many."),
                   ) -> list[sc.ExperimentOut]:
    """Experiments from the API, the SDK and the training flows (W&B runs are listed with their run id)."""
    return await asyncio.to_thread(list_experiments, cfg.db_url, limit, status)


@router.get("/experiments/{experiment_id}", response_model=sc.ExperimentOut, summary="One experiment",
            responses={404: {"description": "Unknown experiment"}})
async def get_one(experiment_id: str, cfg: Any = Depends(settings)) -> sc.ExperimentOut:
    """An experiment with the history of its logged metrics."""
    return await asyncio.to_thread(get_experiment, cfg.db_url, experiment_id)
