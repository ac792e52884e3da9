"""Retraining triggers without an episode (the schedule): cooldown, failure back-off and daily budget (pure),
and the job records they read. Drift-triggered retraining is admitted by its episode
(`nfl_mlops.monitoring.episodes.claim`); the budget and back-off apply to it too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from nfl_mlops.db import MonitoringRun, RetrainingJob, as_utc, session_scope, utcnow
from nfl_mlops.monitoring.episodes import backoff
from nfl_mlops.monitoring.thresholds import RETRAIN_BACKOFF_BASE_MINUTES, RETRAIN_BACKOFF_MAX_MINUTES

AUTOMATIC = ("automation", "schedule")
COUNTED = ("scheduled", "running", "completed", "rejected", "rolled_back", "failed")
"""Job states that used an automatic start (a failed retraining counts: it is retried only after a back-off)."""


@dataclass(frozen=True)
class JobRecord:
    id: str
    created_at: datetime
    trigger: str
    status: str


@dataclass(frozen=True)
class TriggerDecision:
    allowed: bool
    reason: str


def retraining_allowed(
    now: datetime,
    trigger: str,
    history: Sequence[JobRecord],
    cooldown: timedelta,
    daily_budget: int,
    backoff_base_minutes: float = RETRAIN_BACKOFF_BASE_MINUTES,
    backoff_max_minutes: float = RETRAIN_BACKOFF_MAX_MINUTES,
) -> TriggerDecision:
    """May a retraining start now? Manual and API requests always may; automatic ones respect a
    cooldown since the last automatic start that did not fail, an exponential back-off after consecutive
    failed ones (bounded), and a daily budget that failed starts count in.
    """
    if trigger not in AUTOMATIC:
        return TriggerDecision(True, f"{trigger} request")
    started = sorted(
        (j for j in history if j.trigger in AUTOMATIC and j.status in COUNTED),
        key=lambda j: j.created_at,
        reverse=True,
    )
    failures = 0
    for j in started:
        if j.status != "failed":
            break
        failures += 1
    if failures:
        wait = backoff(failures, backoff_base_minutes, backoff_max_minutes)
        last = started[0].created_at
        if now - last < wait:
            left = wait - (now - last)
            return TriggerDecision(
                False,
                f"back-off: {failures} failed automatic retraining(s) in a row, the last "
                f"{last.isoformat()}; next allowed in {left.total_seconds() / 60:.0f} min",
            )
    recent = [j for j in started if j.status != "failed" and now - j.created_at < cooldown]
    if recent:
        last = max(j.created_at for j in recent)
        wait = cooldown - (now - last)
        return TriggerDecision(
            False,
            f"cooldown: last automatic retraining started {last.isoformat()}, "
            f"next allowed in {wait.total_seconds() / 60:.0f} min",
        )
    today = [j for j in started if now - j.created_at < timedelta(days=1)]
    if len(today) >= daily_budget:
        return TriggerDecision(False, f"daily budget of {daily_budget} automatic retrainings used")
    return TriggerDecision(True, "no retraining in the cooldown window and budget left")


def job_history(
    model_name: str, exclude: str | None = None, db_url: str | None = None, days: float = 2.0
) -> list[JobRecord]:
    since = utcnow() - timedelta(days=days)
    with session_scope(db_url) as s:
        rows = s.scalars(
            select(RetrainingJob).where(
                RetrainingJob.model_name == model_name, RetrainingJob.created_at >= since
            )
        )
        return [JobRecord(r.id, as_utc(r.created_at), r.trigger, r.status) for r in rows if r.id != exclude]


def create_job(
    model_name: str,
    reason: str,
    trigger: str,
    params: dict[str, Any],
    flow_run_id: str | None = None,
    db_url: str | None = None,
) -> str:
    with session_scope(db_url) as s:
        row = RetrainingJob(
            model_name=model_name,
            reason=reason,
            trigger=trigger,
            params=params,
            flow_run_id=flow_run_id,
            status="scheduled",
        )
        s.add(row)
        s.flush()
        return row.id


def update_job(
    job_id: str,
    status: str,
    result: dict[str, Any] | None = None,
    flow_run_id: str | None = None,
    db_url: str | None = None,
) -> None:
    with session_scope(db_url) as s:
        row = s.get(RetrainingJob, job_id)
        if row is None:
            return
        row.status = status
        if flow_run_id:
            row.flow_run_id = flow_run_id
        if result is not None:
            row.result = result
        if status in ("completed", "rejected", "failed", "skipped"):
            row.finished_at = utcnow()


def record_verdict(
    model_name: str,
    version: int | None,
    summary: dict[str, Any],
    n_predictions: int = 0,
    drift_share: float = 0.0,
    drift_detected: bool = False,
    window: tuple[datetime, datetime] | None = None,
    report_path: str | None = None,
    db_url: str | None = None,
) -> str:
    """One monitoring verdict as a `MonitoringRun` row (what triggers, the API and the demo read as the
    latest state): the monitoring flow's checks and the SDK's `monitor_model_performance` both write here."""
    with session_scope(db_url) as s:
        row = MonitoringRun(
            model_name=model_name,
            model_version=version,
            window_start=window[0] if window else None,
            window_end=window[1] if window else None,
            n_predictions=n_predictions,
            drift_share=drift_share,
            drift_detected=drift_detected,
            summary=summary,
            report_path=report_path,
        )
        s.add(row)
        s.flush()
        return row.id


def recent_verdicts(model_name: str, limit: int = 5, db_url: str | None = None) -> list[MonitoringRun]:
    """The newest monitoring verdicts of a model (newest first), detached from the session."""
    with session_scope(db_url) as s:
        rows = list(
            s.scalars(
                select(MonitoringRun)
                .where(MonitoringRun.model_name == model_name)
                .order_by(MonitoringRun.created_at.desc())
                .limit(limit)
            )
        )
        s.expunge_all()
        return rows
