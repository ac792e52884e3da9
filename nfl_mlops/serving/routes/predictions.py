"""Predictions and feedback."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from nfl_mlops.serving import schemas as sc
from nfl_mlops.serving.routes.deps import check_text, require_api_key, service, settings
from nfl_mlops.serving.service import NoModelDeployed, PredictionService

router = APIRouter(tags=["predictions"])


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
    summary="Score one tweet",
    responses={413: {"description": "Text too long"}, 503: {"description": "Nothing deployed yet"}},
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
    return _out(p)


@router.post(
    "/predict/sentiment/batch",
    response_model=sc.BatchPredictionOut,
    summary="Score many tweets",
    responses={
        413: {"description": "Too many texts or a text too long"},
        503: {"description": "Nothing deployed yet"},
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
    return sc.BatchPredictionOut(
        request_id=served[0].request_id,
        model_version=served[0].model_version,
        predictions=[_out(p) for p in served],
    )


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

    await asyncio.to_thread(svc.logger.flush)  # the prediction may still be queued
    if not await asyncio.to_thread(record_feedback, body.prediction_id, body.label, cfg.db_url):
        raise HTTPException(404, f"no prediction with id {body.prediction_id!r}")
    return sc.FeedbackOut(prediction_id=body.prediction_id, label=body.label, recorded=True)


@router.get(
    "/lineage/{prediction_id}",
    summary="Where a prediction came from",
    responses={404: {"description": "Unknown prediction"}},
)
async def lineage(
    prediction_id: str, svc: PredictionService = Depends(service), cfg: Any = Depends(settings)
) -> dict[str, Any]:
    """From a prediction id to the model version, training dataset and feature-group versions, the
    tracker run, the Prefect flow runs, the deployment that routed it and the code (git sha)."""
    from nfl_mlops.lineage import lineage_of_prediction

    await asyncio.to_thread(svc.logger.flush)  # the prediction may still be queued
    try:
        return await asyncio.to_thread(lineage_of_prediction, prediction_id, cfg.db_url)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
