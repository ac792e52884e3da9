"""The labelling queue: what monitoring asks people to label, in Label Studio's format both ways."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query

from nfl_mlops.serving import schemas as sc
from nfl_mlops.serving.routes.deps import require_api_key, require_read_key, service, settings
from nfl_mlops.serving.service import PredictionService

router = APIRouter(prefix="/labeling", tags=["labelling"])

Status = Literal["pending", "labelled", "all"]


@router.get(
    "/queue",
    response_model=sc.LabelingQueueOut,
    dependencies=[Depends(require_read_key)],
    summary="Predictions to label, most informative first",
)
async def queue(
    episode_id: str | None = Query(
        None, max_length=32, description="One episode's queue; default every one."
    ),
    status: Status = Query("pending", description="pending (no label yet), labelled, or all."),
    offset: int = Query(0, ge=0, le=1_000_000),
    limit: int = Query(50, ge=1, le=500),
    model_name: str | None = Query(None, max_length=200, description="Default: the served model."),
    svc: PredictionService = Depends(service),
    cfg: Any = Depends(settings),
) -> sc.LabelingQueueOut:
    """The served predictions monitoring queued for labelling when it opened (or checked) a drift or
    degradation episode (`MLOPS_LABELING_STRATEGY`: by default the most typical tweet of each cluster of
    the window's traffic; or uncertain ones, spread by k-center), never two near-duplicates, up to
    `MLOPS_LABELING_BUDGET` per episode.
    Label them with `POST /mlops/feedback` (one) or `POST /mlops/labeling/import` (a Label Studio export)."""
    from nfl_mlops.monitoring.labeling import read_queue

    name = model_name or svc.model_name
    page = await asyncio.to_thread(read_queue, name, episode_id, status, offset, limit, cfg.db_url)
    return sc.LabelingQueueOut(
        model_name=name,
        episode_id=episode_id,
        status=status,
        total=page.total,
        pending=page.pending,
        labelled=page.labelled,
        offset=offset,
        limit=limit,
        items=[sc.LabelingItemOut(**item.as_dict()) for item in page.items],
    )


@router.get(
    "/export",
    dependencies=[Depends(require_read_key)],
    summary="The queue as Label Studio tasks",
)
async def export(
    episode_id: str | None = Query(None, max_length=32),
    status: Status = Query("pending"),
    limit: int = Query(1000, ge=1, le=10_000),
    model_name: str | None = Query(None, max_length=200),
    svc: PredictionService = Depends(service),
    cfg: Any = Depends(settings),
) -> list[dict[str, Any]]:
    """Label Studio's task import JSON: each task's `data.text` is the tweet and `data.prediction_id` brings
    its label back; the served version's answer comes as a pre-annotation. The project's labelling config
    is at `GET /mlops/labeling/config`."""
    from nfl_mlops.monitoring.labeling import label_studio_tasks, read_queue

    name = model_name or svc.model_name
    page = await asyncio.to_thread(read_queue, name, episode_id, status, 0, limit, cfg.db_url)
    return label_studio_tasks(page.items, name)


@router.get("/config", dependencies=[Depends(require_read_key)], summary="Label Studio labelling config")
async def config() -> dict[str, str]:
    """The XML labelling config of a Label Studio project for the exported tasks."""
    from nfl_mlops.monitoring.labeling import LABEL_STUDIO_CONFIG

    return {"label_config": LABEL_STUDIO_CONFIG}


@router.post(
    "/import",
    response_model=sc.LabelImportOut,
    dependencies=[Depends(require_api_key)],
    summary="Labels from a Label Studio export",
    responses={422: {"description": "Not a Label Studio export of our tasks (nothing recorded)"}},
)
async def import_labels(
    tasks: list[dict[str, Any]] = Body(..., max_length=10_000, description="Label Studio's JSON export."),
    model_name: str | None = Query(None, max_length=200),
    svc: PredictionService = Depends(service),
    cfg: Any = Depends(settings),
) -> sc.LabelImportOut:
    """Record the annotations of a Label Studio JSON export as feedback, all or nothing: a task without
    `data.prediction_id` or with a label outside negative/neutral/positive refuses the whole file (422);
    tasks nobody annotated (or skipped) are listed, not errors."""
    from nfl_mlops.monitoring.labeling import LabelImportError, import_label_studio

    await asyncio.to_thread(svc.logger.flush)  # a queued prediction is in the DB; this makes sure
    try:
        result = await asyncio.to_thread(import_label_studio, tasks, model_name or svc.model_name, cfg.db_url)
    except LabelImportError as exc:
        raise HTTPException(422, str(exc)) from exc
    return sc.LabelImportOut(labelled=len(result.labelled), unknown=result.unknown, skipped=result.skipped)
