"""Saved monitoring reports over HTTP: the Evidently HTML and JSON files monitoring writes under
`MLOPS_HOME/reports`, at a stable URL that Prefect artifacts link to."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse

from nfl_mlops.monitoring.report_files import MEDIA_TYPES, ReportNotFound, find_report, list_reports
from nfl_mlops.serving.routes.deps import require_read_key, settings

router = APIRouter(prefix="/reports", tags=["monitoring"], dependencies=[Depends(require_read_key)])


@router.get("", summary="List saved monitoring reports")
async def reports(
    limit: int = Query(100, ge=1, le=1000, description="Newest first, at most this many."),
    cfg: Any = Depends(settings),
) -> list[dict[str, Any]]:
    """The saved Evidently reports (HTML and JSON), newest first, with their URLs."""
    files = await asyncio.to_thread(list_reports, cfg.reports_path, limit)
    return [
        {
            "name": f.name,
            "size": f.size,
            "modified": f.modified.isoformat(),
            "url": f"/mlops/reports/{f.name}",
        }
        for f in files
    ]


@router.get(
    "/{name}",
    summary="One saved monitoring report",
    responses={404: {"description": "No report of that name"}},
    response_class=FileResponse,
)
async def report(name: str, cfg: Any = Depends(settings)) -> FileResponse:
    """The report file itself (`text/html`, `application/json`, or the `image/png` drift chart); 404 for any
    other name."""
    try:
        path = await asyncio.to_thread(find_report, cfg.reports_path, name)
    except ReportNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix])
