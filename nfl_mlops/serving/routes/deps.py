"""Dependencies shared by the routes: settings, the prediction service, the API-key guard, limits.

The dependencies are `async def`: they never block, and FastAPI runs a plain `def` dependency in its thread
pool, a thread hop per dependency per request (three on every prediction)."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import Header, HTTPException, Request

from nfl_mlops.serving.service import PredictionService

UNAUTHORIZED = "missing or wrong X-API-Key header"


async def settings(request: Request) -> Any:
    return request.app.state.settings


async def service(request: Request) -> PredictionService:
    return request.app.state.service


def _check_key(request: Request, given: str | None, group: str | None) -> None:
    """401 unless the X-API-Key header carries MLOPS_API_KEY (compared in constant time). Passes when no key
    is set (the API then answers loopback clients only: `app`), or when `group` is one of
    MLOPS_OPEN_ENDPOINTS."""
    cfg = request.app.state.settings
    expected = cfg.api_key
    if expected is None or (group is not None and group in cfg.open_endpoints):
        return
    if given is None or not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(status_code=401, detail=UNAUTHORIZED)


_KEY_HEADER = Header(None, description="MLOPS_API_KEY, when one is set.")


async def require_api_key(request: Request, x_api_key: str | None = _KEY_HEADER) -> None:
    """Mutations: always the key (when one is set)."""
    _check_key(request, x_api_key, None)


async def require_read_key(request: Request, x_api_key: str | None = _KEY_HEADER) -> None:
    """Reads that reveal internals (registry rows and paths, deployments, experiments and their configs,
    lineage, status details, reports, jobs): the key, unless `reads` is in MLOPS_OPEN_ENDPOINTS."""
    _check_key(request, x_api_key, "reads")


async def require_predict_key(request: Request, x_api_key: str | None = _KEY_HEADER) -> None:
    """Scoring: open unless `predictions` is taken out of MLOPS_OPEN_ENDPOINTS."""
    _check_key(request, x_api_key, "predictions")


async def require_health_key(request: Request, x_api_key: str | None = _KEY_HEADER) -> None:
    """Probes and /metrics: open unless `health` is taken out of MLOPS_OPEN_ENDPOINTS."""
    _check_key(request, x_api_key, "health")


def check_text(text: str, max_chars: int) -> None:
    if len(text) > max_chars:
        raise HTTPException(413, f"text is {len(text)} characters; the limit is {max_chars}")


def not_found(message: str) -> HTTPException:
    return HTTPException(404, message)


def conflict(message: str) -> HTTPException:
    return HTTPException(409, message)
