"""Monitoring flow: prediction-log window vs. the version's reference -> drift + performance -> reports -> event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger

from nfl_mlops.monitoring.monitor import MonitoringConfig, MonitoringResult
from nfl_mlops.monitoring.thresholds import EMBEDDING_SAMPLE_SIZE, PERFORMANCE_MAX_DROP
from nfl_mlops.settings import get_settings
from tasks.alerts import emit, publish_markdown
from tasks.drift import (
    assess_window_performance,
    compute_drift,
    compute_embedding_drift,
    load_version_reference,
    load_window,
    publish_to_workspace,
    record_run,
)


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
    embedding_sample: int = EMBEDDING_SAMPLE_SIZE,
    max_performance_drop: float = PERFORMANCE_MAX_DROP,
) -> dict[str, Any]:
    """Check the last `window_hours` of served predictions for drift and performance decay.

    Emits `nfl-mlops.drift.detected` when the share of drifted signals reaches the threshold, else
    `nfl-mlops.performance.degraded` when performance dropped (one event per run; both payloads carry
    both verdicts). Each run adds snapshots to the Evidently workspace, a markdown summary and a link
    to the HTML report.

    Args:
        embedding_sample: window texts embedded for embedding drift (the sampling error is reported).
        max_performance_drop: absolute drop of accuracy or macro-F1 that counts as degraded.
    """
    settings = get_settings()
    model_name = model_name or settings.model_name
    config = MonitoringConfig(
        share_threshold=drift_share_threshold if drift_share_threshold is not None else settings.drift_share_threshold,
        embedding_sample=embedding_sample, max_drop=max_performance_drop)
    stop = _window_end(end) + timedelta(seconds=1)  # include predictions logged in the scheduled second
    start = stop - timedelta(hours=window_hours)

    # Window
    window = load_window(model_name, start, stop)
    if len(window) < min_predictions:
        get_run_logger().info("only %d predictions (< %d): nothing to judge", len(window), min_predictions)
        record_run(model_name, None, start, stop, len(window), None, {"skipped": "too few predictions"})
        return {"status": "skipped", "n_predictions": len(window)}
    version = int(window["model_version"].mode().iloc[0])
    window = window[window["model_version"] == version].reset_index(drop=True)
    reference, test_metrics = load_version_reference(model_name, version)

    # Drift: descriptors and predictions (Evidently), embeddings (sample)
    name = f"drift-{model_name}-v{version}-{stop:%Y%m%dT%H%M%S}"
    meta = {"model_name": model_name, "model_version": str(version), "window_start": start.isoformat(),
            "window_end": stop.isoformat()}
    drift, current = compute_drift(reference, window, config, settings.reports_path, name, stop, meta)
    embedding = compute_embedding_drift(reference, window["text"].tolist(), config)

    # Performance
    performance = assess_window_performance(reference, test_metrics, window, config)
    result = MonitoringResult.combine(reference, current, drift, embedding, performance)
    payload = {**result.payload(), "model_name": model_name, "model_version": version,
               "window_start": start.isoformat(), "window_end": stop.isoformat()}

    # Report
    snapshot_ids = publish_to_workspace(model_name, result, name, stop, meta)
    run_id = record_run(model_name, version, start, stop, len(window), result.drift,
                        {**payload, "evidently_snapshots": snapshot_ids})
    publish_markdown("monitoring-report", result.to_markdown(f"{model_name} v{version}: {start:%Y-%m-%d %H:%M} .. "
                                                             f"{stop:%Y-%m-%d %H:%M} UTC"),
                     f"{model_name} v{version}, {len(window)} predictions")
    if result.drift.html_path is not None:
        from prefect.artifacts import create_link_artifact

        create_link_artifact(key="drift-report-html", link=result.drift.html_path.resolve().as_uri(),
                             link_text=result.drift.html_path.name, description="Evidently HTML report")

    # Alert
    context = {k: payload[k] for k in ("model_name", "model_version", "window_start", "window_end")}
    for event in result.events:
        emit(event, model_name, {**result.event_payload(), **context, "monitoring_run_id": run_id})
    status = "drift" if result.drift.dataset_drift else "degraded" if performance.degraded else "ok"
    return {"status": status, "monitoring_run_id": run_id, "events": result.events,
            "evidently_snapshots": snapshot_ids, **payload}
