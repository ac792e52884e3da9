"""What monitoring judges: per live version (and arm), only the predictions it served since its rollout began.

Judging the window's most common version mixed an old version's traffic into the verdict for half a day
after a new one went out (and reported the old one's drift every hour). Here the active rollout (the
one created last at or before the window's end) names the arms that serve traffic and when it began;
each arm's version is judged on its own predictions logged since then. Predictions logged without any
rollout record covering them (backfills, tests that write the log directly) are judged per version as
logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import func, select

from nfl_mlops.db import Prediction, Rollout, get_engine, session_scope
from nfl_mlops.monitoring.feedback import LOG_COLUMNS

COLUMNS = LOG_COLUMNS  # the prediction-log columns monitoring reads (one list, in feedback.py)


@dataclass(frozen=True)
class LiveTarget:
    """One version to judge: the arm it serves on and since when (None: no rollout record covers it)."""

    version: int
    arm: str
    since: datetime | None
    rollout_id: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "arm": self.arm,
            "since": self.since.isoformat() if self.since else None,
            "rollout_id": self.rollout_id,
        }


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def serving_arms(arms: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(arm, version) of the arms that answer traffic: weight > 0, shadow copies excluded (pure)."""
    out = []
    for name, arm in arms.items():
        if (
            not isinstance(arm, Mapping)
            or arm.get("version") is None
            or name == "shadow"
            or arm.get("shadow")
        ):
            continue
        if float(arm.get("weight", 100.0) or 0.0) > 0:
            out.append((name, int(arm["version"])))
    return out


def live_targets(
    model_name: str, end: datetime, environment: str = "production", db_url: str | None = None
) -> list[LiveTarget]:
    """The versions serving `model_name` at `end` and when their rollout began; [] when no rollout record
    was created by then (the caller then judges the logged versions as they are)."""
    with session_scope(db_url) as s:
        row = s.scalar(
            select(Rollout)
            .where(
                Rollout.model_name == model_name,
                Rollout.environment == environment,
                Rollout.status == "active",
                Rollout.created_at <= end,
            )
            .order_by(Rollout.created_at.desc())
            .limit(1)
        )
        if row is None:  # a backfill before the active rollout: the rollout that was newest then
            row = s.scalar(
                select(Rollout)
                .where(
                    Rollout.model_name == model_name,
                    Rollout.environment == environment,
                    Rollout.created_at <= end,
                )
                .order_by(Rollout.created_at.desc())
                .limit(1)
            )
        if row is None:
            return []
        since = _aware(row.created_at)
        targets: dict[int, LiveTarget] = {}
        for arm, version in serving_arms(dict(row.arms or {})):
            targets.setdefault(version, LiveTarget(version, arm, since, row.id))
        if not targets:
            targets[int(row.version)] = LiveTarget(int(row.version), "stable", since, row.id)
        return sorted(targets.values(), key=lambda t: (t.arm not in ("stable", "a"), t.version))


def logged_versions(
    model_name: str, start: datetime, end: datetime, db_url: str | None = None
) -> dict[int, int]:
    """Served predictions per version logged in [start, end)."""
    q = (
        select(Prediction.model_version, func.count())
        .where(
            Prediction.model_name == model_name,
            Prediction.created_at >= start,
            Prediction.created_at < end,
            Prediction.served.is_(True),
        )
        .group_by(Prediction.model_version)
    )
    with get_engine(db_url).connect() as conn:
        return {int(v): int(n) for v, n in conn.execute(q).all()}


def version_window(
    model_name: str, version: int, start: datetime, end: datetime, db_url: str | None = None
) -> pd.DataFrame:
    """The predictions `version` served for `model_name` in [start, end), oldest first."""
    cols = [getattr(Prediction, c) for c in COLUMNS]
    q = (
        select(*cols)
        .where(
            Prediction.model_name == model_name,
            Prediction.model_version == version,
            Prediction.created_at >= start,
            Prediction.created_at < end,
            Prediction.served.is_(True),
        )
        .order_by(Prediction.created_at)
    )
    with get_engine(db_url).connect() as conn:
        return pd.DataFrame(conn.execute(q).all(), columns=list(COLUMNS))


def targets_in_window(
    model_name: str, start: datetime, end: datetime, db_url: str | None = None
) -> list[tuple[LiveTarget, datetime]]:
    """(target, effective start) per version to judge: max(window start, rollout start)."""
    targets = live_targets(model_name, end, db_url=db_url)
    if not targets:
        counts = logged_versions(model_name, start, end, db_url)
        targets = [LiveTarget(v, "stable", None) for v in sorted(counts, key=lambda v: -counts[v])]
    return [(t, max(start, t.since) if t.since else start) for t in targets]
