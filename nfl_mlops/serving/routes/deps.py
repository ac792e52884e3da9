"""Dependencies shared by the routes: settings, the prediction service, the API-key guard, limits."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import Header, HTTPException, Request

from nfl_mlops.serving.service import PredictionService

UNAUTHORIZED = "missing or wrong X-API-Key header"


def settings(request: Request) -> Any:
    return request.app.state.settings


def service(request: Request) -> PredictionService:
    return request.app.state.service


def require_api_key(
    request: Request, x_api_key: str | None = Header(None, description="Required when MLOPS_API_KEY is set.")
) -> None:
    """401 unless the header carries MLOPS_API_KEY (when one is set); compared in constant time."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if x_api_key is None or not secrets.compare_digest(
        x_api_key.encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(status_code=401, detail=UNAUTHORIZED)


def check_text(text: str, max_chars: int) -> None:
    if len(text) > max_chars:
        raise HTTPException(413, f"text is {len(text)} characters; the limit is {max_chars}")


def not_found(message: str) -> HTTPException:
    return HTTPException(404, message)


def conflict(message: str) -> HTTPException:
    return HTTPException(409, message)
