"""Retraining triggers: cooldown and daily budget (pure), and the job records they read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from nfl_mlops.db import RetrainingJob, session_scope, utcnow

AUTOMATIC = ("automation", "schedule")
COUNTED = ("scheduled", "running", "completed", "rejected", "rolled_back")


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
) -> TriggerDecision:
    """May a retraining start now? Manual and API requests always may; automatic ones respect a
    cooldown since the last automatic start (one drift episode -> one retraining) and a daily budget.
    """
    if trigger not in AUTOMATIC:
        return TriggerDecision(True, f"{trigger} request")
    started = [j for j in history if j.trigger in AUTOMATIC and j.status in COUNTED]
    recent = [j for j in started if now - j.created_at < cooldown]
    if recent:
        last = max(j.created_at for j in recent)
        wait = cooldown - (now - last)
        return TriggerDecision(False, f"cooldown: last automatic retraining started {last.isoformat()}, "
                                      f"next allowed in {wait.total_seconds() / 60:.0f} min")
    today = [j for j in started if now - j.created_at < timedelta(days=1)]
    if len(today) >= daily_budget:
        return TriggerDecision(False, f"daily budget of {daily_budget} automatic retrainings used")
    return TriggerDecision(True, "no retraining in the cooldown window and budget left")


def job_history(model_name: str, exclude: str | None = None, db_url: str | None = None,
                days: float = 2.0) -> list[JobRecord]:
    since = utcnow() - timedelta(days=days)
    with session_scope(db_url) as s:
        rows = s.scalars(select(RetrainingJob).where(RetrainingJob.model_name == model_name,
                                                     RetrainingJob.created_at >= since))
        return [JobRecord(r.id, _aware(r.created_at), r.trigger, r.status) for r in rows if r.id != exclude]


def _aware(ts: datetime) -> datetime:
    from datetime import UTC

    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def create_job(model_name: str, reason: str, trigger: str, params: dict[str, Any], flow_run_id: str | None = None,
               db_url: str | None = None) -> str:
    with session_scope(db_url) as s:
        row = RetrainingJob(model_name=model_name, reason=reason, trigger=trigger, params=params,
                            flow_run_id=flow_run_id, status="scheduled")
        s.add(row)
        s.flush()
        return row.id


def update_job(job_id: str, status: str, result: dict[str, Any] | None = None, flow_run_id: str | None = None,
               db_url: str | None = None) -> None:
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
