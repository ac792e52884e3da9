"""Drift tasks: read the prediction-log window, compare it with the version's reference profile."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.db import MonitoringRun, session_scope
from nfl_mlops.monitoring.drift import DriftConfig, DriftResult, detect_drift
from nfl_mlops.monitoring.feedback import prediction_window
from nfl_mlops.monitoring.reference import CATEGORICAL, NUMERICAL, load_reference, monitoring_frame
from nfl_mlops.registry.store import Registry
from nfl_mlops.settings import get_settings


@task(name="load-window", cache_policy=NO_CACHE)
def load_window(model_name: str, start: datetime, end: datetime) -> pd.DataFrame:
    frame = prediction_window(model_name, start=start, end=end, db_url=get_settings().db_url)
    get_run_logger().info("window %s .. %s: %d predictions", start.isoformat(), end.isoformat(), len(frame))
    return frame


@task(name="compute-drift", cache_policy=NO_CACHE)
def compute_drift(model_name: str, version: int, window: pd.DataFrame, report_dir: Path, name: str,
                  share_threshold: float) -> DriftResult:
    """Evidently drift of the window's descriptors and predictions vs. the version's reference."""
    info = Registry.from_settings().get(model_name, version)
    reference = load_reference(Path(info.path))
    current = monitoring_frame(window["text"].tolist(), window["label"].tolist(), window["confidence"].tolist(),
                               reference.vocabulary)
    result = detect_drift(reference.frame, current, list(NUMERICAL), list(CATEGORICAL),
                          DriftConfig(share_threshold=share_threshold), report_dir=report_dir, name=name)
    get_run_logger().info("drift share %.2f (%s); drifted: %s", result.drift_share,
                          "DRIFT" if result.dataset_drift else "ok", list(result.drifted_columns))
    return result


@task(name="record-monitoring-run", cache_policy=NO_CACHE)
def record_run(model_name: str, version: int | None, start: datetime, end: datetime, n: int,
               result: DriftResult | None, summary: dict[str, Any]) -> str:
    with session_scope(get_settings().db_url) as s:
        row = MonitoringRun(
            model_name=model_name, model_version=version, window_start=start, window_end=end, n_predictions=n,
            drift_share=result.drift_share if result else 0.0, drift_detected=bool(result and result.dataset_drift),
            summary=summary, report_path=str(result.html_path) if result and result.html_path else None,
        )
        s.add(row)
        s.flush()
        return row.id
