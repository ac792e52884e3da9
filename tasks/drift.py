"""Monitoring tasks: the prediction-log window, the version's reference, drift, performance, where people look.

Each task is one stage of `nfl_mlops.monitoring.monitor` (plain functions, unit-tested there), drawn at
an I/O boundary (DB, model files, encoder, Evidently workspace) or a checkpoint worth seeing in the UI.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.monitoring.drift import DriftResult
from nfl_mlops.monitoring.embeddings import EmbeddingDrift
from nfl_mlops.monitoring.episodes import EpisodeRule, EpisodeStep, advance, close_stale
from nfl_mlops.monitoring.monitor import (
    MonitoringConfig,
    MonitoringResult,
    descriptor_drift,
    window_descriptors,
    window_embedding_drift,
    window_performance,
)
from nfl_mlops.monitoring.performance import PerformanceResult
from nfl_mlops.monitoring.reference import (
    ReferenceProfile,
    build_reference,
    holds_on,
    latest_rebaseline,
    load_reference,
    rebaseline_root,
    reference_rows,
    save_reference,
)
from nfl_mlops.monitoring.triggers import record_verdict
from nfl_mlops.monitoring.window import LiveTarget, targets_in_window, version_window
from nfl_mlops.settings import get_settings


@task(name="live-versions", cache_policy=NO_CACHE)
def load_targets(model_name: str, start: datetime, end: datetime) -> list[tuple[LiveTarget, datetime]]:
    """The versions serving at `end` (per arm) and where each one's window starts (its rollout, at the earliest)."""
    targets = targets_in_window(model_name, start, end, get_settings().db_url)
    get_run_logger().info(
        "judging %s",
        ", ".join(f"v{t.version} ({t.arm}, since {s.isoformat()})" for t, s in targets)
        or "nothing: no version served",
    )
    return targets


@task(name="load-window", cache_policy=NO_CACHE)
def load_window(model_name: str, version: int, start: datetime, end: datetime) -> pd.DataFrame:
    """The predictions `version` served for `model_name` in [start, end)."""
    frame = version_window(model_name, version, start, end, db_url=get_settings().db_url)
    get_run_logger().info(
        "v%d window %s .. %s: %d predictions", version, start.isoformat(), end.isoformat(), len(frame)
    )
    return frame


@task(name="update-episode", cache_policy=NO_CACHE)
def update_episode(
    model_name: str,
    target: LiveTarget,
    alarm: bool,
    kind: str,
    reason: str,
    run_id: str | None,
    rule: EpisodeRule,
) -> EpisodeStep:
    """Open, continue or close the version's drift episode by the rule (the MonitoringRun rows are its history)."""
    step = advance(
        model_name,
        target.version,
        target.arm,
        alarm,
        kind,
        reason,
        run_id,
        rule,
        db_url=get_settings().db_url,
    )
    get_run_logger().info("episode of v%d: %s (%s)", target.version, step.action, step.reason)
    return step


@task(name="close-stale-episodes", cache_policy=NO_CACHE)
def close_stale_episodes(model_name: str, serving: list[int]) -> list[dict[str, Any]]:
    """Close the episodes of versions that no longer serve."""
    closed = close_stale(model_name, serving, db_url=get_settings().db_url)
    for e in closed:
        get_run_logger().info("episode %s of v%d closed: %s", e.id, e.model_version, e.close_reason)
    return [e.to_payload() for e in closed]


@task(name="load-reference", cache_policy=NO_CACHE)
def load_version_reference(model_name: str, version: int) -> tuple[ReferenceProfile, dict[str, Any] | None]:
    """The version's reference profile and its test metrics (registry metrics["test"])."""
    from nfl_mlops.registry.artifacts import resolve_version
    from nfl_mlops.registry.store import Registry

    settings = get_settings()
    info = Registry.from_settings(settings).get(model_name, version)
    refreshed = latest_rebaseline(settings.mlops_home, model_name, version)
    reference = load_reference(refreshed or resolve_version(info, settings))
    get_run_logger().info(
        "reference of %s v%d: %d test rows, %d descriptor rows, %s embeddings (%s)",
        model_name,
        version,
        int(reference.frame["predicted_label"].notna().sum()),
        len(reference.frame),
        0 if reference.embeddings is None else len(reference.embeddings),
        reference.encoder,
    )
    if refreshed is not None:  # the accepted new normal: its own traffic and its metrics there
        get_run_logger().info("reference refreshed %s (%s)", refreshed.name, reference.meta.get("reason", ""))
        return reference, reference.meta.get("metrics")
    basis = reference.meta.get("basis", "test")  # a retrained version is judged against its recent window
    return reference, info.metrics.get(basis) or info.metrics.get("test")


@task(name="compute-drift", cache_policy=NO_CACHE)
def compute_drift(
    reference: ReferenceProfile,
    window: pd.DataFrame,
    config: MonitoringConfig,
    report_dir: Path,
    name: str,
    timestamp: datetime | None,
    metadata: dict[str, str],
) -> tuple[DriftResult, pd.DataFrame]:
    """Evidently drift of the window's descriptors and predictions vs. the reference (HTML + JSON report)."""
    current = window_descriptors(window, reference)
    result = descriptor_drift(
        reference, current, config, report_dir=report_dir, name=name, timestamp=timestamp, metadata=metadata
    )
    get_run_logger().info(
        "descriptor/prediction drift: %d of %d columns drifted (%s)",
        len(result.drifted_columns),
        len(result.columns),
        list(result.drifted_columns),
    )
    return result, current


@task(name="compute-embedding-drift", cache_policy=NO_CACHE)
def compute_embedding_drift(
    reference: ReferenceProfile, texts: Sequence[str], config: MonitoringConfig
) -> EmbeddingDrift | None:
    """Base-encoder embeddings of a window sample vs. the reference sample (domain classifier AUC)."""
    result = window_embedding_drift(reference, texts, config)
    logger = get_run_logger()
    if result is None:
        logger.info("embedding drift skipped: the reference has no embeddings")
    else:
        logger.info(
            "embedding drift: AUC %.3f (threshold %.2f, null SE %.3f) on %d vs %d texts",
            result.score,
            result.threshold,
            result.null_se,
            result.n_current,
            result.n_reference,
        )
    return result


@task(name="assess-performance", cache_policy=NO_CACHE)
def assess_window_performance(
    reference: ReferenceProfile,
    test_metrics: dict[str, Any] | None,
    window: pd.DataFrame,
    config: MonitoringConfig,
    embedding: EmbeddingDrift | None = None,
) -> PerformanceResult:
    """Observed metrics from feedback labels, else the label-free estimate; the degradation verdict. The
    embedding drift's domain-classifier AUC says whether that estimate can be trusted."""
    result = window_performance(reference, test_metrics, window, config, embedding)
    get_run_logger().info("performance (%s): %s", result.source, result.reason)
    return result


@task(name="publish-evidently-workspace", cache_policy=NO_CACHE)
def publish_to_workspace(
    model_name: str, result: MonitoringResult, name: str, timestamp: datetime | None, metadata: dict[str, str]
) -> list[str]:
    """Add the run's drift snapshot and its summary snapshot to the model's project in the local workspace."""
    from nfl_mlops.monitoring.reference import CATEGORICAL, NUMERICAL
    from nfl_mlops.monitoring.workspace import add_snapshots, summary_snapshot, workspace_path

    snapshots = [s for s in (result.drift.snapshot,) if s is not None]
    snapshots.append(summary_snapshot(result.summary_values(), f"summary-{name}", timestamp, metadata))
    path = workspace_path(get_settings())
    ids = add_snapshots(path, model_name, snapshots, drift_columns=[*NUMERICAL, *CATEGORICAL])
    get_run_logger().info(
        "Evidently workspace %s: snapshots %s (evidently ui --workspace %s)", path, ids, path
    )
    return ids


@task(name="record-monitoring-run", cache_policy=NO_CACHE)
def record_run(
    model_name: str,
    version: int | None,
    start: datetime,
    end: datetime,
    n: int,
    result: DriftResult | None,
    summary: dict[str, Any],
) -> str:
    """A `MonitoringRun` row: the latest verdict for the API, triggers and the demo."""
    return record_verdict(
        model_name,
        version,
        summary,
        n_predictions=n,
        drift_share=result.drift_share if result else 0.0,
        drift_detected=bool(result and result.dataset_drift),
        window=(start, end),
        report_path=str(result.html_path) if result and result.html_path else None,
        db_url=get_settings().db_url,
    )


@task(name="save-reference-profile", cache_policy=NO_CACHE)
def save_reference_profile(
    dataset: Any, probas: dict[str, np.ndarray], encoder: str | None, model_dir: Path
) -> Path:
    """Build the version's reference profile (descriptors, vocabulary, embeddings sample, predictions) and save it.

    From the traffic it was retrained for when the dataset has a recent feedback window, else from the
    training rows and the test split (`reference.reference_rows`)."""
    rows = reference_rows(
        dataset.train,
        dataset.test,
        dataset.recent,
        probas,
        # the feedback of the traffic it was retrained for (the last rows of train and of recent)
        int(
            dataset.description.get(
                "feedback_train_rows_in_window", dataset.description.get("feedback_train_rows", 0)
            )
            or 0
        ),
        n_recent_window=dataset.description.get("feedback_evaluation_rows_in_window"),
    )
    try:
        profile = build_reference(rows.descriptor_texts, rows.texts, rows.proba, rows.labels, encoder=encoder)
    except (OSError, RuntimeError, ValueError) as exc:  # an encoder that cannot load offline: no embeddings
        get_run_logger().warning("reference embeddings skipped (encoder %r: %s)", encoder, exc)
        profile = build_reference(rows.descriptor_texts, rows.texts, rows.proba, rows.labels, encoder=None)
    profile.meta["basis"] = rows.basis
    folder = save_reference(profile, model_dir)
    get_run_logger().info(
        "reference profile (%s): %d evaluation rows, %d embeddings (%s) -> %s",
        rows.basis,
        profile.meta["n_test"],
        profile.meta["n_embeddings"],
        profile.meta["encoder"],
        folder,
    )
    return folder


@task(name="publish-drift-report", cache_policy=NO_CACHE)
def publish_drift_report(result: MonitoringResult, title: str, facts: dict[str, str]) -> str | None:
    """Head the Evidently HTML report with what the check found, and link the Prefect run to its HTTP URL
    (`GET /mlops/reports/{name}` on the API), never to a `file://` path."""
    from prefect.artifacts import create_link_artifact

    from nfl_mlops.monitoring.report_files import add_header, report_url

    path = result.drift.html_path
    if path is None:
        return None
    verdict = "drift detected" if result.drift.dataset_drift else "no drift"
    if result.performance.degraded:
        verdict += ", performance degraded"
    add_header(path, title, {**facts, "verdict": verdict}, list(result.drift.drifted_columns))
    settings = get_settings()
    base = settings.api_url or f"http://{settings.api_host}:{settings.api_port}"
    url = report_url(base, path.name)
    create_link_artifact(
        key="drift-report-html",
        link=url,
        link_text=f"Evidently report: {title}",
        description=f"{verdict}; JSON: {report_url(base, path.with_suffix('.json').name)}",
    )
    columns = list(result.drift.columns)
    if result.embedding is not None and all(c.kind != "emb" for c in columns):
        columns.append(result.embedding.as_column())
    if columns:  # the chart: inline in the artifact, and beside the report for the API to serve
        import base64

        from prefect.artifacts import create_markdown_artifact

        from nfl_mlops.registry.plots import drift_signals_png

        png = drift_signals_png(columns, f"{title}: {verdict}")
        path.with_suffix(".png").write_bytes(png)
        drifted = [c.column for c in columns if c.drifted]
        create_markdown_artifact(
            key="drift-signals",
            markdown="\n".join(
                [
                    f"# Drift per signal: {title}",
                    "",
                    f"{verdict}; drifted: {', '.join(drifted) or 'none'}. [Evidently report]({url}) · "
                    f"[chart]({report_url(base, path.with_suffix('.png').name)})",
                    "",
                    f"![drift per signal](data:image/png;base64,{base64.b64encode(png).decode('ascii')})",
                ]
            ),
            description=f"{verdict}: each signal's score against its threshold",
        )
    return url


@task(name="accept-new-normal", cache_policy=NO_CACHE)
def accept_new_normal(
    model_name: str, dataset_dir: str, episode_id: str, max_drop: float, encoder: str | None
) -> dict[str, Any]:
    """After a retraining for a drift episode was rejected: does the serving champion hold on the drifted
    traffic (its macro-F1 on the labelled recent window within `max_drop` of what it is monitored
    against)? Then that traffic becomes its reference (a refreshed reference beside the registry; the
    version's folder never changes) and the episode closes: the drift is the new normal, no model is
    better for it. Otherwise the episode closes as unresolved (its one retraining is spent; the next alarm
    opens a new one, retrained on the labels gathered since), with a warning for a person to look.
    """
    from datetime import UTC

    from nfl_mlops.data.datasets import TrainingData
    from nfl_mlops.modeling.metrics import evaluate
    from nfl_mlops.modeling.predictor import load_as_served
    from nfl_mlops.monitoring import episodes as ep
    from nfl_mlops.monitoring.reference import MIN_RECENT_REFERENCE
    from nfl_mlops.registry.artifacts import resolve_version
    from nfl_mlops.registry.store import Registry

    settings = get_settings()
    logger = get_run_logger()
    data = TrainingData.load(Path(dataset_dir))
    # the champion trained on none of the episode's feedback: every labelled row of the window, whatever
    # role the retraining gave it, is out of sample for it
    n_train = int(data.description.get("feedback_train_rows_in_window") or 0)
    n_eval = int(data.description.get("feedback_evaluation_rows_in_window") or 0)
    window = pd.concat(
        [
            data.train.tail(n_train) if n_train else data.train.iloc[:0],
            data.recent.tail(n_eval) if n_eval else data.recent.iloc[:0],
        ],
        ignore_index=True,
    )
    champion = Registry.from_settings(settings).get(model_name, "champion")

    def unresolved(why: str) -> dict[str, Any]:
        # one retraining per episode: this one is spent. Closing it (not leaving it open for good) lets the
        # next alarm open a new episode whose retraining has the labels gathered since.
        reason = (
            f"unresolved: no retrained model beat v{champion.version} and {why}; a person should look "
            "(the next alarm opens a new episode, retrained with the labels gathered since)"
        )
        ep.close_episode(episode_id, reason, settings.db_url)
        logger.warning("episode %s closed: %s", episode_id, reason)
        return {"version": champion.version, "accepted": False, "reason": reason}

    if len(window) < MIN_RECENT_REFERENCE:
        return unresolved(
            f"its hold could not be judged on {len(window)} labelled rows (< {MIN_RECENT_REFERENCE})"
        )
    current, monitored_against = load_version_reference.fn(model_name, champion.version)
    # on the runtime that serves it: the refreshed reference calibrates the label-free estimate on the
    # confidences the replicas log
    proba = load_as_served(resolve_version(champion, settings)).predict_proba(window["text"].tolist())
    recent = evaluate(window["label"].tolist(), proba).as_dict()
    if not holds_on(recent, monitored_against, max_drop):
        return unresolved(
            f"it does not hold on the drifted traffic (macro-F1 {recent['macro_f1']:.3f} on {len(window)} rows vs "
            f"{(monitored_against or {}).get('macro_f1', float('nan')):.3f})"
        )
    texts, labels = window["text"].tolist(), window["label"].tolist()
    kwargs: dict[str, Any] = {"train_descriptors": False, "vocabulary": current.vocabulary}
    try:
        profile = build_reference([], texts, proba, labels, encoder=encoder, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        logger.warning("refreshed reference without embeddings (encoder %r: %s)", encoder, exc)
        profile = build_reference([], texts, proba, labels, encoder=None, **kwargs)
    reason = (
        f"v{champion.version} holds on the drifted traffic (macro-F1 {recent['macro_f1']:.3f} on "
        f"{len(window)} labelled rows vs {monitored_against['macro_f1']:.3f} it was monitored against, "
        f"within {max_drop:g}) and no retrained model beat it: the new normal, accepted"
    )
    profile.meta.update(basis="recent", metrics=recent, reason=reason, episode_id=episode_id)
    folder = rebaseline_root(settings.mlops_home, model_name, champion.version) / datetime.now(UTC).strftime(
        "%Y%m%dT%H%M%S%f"
    )
    save_reference(profile, folder)
    ep.close_episode(episode_id, reason, settings.db_url)
    logger.info("episode %s closed: %s; reference refreshed -> %s", episode_id, reason, folder)
    return {
        "version": champion.version,
        "accepted": True,
        "reason": reason,
        "reference": str(folder),
        "recent": recent,
    }
