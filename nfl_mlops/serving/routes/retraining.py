"""Retraining: start the `retraining/retraining` Prefect deployment, list jobs, explain the triggers."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse
from sqlalchemy import select

from nfl_mlops.db import MonitoringRun, RetrainingJob, session_scope, utcnow
from nfl_mlops.monitoring.thresholds import RETRAIN_DAILY_BUDGET
from nfl_mlops.monitoring.triggers import create_job, job_history, retraining_allowed, update_job
from nfl_mlops.rollout.controller import prefect_api_url
from nfl_mlops.serving import schemas as sc
from nfl_mlops.serving.routes.deps import require_api_key, service, settings
from nfl_mlops.serving.service import PredictionService

log = logging.getLogger(__name__)
router = APIRouter(tags=["retraining"])

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


@router.post("/retraining/trigger", response_model=sc.RetrainingJobOut, status_code=202,
             dependencies=[Depends(require_api_key)], summary="Start a retraining",
             responses={404: {"description": "Unknown model"},
                        503: {"description": "Prefect is not reachable; the job is recorded as failed"}})
async def trigger(body: sc.RetrainRequest, svc: PredictionService = Depends(service),
                  cfg: Any = Depends(settings)) -> Any:
    """Record a retraining job and start the `retraining/retraining` Prefect deployment for it
    (training -> registration gate -> deployment of a challenger that passes). Returns at once; follow
    the job with `GET /retraining/jobs`. `config` overrides the champion's training recipe field by field."""
    model_name = body.model_name or cfg.model_name
    versions = await asyncio.to_thread(svc.registry.list_versions, model_name)
    if not versions:
        raise HTTPException(404, f"no model named {model_name!r}: register or train a first version")
    parameters: dict[str, Any] = {"reason": body.reason, "trigger": "api", "model_name": model_name}
    if body.config:
        champion = await asyncio.to_thread(svc.registry.get_alias, model_name, "champion")
        recipe = dict((champion.params or {}).get("train", {})) if champion else {}
        parameters["train"] = {**recipe, **body.config}
    if body.strategy:
        parameters["strategy"] = body.strategy
    job_id = await asyncio.to_thread(create_job, model_name, body.reason, "api", dict(parameters), None, cfg.db_url)
    parameters["job_id"] = job_id
    try:
        flow_run_id = await submit(parameters)
    except RuntimeError as exc:
        await asyncio.to_thread(update_job, job_id, "failed", {"error": str(exc)}, None, cfg.db_url)
        log.warning("retraining job %s not started: %s", job_id, exc)
        return JSONResponse(status_code=503, content={"detail": f"retraining job {job_id} not started: {exc}",
                                                      "job_id": job_id})
    await asyncio.to_thread(update_job, job_id, "scheduled", None, flow_run_id, cfg.db_url)
    return await asyncio.to_thread(get_job, cfg.db_url, job_id)


@router.get("/retraining/jobs", response_model=list[sc.RetrainingJobOut], summary="List retraining jobs")
async def jobs(cfg: Any = Depends(settings),
               model_name: str | None = Query(None, max_length=200, description="Only this model."),
               limit: int = Query(100, ge=1, le=1000, description="Newest first, at most this many.")
               ) -> list[sc.RetrainingJobOut]:
    """Retraining jobs from the API, the schedule, the automation and by hand, newest first."""
    return await asyncio.to_thread(list_jobs, cfg.db_url, model_name, limit)


@lru_cache(maxsize=1)
def declared_retraining() -> tuple[list[dict[str, Any]], list[str]]:
    """Schedules and trigger events of the retraining deployment, as `prefect.yaml` declares them."""
    import yaml

    path = Path(__file__).resolve().parents[3] / "prefect.yaml"
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
        raise HTTPException(404, f"no model named {model_name!r}")
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


@router.get("/retraining/triggers/{model_name}", response_model=sc.TriggerCheckOut,
            summary="What would trigger a retraining now, and why", responses={404: {"description": "Unknown model"}})
async def triggers(model_name: str, svc: PredictionService = Depends(service),
                   cfg: Any = Depends(settings)) -> sc.TriggerCheckOut:
    """The latest monitoring verdict (drift, performance), the cooldown and daily budget of automatic
    retraining, the schedule and the events whose automation starts it."""
    known = bool(await asyncio.to_thread(svc.registry.list_versions, model_name))
    return await asyncio.to_thread(trigger_check, cfg.db_url, model_name, cfg.retrain_cooldown_minutes, known)
