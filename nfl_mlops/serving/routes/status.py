"""Service status and health: liveness and readiness probes (Kubernetes), and the combined health view."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from nfl_mlops.rollout import state as rollouts
from nfl_mlops.rollout.records import deployment_out
from nfl_mlops.serving.routes.deps import require_health_key, require_read_key, service, settings
from nfl_mlops.serving.service import PredictionService

router = APIRouter(tags=["status"])


async def _db_ok(svc: PredictionService, cfg: Any) -> bool:
    try:
        await asyncio.to_thread(rollouts.active_rollout, svc.model_name, svc.environment, cfg.db_url)
        return True
    except Exception:
        return False


def _serving_version(svc: PredictionService) -> int | None:
    r = svc.rollout
    return rollouts.serving_version(r.arms, r.version) if r else None


@router.get("/health/live", summary="Liveness probe", dependencies=[Depends(require_health_key)])
async def live() -> dict[str, str]:
    """200 while the process answers (no DB, no model involved): restart the process only when this fails."""
    return {"status": "alive"}


@router.get(
    "/health/ready",
    summary="Readiness probe",
    dependencies=[Depends(require_health_key)],
    responses={503: {"description": "Not ready: loading, shutting down, or the state DB does not answer"}},
)
async def ready(svc: PredictionService = Depends(service), cfg: Any = Depends(settings)) -> JSONResponse:
    """200 when this replica can take traffic: the state DB answers and every version of the rollout it serves
    is loaded and warm. 503 until then (e.g. while the first versions load, or when they do not load), while
    it shuts down, and when the DB does not answer.

    With no active rollout it is ready (predictions answer 503 "no model is deployed"; the deployment
    endpoints must stay reachable to deploy one). While it loads a new rollout it stays ready on the
    previous one; `following` says whether it already serves the newest active rollout.
    """
    ok_db = await _db_ok(svc, cfg)
    is_ready, why = svc.readiness()
    if not ok_db:
        is_ready, why = False, "the state database does not answer"
    body = {
        "status": "ready" if is_ready else "not_ready",
        "reason": why,
        "database": ok_db,
        "replica_id": svc.replica_id,
        "serving_version": _serving_version(svc),
        "deployment_id": svc.rollout.id if svc.rollout else None,
        "following": svc.following,
        "loaded_versions": svc.loaded_versions,
        "load_errors": {str(v): e for v, e in sorted(svc.load_errors.items())},
    }
    return JSONResponse(status_code=200 if is_ready else 503, content=body)


@router.get("/health", summary="Health (combined view)", dependencies=[Depends(require_health_key)])
async def health(svc: PredictionService = Depends(service), cfg: Any = Depends(settings)) -> JSONResponse:
    """healthy when the DB answers and every version of the active rollout is loaded; 503 when the DB does not.

    Kept for existing callers; probes should use `/health/live` and `/health/ready`. `serving_version` is
    the version answering by default (the stable arm; A of an A/B test).
    """
    ok_db = await _db_ok(svc, cfg)
    r = svc.rollout
    ready_ = (
        ok_db and r is not None and all(int(a["version"]) in svc.loaded_versions for a in r.arms.values())
    )
    body = {
        "status": "healthy" if ready_ else ("degraded" if ok_db else "unhealthy"),
        "database": ok_db,
        "model_loaded": bool(svc.loaded_versions),
        "serving_version": _serving_version(svc),
    }
    return JSONResponse(status_code=200 if ok_db else 503, content=body)


@router.get("/status", summary="Service status", dependencies=[Depends(require_read_key)])
async def status(svc: PredictionService = Depends(service), cfg: Any = Depends(settings)) -> dict[str, Any]:
    """The active deployment, loaded versions, counters, prediction-log queue and which backends are in use."""
    r = svc.rollout
    return {
        "model_name": svc.model_name,
        "replica_id": svc.replica_id,
        "deployment": deployment_out(r).model_dump(mode="json") if r else None,
        "loaded_versions": svc.loaded_versions,
        "backends": {str(v): b for v, b in svc.backends.items()},
        "inference_backend_setting": cfg.inference_backend,
        "cost": {str(v): c for v, c in svc.cost().items()},
        "load_errors": {str(v): e for v, e in sorted(svc.load_errors.items())},
        "uptime_s": round(time.time() - svc.started_at, 1),
        "counts": dict(svc.counts),
        "prediction_log": {"written": svc.logger.written, "queued": svc.logger.queued},
        "services": cfg.backends(),
        "last_refresh_error": svc.last_refresh_error,
    }
