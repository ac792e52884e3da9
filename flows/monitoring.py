"""Monitoring flow: prediction-log window vs. the reference -> Evidently report -> drift event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger

from nfl_mlops.settings import get_settings
from tasks.alerts import emit, publish_markdown
from tasks.drift import compute_drift, load_window, record_run


def _window_end(end: datetime | None) -> datetime:
    """The window ends at `end`, else at the run's scheduled time (so backfills work), else now."""
    if end is not None:
        return end if end.tzinfo else end.replace(tzinfo=UTC)
    try:
        from prefect.runtime import flow_run

        scheduled = flow_run.scheduled_start_time
        if scheduled is not None:
            return datetime.fromisoformat(str(scheduled)).astimezone(UTC)
    except Exception:
        pass
    return datetime.now(UTC)


@flow(name="monitoring", log_prints=True)
def monitoring_flow(
    model_name: str | None = None,
    window_hours: float = 24.0,
    end: datetime | None = None,
    min_predictions: int = 50,
    drift_share_threshold: float | None = None,
) -> dict[str, Any]:
    """Check the last `window_hours` of served predictions for drift; emit `nfl-mlops.drift.detected`."""
    settings = get_settings()
    model_name = model_name or settings.model_name
    threshold = drift_share_threshold if drift_share_threshold is not None else settings.drift_share_threshold
    stop = _window_end(end) + timedelta(seconds=1)  # include predictions logged in the scheduled second
    start = stop - timedelta(hours=window_hours)

    # Window
    window = load_window(model_name, start, stop)
    if len(window) < min_predictions:
        get_run_logger().info("only %d predictions (< %d): nothing to judge", len(window), min_predictions)
        record_run(model_name, None, start, stop, len(window), None, {"skipped": "too few predictions"})
        return {"status": "skipped", "n_predictions": len(window)}
    version = int(window["model_version"].mode().iloc[0])
    window = window[window["model_version"] == version]

    # Drift
    name = f"drift-{model_name}-v{version}-{stop:%Y%m%dT%H%M%S}"
    result = compute_drift(model_name, version, window, settings.reports_path, name, threshold)
    payload = {**result.to_payload(), "model_name": model_name, "model_version": version,
               "window_start": start.isoformat(), "window_end": stop.isoformat(), "reason": "drift"}
    run_id = record_run(model_name, version, start, stop, len(window), result, payload)

    # Report
    publish_markdown("drift-report", result.to_markdown(), f"{model_name} v{version}, {len(window)} predictions")
    if result.html_path is not None:
        from prefect.artifacts import create_link_artifact

        create_link_artifact(key="drift-report-html", link=result.html_path.resolve().as_uri(),
                             link_text=result.html_path.name, description="Evidently HTML report")
    if result.dataset_drift:
        emit("drift.detected", model_name, {**payload, "monitoring_run_id": run_id})
    return {"status": "drift" if result.dataset_drift else "ok", "monitoring_run_id": run_id, **payload}
