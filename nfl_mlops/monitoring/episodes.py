"""Drift episodes: when repeated checks open one, when it closes, and the one retraining it may start.

The rule (pure, `EpisodeRule.decide`) controls repeated looks: one alarming check is not an episode.
An episode of a version opens when

- the last `persistence` checks of that version all alarmed (drift or degradation), or
- one check alarmed strongly (a drift share of at least `strong_share`, e.g. most signal groups at once),

and an open episode closes when the last `clear_checks` checks were all clear, or when the version no
longer serves (a retrained version took over). Hourly checks of 24-hour windows overlap, so their
verdicts are correlated; the false-episode rate and the detection delay of this rule are measured on
the corpus by `bench/false_alarms.py`.

An episode starts at most one retraining: the retraining flow claims the episode by compare-and-set
(`claim`: `retraining_job_id` set only where it is NULL and the back-off has elapsed), which holds under
concurrent events on SQLite and PostgreSQL alike. A failed retraining releases the claim and backs off
exponentially (`backoff`, bounded); a rejected or rolled-back one keeps it (the episode had its retraining).
At most one episode per version is open at a time (a unique key, `open_key`, that is NULL once closed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from nfl_mlops.db import Episode, MonitoringRun, as_utc, session_scope, utcnow
from nfl_mlops.monitoring.thresholds import (
    EPISODE_CLEAR_CHECKS,
    EPISODE_PERSISTENCE,
    EPISODE_STRONG_SHARE,
    RETRAIN_BACKOFF_BASE_MINUTES,
    RETRAIN_BACKOFF_MAX_MINUTES,
    RETRAIN_MAX_ATTEMPTS,
)

OPEN, CLOSED = "open", "closed"


@dataclass(frozen=True)
class Check:
    """One check's verdict for one version (what the rule reads)."""

    alarm: bool
    drift_share: float = 0.0
    degraded: bool = False


@dataclass(frozen=True)
class EpisodeRule:
    """When checks open and close an episode (see the module docstring)."""

    persistence: int = EPISODE_PERSISTENCE
    strong_share: float | None = EPISODE_STRONG_SHARE  # None: only persistence opens
    clear_checks: int = EPISODE_CLEAR_CHECKS

    def __post_init__(self) -> None:
        if self.persistence < 1 or self.clear_checks < 1:
            raise ValueError("persistence and clear_checks must be >= 1")
        if self.strong_share is not None and not 0.0 < self.strong_share <= 1.0:
            raise ValueError(f"strong_share must be in (0, 1], got {self.strong_share}")

    def should_open(self, checks: Sequence[Check]) -> tuple[bool, str]:
        """Open an episode after these checks (oldest first, the current one last)?"""
        if not checks or not checks[-1].alarm:
            return False, "the latest check is clear"
        last = checks[-1]
        if self.strong_share is not None and last.drift_share >= self.strong_share:
            return (
                True,
                f"drift share {last.drift_share:.2f} >= {self.strong_share:.2f} (strong) in one check",
            )
        streak = _streak(checks, alarm=True)
        if streak >= self.persistence:
            return True, f"{streak} consecutive alarming checks (persistence {self.persistence})"
        return False, f"{streak} of {self.persistence} consecutive alarming checks needed"

    def should_close(self, checks: Sequence[Check]) -> tuple[bool, str]:
        """Close an open episode after these checks (oldest first, the current one last)?"""
        streak = _streak(checks, alarm=False)
        if streak >= self.clear_checks:
            return True, f"signals clear on {streak} consecutive checks"
        return False, f"{streak} of {self.clear_checks} consecutive clear checks needed to close"

    def to_payload(self) -> dict[str, Any]:
        return {
            "persistence": self.persistence,
            "strong_share": self.strong_share,
            "clear_checks": self.clear_checks,
        }


def _streak(checks: Sequence[Check], alarm: bool) -> int:
    n = 0
    for c in reversed(checks):
        if c.alarm != alarm:
            break
        n += 1
    return n


def simulate(checks: Sequence[Check], rule: EpisodeRule = EpisodeRule()) -> list[tuple[int, int | None]]:
    """(opened at check i, closed at check j or None) of the episodes a sequence of checks makes (pure)."""
    out: list[tuple[int, int | None]] = []
    opened: int | None = None
    for i in range(len(checks)):
        history = checks[: i + 1]
        if opened is None:
            if rule.should_open(history)[0]:
                opened = i
        elif rule.should_close(history[opened + 1 :])[0]:
            out.append((opened, i))
            opened = None
    if opened is not None:
        out.append((opened, None))
    return out


def backoff(
    attempts: int,
    base_minutes: float = RETRAIN_BACKOFF_BASE_MINUTES,
    max_minutes: float = RETRAIN_BACKOFF_MAX_MINUTES,
) -> timedelta:
    """Wait after the `attempts`-th failed retraining: base * 2^(attempts-1), at most `max_minutes` (pure)."""
    if attempts <= 0:
        return timedelta(0)
    return timedelta(minutes=min(base_minutes * 2 ** (attempts - 1), max_minutes))


# --------------------------------------------------------------------------------------------
# State DB
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeInfo:
    id: str
    model_name: str
    model_version: int
    arm: str
    status: str
    kind: str
    reason: str
    opened_at: datetime
    closed_at: datetime | None
    close_reason: str | None
    n_alarms: int
    retraining_job_id: str | None
    attempts: int
    next_attempt_at: datetime | None
    retrained_version: int | None
    first_run_id: str | None
    last_run_id: str | None

    def to_payload(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


def _aware(ts: datetime | None) -> datetime | None:
    return None if ts is None else as_utc(ts)


def _info(r: Episode) -> EpisodeInfo:
    return EpisodeInfo(
        id=r.id,
        model_name=r.model_name,
        model_version=r.model_version,
        arm=r.arm,
        status=r.status,
        kind=r.kind,
        reason=r.reason,
        opened_at=cast(datetime, _aware(r.opened_at)),
        closed_at=_aware(r.closed_at),
        close_reason=r.close_reason,
        n_alarms=r.n_alarms,
        retraining_job_id=r.retraining_job_id,
        attempts=r.attempts,
        next_attempt_at=_aware(r.next_attempt_at),
        retrained_version=r.retrained_version,
        first_run_id=r.first_run_id,
        last_run_id=r.last_run_id,
    )


def open_key(model_name: str, version: int) -> str:
    return f"{model_name}/v{version}"


def recent_checks(
    model_name: str, version: int, limit: int, db_url: str | None = None, since: datetime | None = None
) -> list[Check]:
    """The last `limit` judged checks of a version (oldest first), from the MonitoringRun rows."""
    q = (
        select(MonitoringRun)
        .where(MonitoringRun.model_name == model_name, MonitoringRun.model_version == version)
        .order_by(MonitoringRun.created_at.desc())
        .limit(limit)
    )
    if since is not None:
        q = q.where(MonitoringRun.created_at >= since)
    with session_scope(db_url) as s:
        rows = list(s.scalars(q))
    out = []
    for r in reversed(rows):
        summary = dict(r.summary or {})
        if summary.get("skipped"):
            continue
        degraded = bool(summary.get("performance_degraded"))
        out.append(
            Check(
                alarm=bool(summary.get("alarm", r.drift_detected or degraded)),
                drift_share=float(r.drift_share or 0.0),
                degraded=degraded,
            )
        )
    return out


def open_episode(
    model_name: str,
    version: int,
    arm: str,
    kind: str,
    reason: str,
    run_id: str | None,
    db_url: str | None = None,
) -> tuple[EpisodeInfo, bool]:
    """Open the version's episode; (the open episode, True when this call opened it). Concurrent callers
    get the same row: the unique `open_key` rejects a second open episode of a version."""
    try:
        with session_scope(db_url) as s:
            row = Episode(
                model_name=model_name,
                model_version=version,
                arm=arm,
                open_key=open_key(model_name, version),
                status=OPEN,
                kind=kind,
                reason=reason,
                first_run_id=run_id,
                last_run_id=run_id,
            )
            s.add(row)
            s.flush()
            return _info(row), True
    except IntegrityError:
        found = open_episode_of(model_name, version, db_url)
        if found is None:  # closed in between: try once more
            return open_episode(model_name, version, arm, kind, reason, run_id, db_url)
        return found, False


def open_episode_of(model_name: str, version: int, db_url: str | None = None) -> EpisodeInfo | None:
    with session_scope(db_url) as s:
        row = s.scalar(select(Episode).where(Episode.open_key == open_key(model_name, version)))
        return _info(row) if row else None


def open_episodes(model_name: str, db_url: str | None = None) -> list[EpisodeInfo]:
    with session_scope(db_url) as s:
        return [
            _info(r)
            for r in s.scalars(
                select(Episode)
                .where(Episode.model_name == model_name, Episode.status == OPEN)
                .order_by(Episode.opened_at)
            )
        ]


def list_episodes(model_name: str, limit: int = 10, db_url: str | None = None) -> list[EpisodeInfo]:
    with session_scope(db_url) as s:
        return [
            _info(r)
            for r in s.scalars(
                select(Episode)
                .where(Episode.model_name == model_name)
                .order_by(Episode.opened_at.desc())
                .limit(limit)
            )
        ]


def get_episode(episode_id: str, db_url: str | None = None) -> EpisodeInfo | None:
    with session_scope(db_url) as s:
        row = s.get(Episode, episode_id)
        return _info(row) if row else None


def note_alarm(episode_id: str, run_id: str | None, db_url: str | None = None) -> None:
    """Count another alarming check in an open episode."""
    with session_scope(db_url) as s:
        s.execute(
            update(Episode)
            .where(Episode.id == episode_id, Episode.status == OPEN)
            .values(n_alarms=Episode.n_alarms + 1, last_run_id=run_id, updated_at=utcnow())
        )


def close_episode(
    episode_id: str, reason: str, db_url: str | None = None, retrained_version: int | None = None
) -> bool:
    """Close an open episode (False when it was not open)."""
    values: dict[str, Any] = {
        "status": CLOSED,
        "open_key": None,
        "closed_at": utcnow(),
        "close_reason": reason,
        "updated_at": utcnow(),
    }
    if retrained_version is not None:
        values["retrained_version"] = retrained_version
    with session_scope(db_url) as s:
        res = s.execute(
            update(Episode).where(Episode.id == episode_id, Episode.status == OPEN).values(**values)
        )
        return res.rowcount == 1  # type: ignore[attr-defined]


def retry_due(episode: EpisodeInfo, now: datetime, max_attempts: int = RETRAIN_MAX_ATTEMPTS) -> bool:
    """May the episode start a (first or next) retraining now? (pure)"""
    if episode.status != OPEN or episode.retraining_job_id is not None or episode.attempts >= max_attempts:
        return False
    return episode.next_attempt_at is None or episode.next_attempt_at <= now


def claim(
    episode_id: str,
    job_id: str,
    now: datetime | None = None,
    max_attempts: int = RETRAIN_MAX_ATTEMPTS,
    db_url: str | None = None,
) -> bool:
    """Compare-and-set: make `job_id` the episode's retraining; True for exactly one concurrent caller.

    Refused when the episode is closed, already has a retraining, is backing off after a failure, or
    used its `max_attempts`."""
    now = now or utcnow()
    with session_scope(db_url) as s:
        res = s.execute(
            update(Episode)
            .where(
                Episode.id == episode_id,
                Episode.status == OPEN,
                Episode.retraining_job_id.is_(None),
                Episode.attempts < max_attempts,
                (Episode.next_attempt_at.is_(None)) | (Episode.next_attempt_at <= now),
            )
            .values(retraining_job_id=job_id, updated_at=now)
        )
        return res.rowcount == 1  # type: ignore[attr-defined]


def traffic_since(episode: EpisodeInfo, db_url: str | None = None) -> datetime | None:
    """Start of the window of the episode's first alarming check: the traffic its retraining is for
    (None when that check is unknown)."""
    if not episode.first_run_id:
        return None
    with session_scope(db_url) as s:
        run = s.get(MonitoringRun, episode.first_run_id)
        return _aware(run.window_start) if run is not None else None


def release_failed(
    episode_id: str,
    job_id: str,
    now: datetime | None = None,
    base_minutes: float = RETRAIN_BACKOFF_BASE_MINUTES,
    max_minutes: float = RETRAIN_BACKOFF_MAX_MINUTES,
    db_url: str | None = None,
) -> EpisodeInfo | None:
    """A failed retraining gives the episode back, counted, with an exponential back-off before the next."""
    now = now or utcnow()
    with session_scope(db_url) as s:
        row = s.get(Episode, episode_id, with_for_update=True)
        if row is None or row.retraining_job_id != job_id:
            return _info(row) if row else None
        row.attempts += 1
        row.retraining_job_id = None
        row.next_attempt_at = now + backoff(row.attempts, base_minutes, max_minutes)
        row.updated_at = now
        s.flush()
        return _info(row)


@dataclass(frozen=True)
class EpisodeStep:
    """What one check did to its version's episode: opened | continued | closed | open | pending | clear."""

    action: str
    reason: str
    episode: EpisodeInfo | None = None
    emit: bool = False  # start (or retry) the episode's retraining: the flow emits the alarm event

    def to_payload(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "emit": self.emit,
            "episode": self.episode.to_payload() if self.episode else None,
        }


def advance(
    model_name: str,
    version: int,
    arm: str,
    alarm: bool,
    kind: str,
    reason: str,
    run_id: str | None,
    rule: EpisodeRule = EpisodeRule(),
    db_url: str | None = None,
    now: datetime | None = None,
) -> EpisodeStep:
    """Apply the rule to a version after its check `run_id` was recorded (the MonitoringRun rows are the history)."""
    now = now or utcnow()
    current = open_episode_of(model_name, version, db_url)
    if current is not None:
        if alarm:
            note_alarm(current.id, run_id, db_url)
            current = get_episode(current.id, db_url) or current
            due = retry_due(current, now)
            return EpisodeStep(
                "continued",
                "the episode is open"
                + (
                    "; its retraining is due"
                    if due
                    else f"; retraining {current.retraining_job_id or 'backing off / attempts used'}"
                ),
                current,
                emit=due,
            )
        # the trailing clear streak ends at the episode's last alarm, so no check before it counts
        close, why = rule.should_close(recent_checks(model_name, version, rule.clear_checks, db_url))
        if close and close_episode(current.id, why, db_url):
            return EpisodeStep("closed", why, get_episode(current.id, db_url))
        return EpisodeStep("open", why, current)
    checks = recent_checks(model_name, version, max(rule.persistence, 1), db_url)
    if alarm and not checks:  # the run was not recorded: judge the current check alone
        checks = [Check(alarm=True)]
    should, why = rule.should_open(checks) if alarm else (False, "the check is clear")
    if not should:
        return EpisodeStep("pending" if alarm else "clear", why)
    episode, created = open_episode(model_name, version, arm, kind, f"{reason} ({why})", run_id, db_url)
    return EpisodeStep(
        "opened" if created else "continued", why, episode, emit=created or retry_due(episode, now)
    )


def close_stale(model_name: str, serving: Sequence[int], db_url: str | None = None) -> list[EpisodeInfo]:
    """Close the open episodes of versions that no longer serve (a retrained version took over)."""
    closed = []
    for e in open_episodes(model_name, db_url):
        if e.model_version not in serving:
            why = f"v{e.model_version} no longer serves (serving: {', '.join(f'v{v}' for v in serving)})"
            newer = max((v for v in serving if v > e.model_version), default=None)
            if close_episode(e.id, why, db_url, retrained_version=e.retrained_version or newer):
                closed.append(cast(EpisodeInfo, get_episode(e.id, db_url)))
    return closed
