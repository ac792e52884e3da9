"""Retraining job bookkeeping tasks (the rows `/mlops/retraining/jobs` lists) and their drift episode."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.monitoring.triggers import create_job, update_job
from nfl_mlops.retraining import Admission, admit, finish
from nfl_mlops.settings import get_settings


@task(name="open-retraining-job", cache_policy=NO_CACHE)
def open_job(
    model_name: str,
    reason: str,
    trigger: str,
    params: dict[str, Any],
    flow_run_id: str | None,
    job_id: str | None,
    episode_id: str | None,
    cooldown_minutes: float,
    daily_budget: int,
) -> tuple[str, Admission]:
    """Record the job (or adopt the API's) and admit it (episode claim by compare-and-set, or the
    schedule's cooldown, back-off and budget)."""
    db = get_settings().db_url
    if job_id is None:
        job_id = create_job(model_name, reason, trigger, params, flow_run_id, db_url=db)
    decision = admit(
        model_name,
        trigger,
        job_id,
        episode_id,
        cooldown_minutes=cooldown_minutes,
        daily_budget=daily_budget,
        db_url=db,
    )
    result = (
        {"episode_id": decision.episode_id}
        if decision.allowed
        else {"skipped": decision.reason, "episode_id": decision.episode_id}
    )
    update_job(
        job_id, "running" if decision.allowed else "skipped", result, flow_run_id=flow_run_id, db_url=db
    )
    return job_id, decision


@task(name="close-retraining-job", cache_policy=NO_CACHE)
def close_job(
    job_id: str,
    status: str,
    result: dict[str, Any],
    episode_id: str | None = None,
    version: int | None = None,
) -> dict[str, Any]:
    """Record the outcome; close the episode (served), release it with a back-off (failed) or keep it."""
    return finish(job_id, status, result, episode_id, version, db_url=get_settings().db_url)
