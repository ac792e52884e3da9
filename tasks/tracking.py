"""Tracking tasks: open and close the experiment run (W&B offline by default + a DB row)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.tracking.experiments import ExperimentTracker


@task(name="start-tracking", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 5])
def start_tracking(name: str, config: Mapping[str, Any], tags: Sequence[str]) -> ExperimentTracker:
    tracker = ExperimentTracker()
    tracker.start(name, config=config, tags=tags)
    return tracker


@task(name="finish-tracking", cache_policy=NO_CACHE)
def finish_tracking(tracker: ExperimentTracker, summary: Mapping[str, Any],
                    misclassified: Sequence[Sequence[Any]] = ()) -> None:
    if misclassified:
        tracker.log_table("misclassified", ["text", "true", "predicted", "confidence"], misclassified)
    tracker.finish(summary)
