"""Retraining on request: start the `retraining/retraining` Prefect deployment, list the jobs, and
explain what would start one now. The API (`/mlops/retraining/*`), the SDK and the CLI call these."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import select

from nfl_mlops.db import MonitoringRun, RetrainingJob, session_scope, utcnow
from nfl_mlops.monitoring.thresholds import RETRAIN_DAILY_BUDGET
from nfl_mlops.monitoring.triggers import create_job, job_history, retraining_allowed, update_job
from nfl_mlops.rollout.controller import prefect_api_url
from nfl_mlops.serving import schemas as sc

log = logging.getLogger(__name__)

RETRAINING_DEPLOYMENT = "retraining/retraining"
PREFECT_PING_S = 3.0
PREFECT_SUBMIT_S = 20.0


def job_out(row: RetrainingJob) -> sc.RetrainingJobOut:
    return sc.RetrainingJobOut(
        job_id=row.id, model_name=row.model_name, reason=row.reason, trigger=row.trigger, status=row.status,
        flow_run_id=row.flow_run_id, params=dict(row.params or {}), result=dict(row.result or {}),
        created_at=row.created_at, finished_at=row.finished_at)


def get_job(db_url: str, job_id: str) -> sc.RetrainingJobOut:
    with session_scope(db_url) as s:
        return job_out(s.get(RetrainingJob, job_id))


def list_jobs(db_url: str, model_name: str | None, limit: int) -> list[sc.RetrainingJobOut]:
    with session_scope(db_url) as s:
        q = select(RetrainingJob).order_by(RetrainingJob.created_at.desc()).limit(limit)
        if model_name:
            q = q.where(RetrainingJob.model_name == model_name)
        return [job_out(r) for r in s.scalars(q)]


async def submit(parameters: dict[str, Any]) -> str:
    """Create a run of the retraining deployment (do not wait for it); returns the flow-run id.

    Raises:
        RuntimeError: with a message for the client when Prefect is not configured, not reachable,
            or does not know the deployment. Never waits longer than a few seconds.
    """
    import httpx
    from prefect.deployments.flow_runs import arun_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = prefect_api_url()
    if not url:
        raise RuntimeError("no Prefect API is configured (PREFECT_API_URL is not set): start the stack with "
                           "`nfl-mlops up`, or run `prefect deployment run 'retraining/retraining'` by hand")
    try:
        async with httpx.AsyncClient(timeout=PREFECT_PING_S) as client:
            (await client.get(f"{url.rstrip('/')}/health")).raise_for_status()
    except httpx.HTTPError as exc:
        raise RuntimeError(f"the Prefect API at {url} is not reachable ({type(exc).__name__})") from exc
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):  # this URL, whatever Prefect read at import
            run = await asyncio.wait_for(arun_deployment(RETRAINING_DEPLOYMENT, parameters=parameters, timeout=0,
                                                         tags=["nfl-mlops", "api"]), PREFECT_SUBMIT_S)
    except ObjectNotFound as exc:
        raise RuntimeError(f"the Prefect server at {url} has no deployment {RETRAINING_DEPLOYMENT!r}; "
                           "run `prefect deploy --all` (or `nfl-mlops up`)") from exc
    except TimeoutError as exc:
        raise RuntimeError(f"the Prefect API at {url} did not create the run within {PREFECT_SUBMIT_S:.0f} s") from exc
    except Exception as exc:  # HTTP errors, validation of the parameters by the server
        raise RuntimeError(f"the Prefect API at {url} refused the run: {type(exc).__name__}: {str(exc)[:300]}") from exc
    return str(run.id)


class RetrainingNotStarted(RuntimeError):
    """The job was recorded (as failed) but Prefect could not start it; `job_id` names it."""

    def __init__(self, job_id: str, message: str) -> None:
        super().__init__(message)
        self.job_id = job_id


async def request_retraining(registry: Any, model_name: str, reason: str, config: dict[str, Any] | None = None,
                             strategy: str | None = None, trigger: str = "api",
                             db_url: str | None = None) -> sc.RetrainingJobOut:
    """Record a retraining job and start a run of the retraining deployment for it (not waiting for it).

    `config` overrides the champion's training recipe field by field.

    Raises:
        LookupError: no model of that name is registered.
        ValueError: `config` does not make a valid training recipe (nothing is recorded).
        RetrainingNotStarted: Prefect is not configured or not reachable (the job is recorded as failed).
    """
    versions = await asyncio.to_thread(registry.list_versions, model_name)
    if not versions:
        raise LookupError(f"no model named {model_name!r}: register or train a first version")
    parameters: dict[str, Any] = {"reason": reason, "trigger": trigger, "model_name": model_name}
    if config:
        champion = await asyncio.to_thread(registry.get_alias, model_name, "champion")
        recipe = dict((champion.params or {}).get("train", {})) if champion else {}
        parameters["train"] = {**recipe, **config}
        from pydantic import ValidationError

        from nfl_mlops.modeling.params import TrainParams

        try:
            TrainParams.model_validate(parameters["train"])
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            raise ValueError(f"config does not make a valid training recipe: {problems}") from None
    if strategy:
        parameters["strategy"] = strategy
    job_id = await asyncio.to_thread(create_job, model_name, reason, trigger, dict(parameters), None, db_url)
    parameters["job_id"] = job_id
    try:
        flow_run_id = await submit(parameters)
    except RuntimeError as exc:
        await asyncio.to_thread(update_job, job_id, "failed", {"error": str(exc)}, None, db_url)
        log.warning("retraining job %s not started: %s", job_id, exc)
        raise RetrainingNotStarted(job_id, f"retraining job {job_id} not started: {exc}") from exc
    await asyncio.to_thread(update_job, job_id, "scheduled", None, flow_run_id, db_url)
    return await asyncio.to_thread(get_job, db_url, job_id)


@lru_cache(maxsize=1)
def declared_retraining() -> tuple[list[dict[str, Any]], list[str]]:
    """Schedules and trigger events of the retraining deployment, as `prefect.yaml` declares them."""
    import yaml

    path = Path(__file__).resolve().parents[1] / "prefect.yaml"
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return [], []
    for d in spec.get("deployments") or []:
        if d.get("name") == "retraining":
            events = [e for t in d.get("triggers") or [] for e in (t.get("expect") or [])]
            return [dict(s) for s in d.get("schedules") or []], events
    return [], []


def trigger_check(db_url: str, model_name: str, cooldown_minutes: float, known: bool) -> sc.TriggerCheckOut:
    now = utcnow()
    with session_scope(db_url) as s:
        run = s.scalar(select(MonitoringRun).where(MonitoringRun.model_name == model_name)
                       .order_by(MonitoringRun.created_at.desc()).limit(1))
        latest = None
        if run is not None:
            summary = dict(run.summary or {})
            events = summary.get("events") or []
            degraded = bool(summary.get("performance_degraded") or summary.get("degraded")
                            or "performance.degraded" in events)
            latest = {"monitoring_run_id": run.id, "created_at": run.created_at.isoformat(),
                      "model_version": run.model_version, "n_predictions": run.n_predictions,
                      "drift_share": run.drift_share, "drift_detected": bool(run.drift_detected),
                      "performance_degraded": degraded, "skipped": summary.get("skipped"),
                      "drifted_columns": summary.get("drifted_columns"), "report_path": run.report_path}
    history = job_history(model_name, db_url=db_url)
    if not (known or latest or history):
        raise LookupError(f"no model named {model_name!r}")
    decision = retraining_allowed(now, "automation", history, timedelta(minutes=cooldown_minutes),
                                  RETRAIN_DAILY_BUDGET)
    reasons = []
    signal = False
    if latest is None:
        reasons.append("no monitoring run yet: nothing to react to")
    else:
        if latest["drift_detected"]:
            signal = True
            reasons.append(f"latest monitoring run ({latest['created_at'][:19]}) found drift "
                           f"(share {latest['drift_share']:.2f})")
        if latest["performance_degraded"]:
            signal = True
            reasons.append(f"latest monitoring run ({latest['created_at'][:19]}) found performance degraded")
        if not signal:
            reasons.append(f"latest monitoring run ({latest['created_at'][:19]}) found neither drift nor a "
                           "performance drop" + (f" ({latest['skipped']})" if latest.get("skipped") else ""))
    reasons.append(("automatic retraining allowed: " if decision.allowed else "automatic retraining blocked: ")
                   + decision.reason)
    schedules, events = declared_retraining()
    with session_scope(db_url) as s:
        recent = [job_out(r) for r in s.scalars(select(RetrainingJob).where(RetrainingJob.model_name == model_name)
                                                .order_by(RetrainingJob.created_at.desc()).limit(5))]
    return sc.TriggerCheckOut(
        model_name=model_name, would_trigger=signal and decision.allowed, reasons=reasons, latest_monitoring=latest,
        automatic={"allowed": decision.allowed, "reason": decision.reason, "cooldown_minutes": cooldown_minutes,
                   "daily_budget": RETRAIN_DAILY_BUDGET},
        manual={"allowed": True, "reason": "manual and API requests are not limited by cooldown or budget"},
        schedules=schedules, event_triggers=events, recent_jobs=recent)
