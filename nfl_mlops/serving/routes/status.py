"""Service status and health."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from nfl_mlops.rollout import state as rollouts
from nfl_mlops.rollout.records import deployment_out
from nfl_mlops.serving.routes.deps import service, settings
from nfl_mlops.serving.service import PredictionService

router = APIRouter(tags=["status"])


@router.get("/health", summary="Readiness")
async def health(svc: PredictionService = Depends(service), cfg: Any = Depends(settings)) -> JSONResponse:
    """healthy when the DB answers and every version of the active rollout is loaded; 503 when the DB does not.

    `serving_version` is the version answering by default (the stable arm; A of an A/B test).
    """
    ok_db = True
    try:
        await asyncio.to_thread(rollouts.active_rollout, svc.model_name, svc.environment, cfg.db_url)
    except Exception:
        ok_db = False
    r = svc.rollout
    ready = ok_db and r is not None and all(int(a["version"]) in svc.loaded_versions for a in r.arms.values())
    body = {"status": "healthy" if ready else ("degraded" if ok_db else "unhealthy"),
            "database": ok_db, "model_loaded": bool(svc.loaded_versions),
            "serving_version": rollouts.serving_version(r.arms, r.version) if r else None}
    return JSONResponse(status_code=200 if ok_db else 503, content=body)


@router.get("/status", summary="Service status")
async def status(svc: PredictionService = Depends(service), cfg: Any = Depends(settings)) -> dict[str, Any]:
    """The active deployment, loaded versions, counters, prediction-log queue and which backends are in use."""
    r = svc.rollout
    return {
        "model_name": svc.model_name,
        "deployment": deployment_out(r).model_dump(mode="json") if r else None,
        "loaded_versions": svc.loaded_versions,
        "uptime_s": round(time.time() - svc.started_at, 1),
        "counts": dict(svc.counts),
        "prediction_log": {"written": svc.logger.written, "queued": svc.logger.queued},
        "services": cfg.backends(),
        "last_refresh_error": svc.last_refresh_error,
    }
