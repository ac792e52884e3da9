"""Explanations: per-word occlusion attributions of a text on the version that would answer it.

Thin shell over `nfl_mlops.modeling.explain`: route like a prediction (sticky by `key`), score the text and
its occluded variants through that version's dynamic batcher (the runtime that serves it, on the one
inference thread, bounded and shed like predictions), and format the attributions. Nothing is written to
the prediction log or the cache: an explanation is not a served prediction, and its variants are not texts
anyone sent.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from nfl_mlops import LABELS
from nfl_mlops.modeling.explain import TooManyPieces, explanation_from, occlusion_inputs
from nfl_mlops.rollout.state import RolloutError, choose_arm
from nfl_mlops.serving import schemas as sc
from nfl_mlops.serving.batcher import BatcherClosed, Overloaded
from nfl_mlops.serving.routes.deps import check_text, require_predict_key, service, settings
from nfl_mlops.serving.service import PredictionService

router = APIRouter(tags=["predictions"])
NO_MODEL = "no model is deployed yet: run the deployment flow or POST /mlops/deployments"


def _target(svc: PredictionService, body: sc.ExplainRequest) -> tuple[int, str | None]:
    """(version, arm): the explicit `version` when it is loaded here, else the arm the rollout routes to."""
    rollout = svc.rollout
    if rollout is None:
        raise HTTPException(503, NO_MODEL)
    loaded = svc.loaded_versions
    if body.version is not None:
        if body.version not in loaded:
            raise HTTPException(
                404, f"version {body.version} is not served by this service; it has loaded versions {loaded}"
            )
        return body.version, None
    try:
        arm = choose_arm(rollout.arms, body.key, uuid.uuid4().hex)
    except RolloutError as exc:
        raise HTTPException(503, str(exc)) from exc
    version = int(rollout.arms[arm]["version"])
    if version not in loaded:
        raise HTTPException(
            503, f"version {version} is still loading; retry shortly", headers={"Retry-After": "1"}
        )
    return version, arm


@router.post(
    "/explain",
    response_model=sc.ExplanationOut,
    dependencies=[Depends(require_predict_key)],
    summary="Explain a prediction word by word",
    responses={
        404: {"description": "`version` is not one this service has loaded"},
        413: {"description": "Text too long, or too many words to explain"},
        503: {"description": "Nothing deployed yet, or overloaded (Retry-After)"},
    },
)
async def explain(
    body: sc.ExplainRequest, svc: PredictionService = Depends(service), cfg: Any = Depends(settings)
) -> sc.ExplanationOut:
    """How much each word of the text holds up the label the serving version gives it: the drop of the
    label's probability when the word is removed (occlusion; works on every backend). The version is the one
    the active rollout routes the request to (sticky by `key`, like a prediction), or `version`."""
    check_text(body.text, cfg.max_text_chars)
    try:
        pieces, texts = occlusion_inputs(body.text)
    except TooManyPieces as exc:
        raise HTTPException(413, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    version, arm = _target(svc, body)
    started = time.perf_counter()
    try:
        # the version's batcher: its runtime's forward pass, chunked at max_batch_size, off the event loop
        answers = await svc.batcher_for(version).submit(texts)
    except Overloaded as exc:
        svc.metrics.shed.labels(exc.reason).inc(len(texts))
        raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from exc
    except BatcherClosed as exc:  # the version was unloaded meanwhile (a new rollout), or shutdown
        raise HTTPException(
            503, f"version {version} is no longer served; retry", headers={"Retry-After": "1"}
        ) from exc
    try:
        explained = explanation_from(body.text, pieces, [[a.scores[x] for x in LABELS] for a in answers])
    except ValueError as exc:  # non-finite probabilities: corrupted weights
        raise HTTPException(503, f"version {version} gave an invalid answer: {exc}") from exc
    return sc.ExplanationOut(
        model_version=version,
        arm=arm,
        backend=svc.backends.get(version, "torch"),
        label=explained.label,
        probabilities=explained.probabilities,
        tokens=[
            sc.TokenAttributionOut(token=t.token, start=t.start, end=t.end, attribution=t.attribution)
            for t in explained.tokens
        ],
        latency_ms=(time.perf_counter() - started) * 1000.0,
    )
