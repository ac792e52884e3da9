"""Predictions and feedback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException

from nfl_mlops.serving import schemas as sc
from nfl_mlops.serving.batcher import Overloaded
from nfl_mlops.serving.routes.deps import (
    check_text,
    require_api_key,
    require_predict_key,
    require_read_key,
    service,
    settings,
)
from nfl_mlops.serving.service import NoModelDeployed, PredictionService

router = APIRouter(tags=["predictions"])
T = TypeVar("T")


def _out(p: Any) -> sc.PredictionOut:
    return sc.PredictionOut(
        prediction_id=p.id,
        label=p.label,
        confidence=p.confidence,
        scores=p.scores,
        model_version=p.model_version,
        arm=p.arm,
        latency_ms=p.latency_ms,
    )


@router.post(
    "/predict/sentiment",
    response_model=sc.PredictionOut,
    dependencies=[Depends(require_predict_key)],
    summary="Score one tweet",
    responses={
        413: {"description": "Text too long"},
        503: {"description": "Nothing deployed yet, or overloaded (Retry-After)"},
    },
)
async def predict(
    body: sc.PredictRequest, svc: PredictionService = Depends(service), cfg: Any = Depends(settings)
) -> sc.PredictionOut:
    """The sentiment of one tweet, from the arm the active rollout assigns (sticky by `key`)."""
    check_text(body.text, cfg.max_text_chars)
    try:
        [p] = await svc.predict([body.text], key=body.key)
    except NoModelDeployed as exc:
        raise HTTPException(503, str(exc)) from exc
    except Overloaded as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from exc
    return _out(p)


@router.post(
    "/predict/sentiment/batch",
    response_model=sc.BatchPredictionOut,
    dependencies=[Depends(require_predict_key)],
    summary="Score many tweets",
    responses={
        413: {"description": "Too many texts or a text too long"},
        503: {"description": "Nothing deployed yet, or overloaded (Retry-After)"},
    },
)
async def predict_batch(
    body: sc.BatchPredictRequest, svc: PredictionService = Depends(service), cfg: Any = Depends(settings)
) -> sc.BatchPredictionOut:
    """Sentiments of several tweets in one request, in order (one arm for the whole request)."""
    if len(body.texts) > cfg.max_batch_items:
        raise HTTPException(413, f"batch has {len(body.texts)} texts; the limit is {cfg.max_batch_items}")
    for t in body.texts:
        check_text(t, cfg.max_text_chars)
    try:
        served = await svc.predict(body.texts, key=body.key)
    except NoModelDeployed as exc:
        raise HTTPException(503, str(exc)) from exc
    except Overloaded as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from exc
    return sc.BatchPredictionOut(
        request_id=served[0].request_id,
        model_version=served[0].model_version,
        predictions=[_out(p) for p in served],
    )


CROSS_REPLICA_WAIT_S = 1.5
"""A prediction answered by another replica is in the state DB within that replica's flush interval (0.5 s;
its row is already durable in its spool): an id not found at once is looked up again for this long."""


async def _after_flush(svc: PredictionService, lookup: Callable[[], T | None]) -> T | None:
    """`lookup()` after this replica's queued rows are written; when it finds nothing, again for a moment
    (another replica's rows reach the DB within its flush interval)."""
    await asyncio.to_thread(svc.logger.flush)
    deadline = time.monotonic() + CROSS_REPLICA_WAIT_S
    while True:
        found = await asyncio.to_thread(lookup)
        if found or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(0.25)


@router.post(
    "/feedback",
    response_model=sc.FeedbackOut,
    dependencies=[Depends(require_api_key)],
    summary="Send the true label of a prediction",
    responses={404: {"description": "Unknown prediction"}},
)
async def feedback(
    body: sc.FeedbackRequest, svc: PredictionService = Depends(service), cfg: Any = Depends(settings)
) -> sc.FeedbackOut:
    """Attach the true sentiment to a logged prediction (monitoring, A/B outcomes and retraining read it)."""
    from nfl_mlops.monitoring.feedback import record_feedback

    recorded = await _after_flush(svc, lambda: record_feedback(body.prediction_id, body.label, cfg.db_url))
    if not recorded:
        raise HTTPException(404, f"no prediction with id {body.prediction_id!r}")
    return sc.FeedbackOut(prediction_id=body.prediction_id, label=body.label, recorded=True)


@router.get(
    "/lineage/{prediction_id}",
    dependencies=[Depends(require_read_key)],
    summary="Where a prediction came from",
    responses={404: {"description": "Unknown prediction"}},
)
async def lineage(
    prediction_id: str, svc: PredictionService = Depends(service), cfg: Any = Depends(settings)
) -> dict[str, Any]:
    """From a prediction id to the model version, training dataset and feature-group versions, the
    tracker run, the Prefect flow runs, the deployment that routed it and the code (git sha)."""
    from nfl_mlops.lineage import lineage_of_prediction

    missing: list[str] = []

    def find() -> dict[str, Any] | None:
        try:
            return lineage_of_prediction(prediction_id, cfg.db_url)
        except LookupError as exc:
            missing[:] = [str(exc)]
            return None

    found = await _after_flush(svc, find)
    if found is None:
        raise HTTPException(404, missing[0] if missing else f"no prediction with id {prediction_id!r}")
    return found
