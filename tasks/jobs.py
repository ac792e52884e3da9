"""Retraining job bookkeeping tasks (the rows `/mlops/retraining/jobs` lists)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.db import utcnow
from nfl_mlops.monitoring.triggers import TriggerDecision, create_job, job_history, retraining_allowed, update_job
from nfl_mlops.settings import get_settings


@task(name="open-retraining-job", cache_policy=NO_CACHE)
def open_job(model_name: str, reason: str, trigger: str, params: dict[str, Any], flow_run_id: str | None,
             job_id: str | None, cooldown_minutes: float, daily_budget: int) -> tuple[str, TriggerDecision]:
    """Record the job (or adopt the API's) and decide whether it may run."""
    db = get_settings().db_url
    if job_id is None:
        job_id = create_job(model_name, reason, trigger, params, flow_run_id, db_url=db)
    decision = retraining_allowed(utcnow(), trigger, job_history(model_name, exclude=job_id, db_url=db),
                                  timedelta(minutes=cooldown_minutes), daily_budget)
    update_job(job_id, "running" if decision.allowed else "skipped",
               None if decision.allowed else {"skipped": decision.reason}, flow_run_id=flow_run_id, db_url=db)
    return job_id, decision


@task(name="close-retraining-job", cache_policy=NO_CACHE)
def close_job(job_id: str, status: str, result: dict[str, Any]) -> None:
    update_job(job_id, status, result, db_url=get_settings().db_url)
