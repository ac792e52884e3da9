"""The FastAPI service: `/mlops` predictions, models, deployments, feedback, status, health.

Routes are thin: they validate, call the prediction service or the library, and shape the
answer. Errors become 4xx with a message; nothing ever returns a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from nfl_mlops.registry.store import NotFoundError, RegistryError, VersionInfo
from nfl_mlops.rollout import state as rollouts
from nfl_mlops.serving import schemas as sc
from nfl_mlops.serving.service import NoModelDeployed, PredictionService

log = logging.getLogger(__name__)


def _version_out(v: VersionInfo) -> sc.ModelVersionOut:
    return sc.ModelVersionOut(
        model_id=v.model_name, version=v.version, status=v.status, aliases=v.aliases, path=v.path,
        metrics=v.metrics, params=v.params, lineage=v.lineage, description=v.description, reason=v.reason,
        created_at=v.created_at,
    )


def _deployment_out(r: rollouts.RolloutInfo) -> sc.DeploymentOut:
    return sc.DeploymentOut(
        deployment_id=r.id, model_id=r.model_name, environment=r.environment, model_version=r.version,
        previous_version=r.previous_version, strategy=r.strategy, status=r.status, arms=r.arms, reason=r.reason,
        history=r.history, created_at=r.created_at, updated_at=r.updated_at,
    )


def create_app(settings: Any = None) -> FastAPI:
    """Build the app; the model loads lazily when the first rollout is seen."""
    from nfl_mlops.settings import get_settings

    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = PredictionService(settings)
        app.state.service = service
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="NFL Sentiment MLOps",
        version="0.1.0",
        description="Predictions, model registry, rollouts and monitoring of the NFL tweet sentiment model.",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        return JSONResponse(status_code=422, content={"detail": message or "invalid request", "errors": errors})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error; see the server log"})

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        svc = getattr(request.app.state, "service", None)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        if svc is not None:
            svc.metrics.requests.labels(endpoint, str(response.status_code)).inc()
            svc.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        svc: PredictionService = request.app.state.service
        svc.metrics.log_queue.set(svc.logger.queued)
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def service(request: Request) -> PredictionService:
        return request.app.state.service

    def require_api_key(x_api_key: str | None = Header(None, description="Required when MLOPS_API_KEY is set.")) -> None:
        expected = settings.api_key
        if expected is None:
            return
        if x_api_key is None or not secrets.compare_digest(x_api_key, expected.get_secret_value()):
            raise HTTPException(status_code=401, detail="missing or wrong X-API-Key header")

    def check_text(text: str) -> None:
        if len(text) > settings.max_text_chars:
            raise HTTPException(413, f"text is {len(text)} characters; the limit is {settings.max_text_chars}")

    router = APIRouter(prefix="/mlops")

    # Predictions
    @router.post("/predict/sentiment", response_model=sc.PredictionOut, tags=["predictions"])
    async def predict(body: sc.PredictRequest, svc: PredictionService = Depends(service)) -> sc.PredictionOut:
        check_text(body.text)
        try:
            [p] = await svc.predict([body.text], key=body.key)
        except NoModelDeployed as exc:
            raise HTTPException(503, str(exc)) from exc
        return sc.PredictionOut(prediction_id=p.id, label=p.label, confidence=p.confidence, scores=p.scores,
                                model_version=p.model_version, arm=p.arm, latency_ms=p.latency_ms)

    @router.post("/predict/sentiment/batch", response_model=sc.BatchPredictionOut, tags=["predictions"])
    async def predict_batch(body: sc.BatchPredictRequest,
                            svc: PredictionService = Depends(service)) -> sc.BatchPredictionOut:
        if len(body.texts) > settings.max_batch_items:
            raise HTTPException(413, f"batch has {len(body.texts)} texts; the limit is {settings.max_batch_items}")
        for t in body.texts:
            check_text(t)
        try:
            served = await svc.predict(body.texts, key=body.key)
        except NoModelDeployed as exc:
            raise HTTPException(503, str(exc)) from exc
        return sc.BatchPredictionOut(
            request_id=served[0].request_id, model_version=served[0].model_version,
            predictions=[sc.PredictionOut(prediction_id=p.id, label=p.label, confidence=p.confidence,
                                          scores=p.scores, model_version=p.model_version, arm=p.arm,
                                          latency_ms=p.latency_ms) for p in served],
        )

    @router.post("/feedback", tags=["predictions"], dependencies=[Depends(require_api_key)])
    async def feedback(body: sc.FeedbackRequest, svc: PredictionService = Depends(service)) -> dict[str, Any]:
        from nfl_mlops.monitoring.feedback import record_feedback

        await asyncio.to_thread(svc.logger.flush)  # the prediction may still be queued
        if not record_feedback(body.prediction_id, body.label, settings.db_url):
            raise HTTPException(404, f"no prediction with id {body.prediction_id!r}")
        return {"prediction_id": body.prediction_id, "label": body.label, "recorded": True}

    # Models
    @router.get("/models", response_model=list[sc.ModelVersionOut], tags=["models"])
    async def list_models(svc: PredictionService = Depends(service)) -> list[sc.ModelVersionOut]:
        return [_version_out(v) for v in svc.registry.list_versions()]

    @router.get("/models/{model_id}", response_model=list[sc.ModelVersionOut], tags=["models"])
    async def get_model(model_id: str, svc: PredictionService = Depends(service)) -> list[sc.ModelVersionOut]:
        versions = svc.registry.list_versions(model_id)
        if not versions:
            raise HTTPException(404, f"no model named {model_id!r}")
        return [_version_out(v) for v in versions]

    # Deployments
    @router.get("/deployments", response_model=list[sc.DeploymentOut], tags=["deployments"])
    async def list_deployments() -> list[sc.DeploymentOut]:
        return [_deployment_out(r) for r in rollouts.list_rollouts(db_url=settings.db_url)]

    @router.post("/deployments", response_model=sc.DeploymentOut, status_code=201, tags=["deployments"],
                 dependencies=[Depends(require_api_key)])
    async def deploy(body: sc.DeployRequest, svc: PredictionService = Depends(service)) -> sc.DeploymentOut:
        try:
            info = svc.registry.get(body.model_id, body.model_version)
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        if info.status != "ready":
            raise HTTPException(409, f"{info.model_name} v{info.version} is {info.status} and cannot be deployed")
        r = rollouts.activate(info.model_name, info.version, strategy=body.strategy, environment=body.environment,
                              reason="POST /mlops/deployments", db_url=settings.db_url)
        if info.model_name == svc.model_name:
            await svc.refresh()
        return _deployment_out(r)

    @router.post("/deployments/{deployment_id}/rollback", response_model=sc.DeploymentOut, tags=["deployments"],
                 dependencies=[Depends(require_api_key)])
    async def rollback(deployment_id: str, body: sc.RollbackRequest | None = None,
                       svc: PredictionService = Depends(service)) -> sc.DeploymentOut:
        try:
            r = rollouts.rollback(deployment_id, (body or sc.RollbackRequest()).reason, db_url=settings.db_url)
        except rollouts.RolloutNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except rollouts.RolloutError as exc:
            raise HTTPException(409, str(exc)) from exc
        try:
            svc.registry.promote(r.model_name, r.version)
        except RegistryError:
            pass
        if r.model_name == svc.model_name:
            await svc.refresh()
        return _deployment_out(r)

    # Status and health
    @router.get("/health", tags=["status"])
    async def health(svc: PredictionService = Depends(service)) -> JSONResponse:
        ok_db = True
        try:
            await asyncio.to_thread(rollouts.active_rollout, svc.model_name, "production", settings.db_url)
        except Exception:
            ok_db = False
        ready = ok_db and svc.rollout is not None and all(
            int(a["version"]) in svc.loaded_versions for a in svc.rollout.arms.values())
        body = {"status": "healthy" if ready else ("degraded" if ok_db else "unhealthy"),
                "database": ok_db, "model_loaded": bool(svc.loaded_versions),
                "serving_version": svc.rollout.version if svc.rollout else None}
        return JSONResponse(status_code=200 if ok_db else 503, content=body)

    @router.get("/status", tags=["status"])
    async def status(svc: PredictionService = Depends(service)) -> dict[str, Any]:
        r = svc.rollout
        return {
            "model_name": svc.model_name,
            "deployment": _deployment_out(r).model_dump(mode="json") if r else None,
            "loaded_versions": svc.loaded_versions,
            "uptime_s": round(time.time() - svc.started_at, 1),
            "counts": dict(svc.counts),
            "prediction_log": {"written": svc.logger.written, "queued": svc.logger.queued},
            "services": {
                "database": settings.db_url.split("://", 1)[0],
                "tracking": "wandb-online" if settings.wandb_api_key else "wandb-offline",
                "hub_mirror": bool(settings.huggingface_token),
                "feature_store": "hopsworks" if settings.hopsworks_api_key else "local",
                "cache": "redis" if settings.redis_url else "in-process",
            },
            "last_refresh_error": svc.last_refresh_error,
        }

    app.include_router(router)
    return app
