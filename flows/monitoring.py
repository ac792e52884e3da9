"""Monitoring flow: per serving version, its predictions since its rollout vs. its reference -> drift +
performance -> reports -> drift episode (the event only when one opens or its retraining is due)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as this_run
from prefect.states import Completed, State

from nfl_mlops.events import DRIFT_DETECTED, PERFORMANCE_DEGRADED
from nfl_mlops.lineage import scheduled_start
from nfl_mlops.monitoring.episodes import EpisodeRule
from nfl_mlops.monitoring.monitor import MonitoringConfig, MonitoringResult
from nfl_mlops.monitoring.outcome import check_status, summarize, window_end
from nfl_mlops.monitoring.thresholds import (
    DRIFT_SHARE_THRESHOLD,
    EMBEDDING_SAMPLE_SIZE,
    EPISODE_CLEAR_CHECKS,
    EPISODE_PERSISTENCE,
    EPISODE_STRONG_SHARE,
    PERFORMANCE_MAX_DROP,
    RETRAIN_BACKOFF_BASE_MINUTES,
)
from nfl_mlops.monitoring.window import LiveTarget
from nfl_mlops.naming import run_name
from nfl_mlops.settings import get_settings
from tasks.alerts import emit, publish_markdown, publish_model_status
from tasks.drift import (
    assess_window_performance,
    close_stale_episodes,
    compute_drift,
    compute_embedding_drift,
    load_targets,
    load_version_reference,
    load_window,
    publish_drift_report,
    publish_to_workspace,
    record_run,
    update_episode,
)
from tasks.jobs import reconcile_jobs
from tasks.labeling import queue_for_labelling


@flow(name="monitoring", log_prints=True, flow_run_name=lambda: run_name("monitoring", this_run.parameters))
def monitoring_flow(
    model_name: str | None = None,
    window_hours: float = 24.0,
    end: datetime | None = None,
    min_predictions: int = 50,
    drift_share_threshold: float = DRIFT_SHARE_THRESHOLD,
    embedding_sample: int = EMBEDDING_SAMPLE_SIZE,
    max_performance_drop: float = PERFORMANCE_MAX_DROP,
    persistence: int = EPISODE_PERSISTENCE,
    strong_share: float | None = EPISODE_STRONG_SHARE,
    clear_checks: int = EPISODE_CLEAR_CHECKS,
    retry_backoff_minutes: float = RETRAIN_BACKOFF_BASE_MINUTES,
) -> State:
    """Judge each serving version on the predictions it served in the last `window_hours` since its rollout began.

    Per version: Evidently drift (signal groups vote once), embedding drift, performance; a MonitoringRun
    row, Evidently snapshots, a markdown summary, a link to the HTML report. An alarming check opens the
    version's drift episode only by the episode rule, and only then (or when the open episode's retraining
    is due again after a failure) is `nfl-mlops.drift.detected` / `nfl-mlops.performance.degraded` emitted.

    Ends `Completed` named `Skipped` (nothing judged), `EpisodeOpened`, `Alarm` (an alarm the rule did not
    yet make an episode, or one inside an open episode) or `Completed` (all clear); the result is the dict
    of the first judged version with `versions` (every version) and `events` (what was emitted).

    Args:
        min_predictions: a version with fewer predictions in its window is not judged.
        drift_share_threshold: drift when this share of signal groups drifted.
        embedding_sample: window texts embedded for embedding drift (the sampling error is reported).
        max_performance_drop: absolute drop of accuracy or macro-F1 that counts as degraded.
        persistence, strong_share, clear_checks: the episode rule (`nfl_mlops.monitoring.episodes`);
            strong_share None: only `persistence` consecutive alarms open an episode.
        retry_backoff_minutes: an orphaned retraining job (its run died) gives its episode back after this
            long (doubling per failed attempt), as the retraining flow's own parameter does.
    """
    settings = get_settings()
    model_name = model_name or settings.model_name
    config = MonitoringConfig(
        share_threshold=drift_share_threshold,
        embedding_sample=embedding_sample,
        max_drop=max_performance_drop,
    )
    rule = EpisodeRule(persistence=persistence, strong_share=strong_share, clear_checks=clear_checks)
    stop = window_end(end, scheduled_start()) + timedelta(
        seconds=1
    )  # include predictions logged in the scheduled second
    start = stop - timedelta(hours=window_hours)

    # Jobs that no run will close (a killed worker): failed, their episodes free to retry after a back-off
    orphaned = reconcile_jobs(model_name, retry_backoff_minutes)

    # Versions: what serves now, each from its rollout on
    targets = load_targets(model_name, start, stop)
    if any(t.since is not None for t, _ in targets):
        closed = close_stale_episodes(model_name, [t.version for t, _ in targets])
    else:
        closed = []
    outcomes = [
        check_version(model_name, target, since, stop, config, rule, min_predictions)
        for target, since in targets
    ]

    # Result: a run that decides nothing says so in its state's name
    publish_model_status(model_name)
    name, message, out = summarize(outcomes, closed, orphaned)
    return Completed(name=name, message=message, data=out) if name else Completed(message=message, data=out)


def check_version(
    model_name: str,
    target: LiveTarget,
    start: datetime,
    stop: datetime,
    config: MonitoringConfig,
    rule: EpisodeRule,
    min_predictions: int,
) -> dict[str, Any]:
    """One version's check: window -> drift + performance -> reports -> episode -> event (a plain function of tasks)."""
    settings = get_settings()
    version = target.version
    base = {
        "model_name": model_name,
        "model_version": version,
        "arm": target.arm,
        "window_start": start.isoformat(),
        "window_end": stop.isoformat(),
        "rollout_started_at": target.since.isoformat() if target.since else None,
    }

    # Window
    window = load_window(model_name, version, start, stop)
    if len(window) < min_predictions:
        reason = f"only {len(window)} predictions since {start:%Y-%m-%d %H:%M} (< {min_predictions})"
        get_run_logger().info("v%d: %s: nothing to judge", version, reason)
        record_run(model_name, version, start, stop, len(window), None, {"skipped": reason, **base})
        return {"status": "skipped", "n_predictions": len(window), "reason": reason, **base}
    reference, test_metrics = load_version_reference(model_name, version)

    # Drift: descriptors and predictions (Evidently), embeddings (sample)
    name = f"drift-{model_name}-v{version}-{target.arm}-{stop:%Y%m%dT%H%M%S}"
    meta = {
        "model_name": model_name,
        "model_version": str(version),
        "arm": target.arm,
        "window_start": start.isoformat(),
        "window_end": stop.isoformat(),
    }
    drift, current = compute_drift(reference, window, config, settings.reports_path, name, stop, meta)
    embedding = compute_embedding_drift(reference, window["text"].tolist(), config)

    # Performance
    performance = assess_window_performance(reference, test_metrics, window, config, embedding)
    result = MonitoringResult.combine(reference, current, drift, embedding, performance)
    payload = {**result.payload(), **base, "n_predictions": len(window)}

    # Report
    snapshot_ids = publish_to_workspace(model_name, result, name, stop, meta)
    run_id = record_run(
        model_name,
        version,
        start,
        stop,
        len(window),
        result.drift,
        {**payload, "evidently_snapshots": snapshot_ids},
    )
    title = f"{model_name} v{version} ({target.arm}): {start:%Y-%m-%d %H:%M} .. {stop:%Y-%m-%d %H:%M} UTC"
    publish_markdown(
        "monitoring-report", result.to_markdown(title), f"{model_name} v{version}, {len(window)} predictions"
    )
    report_url = publish_drift_report(
        result,
        title,
        {
            "model": model_name,
            "version": f"v{version} ({target.arm})",
            "window": f"{start:%Y-%m-%d %H:%M} .. {stop:%Y-%m-%d %H:%M} UTC",
            "predictions": str(len(window)),
            "drift share": f"{result.drift.drift_share:.2f} (threshold {result.drift.share_threshold:.2f})",
        },
    )

    # Episode -> alert
    kind = "drift" if result.drift.dataset_drift else "degraded"
    step = update_episode(model_name, target, result.alarm, kind, payload["reason"], run_id, rule)
    labelling = None
    if step.episode is not None and step.action in ("opened", "continued", "open"):
        # before the event: the retraining it starts finds the episode's queue (and waits for its labels)
        labelling = queue_for_labelling(model_name, version, step.episode.id, start, stop)
    emitted = []
    if step.emit and step.episode is not None:
        event = DRIFT_DETECTED if step.episode.kind == "drift" else PERFORMANCE_DEGRADED
        context = {
            k: payload[k] for k in ("model_name", "model_version", "arm", "window_start", "window_end")
        }
        emit(
            event,
            model_name,
            {
                **result.event_payload(),
                **context,
                "monitoring_run_id": run_id,
                "episode_id": step.episode.id,
                "kind": step.episode.kind,
            },
        )
        emitted.append(event)
    status = check_status(result.drift.dataset_drift, performance.degraded)
    return {
        "status": status,
        "monitoring_run_id": run_id,
        "events": emitted,
        "evidently_snapshots": snapshot_ids,
        "report_url": report_url,
        "episode": step.to_payload(),
        "labelling": labelling,
        **payload,
    }
