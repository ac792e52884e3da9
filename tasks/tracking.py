"""Tracking tasks: open and close the experiment run (W&B offline by default + a DB row)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from nfl_mlops import LABELS
from nfl_mlops.tracking.experiments import ExperimentTracker


@task(name="start-tracking", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 5])
def start_tracking(
    name: str,
    config: Mapping[str, Any],
    tags: Sequence[str],
    job_type: str = "train",
    group: str | None = None,
) -> ExperimentTracker:
    tracker = ExperimentTracker()
    tracker.start(name, config=config, tags=tags, job_type=job_type, group=group)
    return tracker


@task(name="draw-model-plots", cache_policy=NO_CACHE)
def draw_model_plots(
    model_dir: Path,
    y_true: Sequence[str],
    proba: Any,
    losses: Sequence[tuple[int, float]],
    title: str,
    f1: Mapping[str, float] | None = None,
    baseline_f1: Mapping[str, float] | None = None,
    recent: tuple[Sequence[str], Any] | None = None,
    val_history: Sequence[Mapping[str, float]] | None = None,
    best_step: int | None = None,
) -> dict[str, Path]:
    """Confusion matrix, reliability diagram, F1 per class beside the baseline (test split), the recent
    window's confusion matrix and the training-loss curve (with the validation macro-F1 and the kept step)
    as PNGs in the model folder: registration copies them and the model card links them."""
    from prefect.artifacts import create_markdown_artifact

    from nfl_mlops.registry.plots import plots_markdown, write_model_plots

    plots = write_model_plots(
        model_dir,
        y_true=list(y_true),
        proba=proba,
        loss_history=list(losses),
        title=title,
        f1=f1,
        baseline_f1=baseline_f1,
        recent=(list(recent[0]), recent[1]) if recent is not None else None,
        val_history=val_history,
        best_step=best_step,
    )
    if plots:  # the Prefect UI renders them inline (data URIs): the worker's files are not reachable from it
        create_markdown_artifact(
            key="model-plots",
            markdown=plots_markdown(plots, title),
            description=f"{title}: confusion matrices, reliability, F1 beside the baseline, training loss",
        )
    return plots


@task(name="finish-tracking", cache_policy=NO_CACHE)
def finish_tracking(
    tracker: ExperimentTracker,
    summary: Mapping[str, Any],
    misclassified: Sequence[Sequence[Any]] = (),
    confusion: tuple[Sequence[int], Sequence[int]] | None = None,
    artifacts: Sequence[Mapping[str, Any]] = (),
    images: Mapping[str, Any] | None = None,
    tables: Mapping[str, tuple[Sequence[str], Sequence[Sequence[Any]]]] | None = None,
) -> list[str]:
    """Log the evaluation extras and close the run; returns the logged artifact references.

    Args:
        confusion: (true class ids, predicted class ids) of the test split, for the W&B chart.
        artifacts: keyword arguments of `ExperimentTracker.log_artifact` (name, type, path, ...).
        images: {key: PNG path} logged as W&B images (the model card's plots).
        tables: {key: (columns, rows)} logged as W&B tables (e.g. the explained mistakes).
    """
    for key, path in (images or {}).items():
        tracker.log_image(f"plots/{key}", path)
    if misclassified:
        tracker.log_table("misclassified", ["text", "true", "predicted", "confidence"], misclassified)
    for key, (columns, rows) in (tables or {}).items():
        if rows:
            tracker.log_table(key, list(columns), [list(r) for r in rows])
    if confusion is not None:
        tracker.log_confusion_matrix("test/confusion_matrix", confusion[0], confusion[1], LABELS)
    refs = [ref for spec in artifacts if (ref := tracker.log_artifact(**spec)) is not None]
    tracker.finish(summary)
    return refs
