"""The FastAPI service: the whole `/mlops` API (routes in `serving/routes/`), `/metrics`, the rollout driver.

Routes are thin: they validate, call the prediction service or the library, and shape the
answer. Errors become 4xx with a message; nothing ever returns a stack trace. Besides serving,
each replica drives the canary, shadow and A/B rollouts started through the API (`_drive_rollouts`):
every `check_seconds` it evaluates the active rollout's gates and moves its traffic, promotes it or
rolls it back (compare-and-set in the state DB, so several replicas never double-step). While a traffic
change of such a rollout awaits the replicas' confirmation (heartbeats, `rollout.replicas`), it checks
every poll, and rolls the rollout back when a replica cannot load a version or the deadline passes.

Probes: `/mlops/health/live` (liveness) and `/mlops/health/ready` (readiness); see `routes/status.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from nfl_mlops import security
from nfl_mlops.serving.service import PredictionService

log = logging.getLogger(__name__)

OPENAPI_TAGS = [
    {"name": "predictions", "description": "Sentiment of tweets; feedback labels."},
    {"name": "models", "description": "The model registry."},
    {"name": "deployments", "description": "Rollouts: blue-green, canary, shadow, A/B; rollback."},
    {"name": "ab-tests", "description": "A/B tests with a significance test on feedback labels."},
    {"name": "experiments", "description": "Tracked runs and their metrics."},
    {"name": "retraining", "description": "Retraining jobs (Prefect) and their triggers."},
    {"name": "status", "description": "Health and status."},
]


def body_limit(settings: Any) -> int:
    """Largest request body accepted (bytes): a full batch of the longest texts, JSON-escaped, plus room."""
    return settings.max_batch_items * settings.max_text_chars * 6 + 64 * 1024


async def _drive_rollouts(app: FastAPI) -> None:
    """Advance the API-driven rollout of the served model (and a flow's rollout whose flow died)."""
    from nfl_mlops.db import utcnow
    from nfl_mlops.rollout import controller

    svc: PredictionService = app.state.service
    settings = app.state.settings
    last: dict[str, float] = {}  # rollout id -> when this replica last ticked it
    while True:
        await asyncio.sleep(settings.rollout_poll_seconds)
        r = svc.latest  # the active rollout as read, also when this replica could not load it
        try:
            if not controller.in_progress(r):
                continue
            if r.config.get("driver", "api") == "api":
                every = controller.next_check_s(r)
                if time.monotonic() - last.get(r.id, -1e18) < every:
                    continue
            elif not controller.due(
                r, "api", utcnow()
            ):  # a flow's rollout: only when its flow stopped ticking
                continue
            last[r.id] = time.monotonic()
            out = await asyncio.to_thread(controller.tick, r.id, None, settings.db_url, svc.registry)
            if out.applied:
                log.info("deployment %s: %s (%s)", r.id, out.decision.action, out.decision.reason)
                svc.metrics.rollout_actions.labels(out.decision.action).inc()
                await asyncio.to_thread(controller.emit_best_effort, out)
                await svc.refresh()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the driver must keep going; the next tick retries
            log.warning("rollout driver: %s: %s", type(exc).__name__, exc)


def access_summary(settings: Any) -> str:
    """One start-up line that says who may call this API."""
    if settings.api_key is not None:
        groups = ", ".join(sorted(settings.open_endpoints)) or "nothing"
        return f"API key required (X-API-Key) except for: {groups} (MLOPS_OPEN_ENDPOINTS)"
    if settings.allow_no_auth:
        return "MLOPS_API_KEY is not set and MLOPS_ALLOW_NO_AUTH=true: every endpoint is open to every client"
    return "MLOPS_API_KEY is not set: answering clients on this host (loopback) only; set it to serve others"


DOCS_ASSETS = "/mlops/docs-assets"
"""Where the API serves the Swagger UI and ReDoc assets (fastapi-offline's packaged copies)."""


class GuardAndMeasure:
    """Every HTTP request: refuse non-loopback clients when no API key is set (403), a NUL in the URL (422),
    a declared body over the limit (413) or an unreadable Content-Length (400); count and time the rest per
    route for /metrics.

    A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` (`@app.middleware("http")`) runs each request
    through extra tasks and memory streams, which cost a single-text prediction about 0.5 ms."""

    def __init__(self, app: Any, local_only: bool, limit: int) -> None:
        self.app, self.local_only, self.limit = app, local_only, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, send_and_note)
        svc = getattr(scope["app"].state, "service", None) if "app" in scope else None
        if svc is not None:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            svc.metrics.requests.labels(endpoint, str(status)).inc()
            svc.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    def _refusal(self, scope: Any) -> JSONResponse | None:
        client = scope.get("client")
        if self.local_only and not security.is_loopback_client(client[0] if client else None):
            return JSONResponse(status_code=403, content={"detail": security.NO_KEY_REFUSAL})
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            return JSONResponse(
                status_code=422, content={"detail": "NUL characters are not allowed in the URL"}
            )
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                return JSONResponse(status_code=400, content={"detail": "invalid Content-Length header"})
            if too_big:
                return JSONResponse(
                    status_code=413,
                    content={
                        "detail": f"request body is {declared.decode()} bytes; the limit is {self.limit}"
                    },
                )
        return None


def create_app(settings: Any = None) -> FastAPI:
    """Build the app; the model loads lazily when the first rollout is seen."""
    from nfl_mlops.serving.routes import routers
    from nfl_mlops.serving.routes.deps import require_health_key
    from nfl_mlops.settings import get_settings

    settings = settings or get_settings()
    security.protect(settings)
    local_only = security.loopback_only(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        log.log(logging.WARNING if settings.api_key is None else logging.INFO, access_summary(settings))
        service = PredictionService(settings)
        app.state.service = service
        await service.start()
        driver = asyncio.create_task(_drive_rollouts(app))
        try:
            yield
        finally:
            driver.cancel()
            try:
                await driver
            except asyncio.CancelledError:
                pass
            await service.stop()

    from fastapi_offline import FastAPIOffline

    # /docs and /redoc load Swagger UI and ReDoc from assets packaged with the service, never from a CDN
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title="NFL Sentiment MLOps",
        version="0.1.0",
        description="Predictions, model registry, rollouts (blue-green, canary, shadow, A/B), experiments, "
        "retraining and monitoring of the NFL tweet sentiment model. With MLOPS_API_KEY set, mutating "
        "endpoints and reads that reveal internals need it in the `X-API-Key` header (health and predictions "
        "stay open: MLOPS_OPEN_ENDPOINTS); without it the service answers loopback clients only.",
        openapi_tags=OPENAPI_TAGS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    limit = body_limit(settings)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        message = "; ".join(f"{'.'.join(e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        return JSONResponse(
            status_code=422, content={"detail": message or "invalid request", "errors": errors}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = security.redact(exc.detail if isinstance(exc.detail, str) else str(exc.detail))
        return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error; see the server log"})

    app.add_middleware(GuardAndMeasure, local_only=local_only, limit=limit)

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_health_key)])
    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        svc: PredictionService = request.app.state.service
        svc.metrics.log_queue.set(svc.logger.queued)
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    for router in routers():
        app.include_router(router, prefix="/mlops")
    return app
