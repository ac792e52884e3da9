"""Experiment records in the state DB: start, log metrics, finish, read (what `/mlops/experiments` serves).

Decision: runs made through the HTTP API are recorded in the state DB only (tracker `api`), not as W&B
runs. A W&B run lives in the process that opened it (`wandb.init` ... `finish`), one at a time per
process, and costs about a second to open; an HTTP API with several stateless replicas cannot keep a
run open between a client's requests, and a client's `log_metrics` may reach another replica. Training
flows (and the Python SDK, which runs in the caller's process) track to W&B through
`nfl_mlops.tracking.experiments.ExperimentTracker`, and those runs are listed here too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from nfl_mlops.db import Experiment, ExperimentLog, session_scope, utcnow
from nfl_mlops.security import scrub

TRACKER = "api"


class ExperimentNotFound(LookupError):
    """No experiment with that id."""


class ExperimentNotRunning(RuntimeError):
    """The experiment is finished (or failed): nothing more can be logged to it."""


class ExperimentOut(BaseModel):
    experiment_id: str = Field(..., description="Id of the experiment.")
    name: str = Field(..., description="Name.")
    status: str = Field(..., description="running, finished or failed.")
    tracker: str = Field(
        ...,
        description="Where it is tracked: wandb-offline/online (flows), or api "
        "(state DB only; see the experiments route).",
    )
    tracker_run_id: str | None = Field(None, description="W&B run id, when tracked there.")
    config: dict[str, Any] = Field(..., description="Hyperparameters.")
    tags: list[Any] = Field(..., description="Tags.")
    metrics: dict[str, Any] = Field(..., description="Latest value of every logged metric, then the summary.")
    created_at: datetime = Field(..., description="Start.")
    finished_at: datetime | None = Field(None, description="End.")
    history: list[dict[str, Any]] | None = Field(
        None, description="Logged metrics, call by call (GET by id)."
    )


class LogMetricsOut(BaseModel):
    experiment_id: str = Field(..., description="The experiment.")
    logged: int = Field(..., description="How many metric values this call logged.")
    step: int | None = Field(None, description="The step given.")


def _out(row: Experiment, history: list[dict[str, Any]] | None = None) -> ExperimentOut:
    return ExperimentOut(
        experiment_id=row.id,
        name=row.name,
        status=row.status,
        tracker=row.tracker,
        tracker_run_id=row.tracker_run_id,
        config=dict(row.config or {}),
        tags=list(row.tags or []),
        metrics=dict(row.metrics or {}),
        created_at=row.created_at,
        finished_at=row.finished_at,
        history=history,
    )


def start_experiment(db_url: str, name: str, config: dict[str, Any], tags: list[str]) -> ExperimentOut:
    with session_scope(db_url) as s:
        row = Experiment(name=name, tracker=TRACKER, config=scrub(config), tags=list(tags), metrics={})
        s.add(row)
        s.flush()
        return _out(row)


def _running(s: Any, experiment_id: str) -> Experiment:
    row = s.get(Experiment, experiment_id)
    if row is None:
        raise ExperimentNotFound(f"no experiment with id {experiment_id!r}")
    if row.status != "running":
        raise ExperimentNotRunning(
            f"experiment {experiment_id} is {row.status}; metrics can only be logged to a running experiment"
        )
    return row


def log_metrics(
    db_url: str, experiment_id: str, metrics: dict[str, float], step: int | None
) -> LogMetricsOut:
    with session_scope(db_url) as s:
        row = _running(s, experiment_id)
        row.metrics = {**(row.metrics or {}), **metrics}
        s.add(ExperimentLog(experiment_id=experiment_id, step=step, metrics=dict(metrics)))
    return LogMetricsOut(experiment_id=experiment_id, logged=len(metrics), step=step)


def finish_experiment(
    db_url: str, experiment_id: str, metrics: dict[str, float], status: str
) -> ExperimentOut:
    with session_scope(db_url) as s:
        row = _running(s, experiment_id)
        row.metrics = {**(row.metrics or {}), **metrics}
        row.status = status
        row.finished_at = utcnow()
        if metrics:
            s.add(ExperimentLog(experiment_id=experiment_id, step=None, metrics={"summary": dict(metrics)}))
        s.flush()
        return _out(row)


def get_experiment(db_url: str, experiment_id: str) -> ExperimentOut:
    with session_scope(db_url) as s:
        row = s.get(Experiment, experiment_id)
        if row is None:
            raise ExperimentNotFound(f"no experiment with id {experiment_id!r}")
        logs = s.scalars(
            select(ExperimentLog)
            .where(ExperimentLog.experiment_id == experiment_id)
            .order_by(ExperimentLog.id)
        )
        history = [{"step": g.step, "metrics": g.metrics, "logged_at": g.logged_at.isoformat()} for g in logs]
        return _out(row, history)


def list_experiments(db_url: str, limit: int, status: str | None) -> list[ExperimentOut]:
    with session_scope(db_url) as s:
        q = select(Experiment).order_by(Experiment.created_at.desc()).limit(limit)
        if status:
            q = q.where(Experiment.status == status)
        return [_out(r) for r in s.scalars(q)]
