"""Retraining job bookkeeping tasks (the rows `/mlops/retraining/jobs` lists) and their drift episode."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.monitoring.thresholds import RETRAIN_BACKOFF_BASE_MINUTES
from nfl_mlops.monitoring.triggers import create_job, update_job
from nfl_mlops.retraining import Admission, admit, finish, open_job_runs
from nfl_mlops.retraining import reconcile_jobs as reconcile
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
    backoff_minutes: float = RETRAIN_BACKOFF_BASE_MINUTES,
) -> dict[str, Any]:
    """Record the outcome; close the episode (served), release it with a back-off (failed) or keep it."""
    return finish(job_id, status, result, episode_id, version, get_settings().db_url, backoff_minutes)


@task(name="reconcile-retraining-jobs", cache_policy=NO_CACHE)
def reconcile_jobs(
    model_name: str | None = None, backoff_minutes: float = RETRAIN_BACKOFF_BASE_MINUTES
) -> list[dict[str, Any]]:
    """End the retraining jobs that no run will close (their flow run ended, e.g. `Crashed` after a killed
    worker, or they are older than the limit) as `failed`, and give their drift episodes back with a back-off."""
    db = get_settings().db_url
    runs = [r for r in open_job_runs(model_name, db).values() if r]
    states = flow_run_states(runs) if runs else {}
    return reconcile(states, model_name, db_url=db, backoff_minutes=backoff_minutes)


def flow_run_states(flow_run_ids: list[str]) -> dict[str, str]:
    """flow-run id -> Prefect state type, for the runs Prefect knows; {} when Prefect cannot be asked."""
    from uuid import UUID

    from prefect import get_run_logger
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    ids = []
    for r in flow_run_ids:
        try:
            ids.append(UUID(r))
        except ValueError:
            continue
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    except Exception as exc:  # Prefect unreachable: judge by age alone
        get_run_logger().warning("cannot read flow-run states (%s): open jobs judged by age only", exc)
        return {}
    return {str(r.id): r.state_type.value for r in runs if r.state_type is not None}
