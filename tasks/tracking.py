"""Tracking tasks: open and close the experiment run (W&B offline by default + a DB row)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from nfl_mlops import LABELS
from nfl_mlops.tracking.experiments import ExperimentTracker


@task(name="start-tracking", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 5])
def start_tracking(name: str, config: Mapping[str, Any], tags: Sequence[str], job_type: str = "train",
                   group: str | None = None) -> ExperimentTracker:
    tracker = ExperimentTracker()
    tracker.start(name, config=config, tags=tags, job_type=job_type, group=group)
    return tracker


@task(name="finish-tracking", cache_policy=NO_CACHE)
def finish_tracking(tracker: ExperimentTracker, summary: Mapping[str, Any],
                    misclassified: Sequence[Sequence[Any]] = (),
                    confusion: tuple[Sequence[int], Sequence[int]] | None = None,
                    artifacts: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Log the evaluation extras and close the run; returns the logged artifact references.

    Args:
        confusion: (true class ids, predicted class ids) of the test split, for the W&B chart.
        artifacts: keyword arguments of `ExperimentTracker.log_artifact` (name, type, path, ...).
    """
    if misclassified:
        tracker.log_table("misclassified", ["text", "true", "predicted", "confidence"], misclassified)
    if confusion is not None:
        tracker.log_confusion_matrix("test/confusion_matrix", confusion[0], confusion[1], LABELS)
    refs = [ref for spec in artifacts if (ref := tracker.log_artifact(**spec)) is not None]
    tracker.finish(summary)
    return refs
