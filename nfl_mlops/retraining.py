"""Retraining: start the `retraining/retraining` Prefect deployment, admit a run (its drift episode, the
schedule's cooldown and budget), classify its outcome, list the jobs, and explain what would start one
now. The API (`/mlops/retraining/*`), the SDK, the CLI and the retraining flow call these.

The response models live here (the library does not depend on the serving package; serving imports them).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, Field
from sqlalchemy import select

from nfl_mlops.db import Episode, RetrainingJob, as_utc, session_scope, utcnow
from nfl_mlops.events import prefect_api_url
from nfl_mlops.monitoring import episodes as ep
from nfl_mlops.monitoring.thresholds import (
    RETRAIN_BACKOFF_BASE_MINUTES,
    RETRAIN_COOLDOWN_MINUTES,
    RETRAIN_DAILY_BUDGET,
    RETRAIN_MAX_ATTEMPTS,
    RETRAIN_MAX_OPEN_HOURS,
)
from nfl_mlops.monitoring.triggers import (
    create_job,
    job_history,
    recent_verdicts,
    retraining_allowed,
    update_job,
)

log = logging.getLogger(__name__)

RETRAINING_DEPLOYMENT = "retraining/retraining"
PREFECT_PING_S = 3.0
PREFECT_SUBMIT_S = 20.0
PROJECT_ROOT_ENV = "NFL_MLOPS_ROOT"
"""The project folder holding `prefect.yaml` (what the deployments' pull step uses too)."""


class RetrainingJobOut(BaseModel):
    job_id: str = Field(..., description="Id of the retraining job.")
    model_name: str = Field(..., description="Model retrained.")
    reason: str = Field(..., description="Why.")
    trigger: str = Field(..., description="api, manual, schedule or automation.")
    status: str = Field(
        ..., description="scheduled, running, completed, rejected, rolled_back, skipped or failed."
    )
    flow_run_id: str | None = Field(None, description="The retraining flow run.")
    params: dict[str, Any] = Field(..., description="Parameters of the run.")
    result: dict[str, Any] = Field(..., description="Outcome (version, gate, deployment) or the error.")
    created_at: datetime = Field(..., description="When it was requested.")
    finished_at: datetime | None = Field(None, description="When it ended.")


class TriggerCheckOut(BaseModel):
    model_name: str = Field(..., description="The model.")
    would_trigger: bool = Field(..., description="An automatic retraining would start now.")
    reasons: list[str] = Field(..., description="Why it would, or would not.")
    latest_monitoring: dict[str, Any] | None = Field(None, description="The latest monitoring run's verdict.")
    automatic: dict[str, Any] = Field(
        ..., description="Episode rule, cooldown, back-off and daily budget of automatic retraining."
    )
    manual: dict[str, Any] = Field(..., description="Manual and API requests (always allowed).")
    schedules: list[dict[str, Any]] = Field(..., description="Schedules of the retraining deployment.")
    event_triggers: list[str] = Field(..., description="Events whose automation starts retraining.")
    recent_jobs: list[RetrainingJobOut] = Field(..., description="The latest retraining jobs.")
    open_episodes: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Open drift episodes (per serving version): opened when, "
        "why, its retraining job, failed attempts, back-off.",
    )
    recent_episodes: list[dict[str, Any]] = Field(
        default_factory=list, description="The latest drift episodes, open or closed."
    )
    declared_from: str | None = Field(
        None,
        description="The prefect.yaml that schedules and event triggers were "
        "read from; None when unknown (NFL_MLOPS_ROOT not set).",
    )


def job_out(row: RetrainingJob) -> RetrainingJobOut:
    return RetrainingJobOut(
        job_id=row.id,
        model_name=row.model_name,
        reason=row.reason,
        trigger=row.trigger,
        status=row.status,
        flow_run_id=row.flow_run_id,
        params=dict(row.params or {}),
        result=dict(row.result or {}),
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def get_job(db_url: str | None, job_id: str) -> RetrainingJobOut:
    with session_scope(db_url) as s:
        return job_out(cast(RetrainingJob, s.get(RetrainingJob, job_id)))


def list_jobs(db_url: str, model_name: str | None, limit: int) -> list[RetrainingJobOut]:
    with session_scope(db_url) as s:
        q = select(RetrainingJob).order_by(RetrainingJob.created_at.desc()).limit(limit)
        if model_name:
            q = q.where(RetrainingJob.model_name == model_name)
        return [job_out(r) for r in s.scalars(q)]


async def submit(parameters: dict[str, Any]) -> str:
    """Create a run of the retraining deployment (do not wait for it); returns the flow-run id.

    Raises:
        RuntimeError: with a message for the client when Prefect is not configured, not reachable,
            or does not know the deployment. Never waits longer than a few seconds.
    """
    import httpx
    from prefect.deployments.flow_runs import arun_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = prefect_api_url()
    if not url:
        raise RuntimeError(
            "no Prefect API is configured (PREFECT_API_URL is not set): start the stack with "
            "`nfl-mlops up`, or run `prefect deployment run 'retraining/retraining'` by hand"
        )
    try:
        async with httpx.AsyncClient(timeout=PREFECT_PING_S) as client:
            (await client.get(f"{url.rstrip('/')}/health")).raise_for_status()
    except httpx.HTTPError as exc:
        raise RuntimeError(f"the Prefect API at {url} is not reachable ({type(exc).__name__})") from exc
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):  # this URL, whatever Prefect read at import
            run = await asyncio.wait_for(
                arun_deployment(
                    RETRAINING_DEPLOYMENT, parameters=parameters, timeout=0, tags=["nfl-mlops", "api"]
                ),
                PREFECT_SUBMIT_S,
            )
    except ObjectNotFound as exc:
        raise RuntimeError(
            f"the Prefect server at {url} has no deployment {RETRAINING_DEPLOYMENT!r}; "
            "run `prefect deploy --all` (or `nfl-mlops up`)"
        ) from exc
    except TimeoutError as exc:
        raise RuntimeError(
            f"the Prefect API at {url} did not create the run within {PREFECT_SUBMIT_S:.0f} s"
        ) from exc
    except Exception as exc:  # HTTP errors, validation of the parameters by the server
        raise RuntimeError(
            f"the Prefect API at {url} refused the run: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    return str(run.id)


class RetrainingNotStarted(RuntimeError):
    """The job was recorded (as failed) but Prefect could not start it; `job_id` names it."""

    def __init__(self, job_id: str, message: str) -> None:
        super().__init__(message)
        self.job_id = job_id


async def request_retraining(
    registry: Any,
    model_name: str,
    reason: str,
    config: dict[str, Any] | None = None,
    strategy: str | None = None,
    trigger: str = "api",
    db_url: str | None = None,
) -> RetrainingJobOut:
    """Record a retraining job and start a run of the retraining deployment for it (not waiting for it).

    `config` overrides the champion's training recipe field by field.

    Raises:
        LookupError: no model of that name is registered.
        ValueError: `config` does not make a valid training recipe (nothing is recorded).
        RetrainingNotStarted: Prefect is not configured or not reachable (the job is recorded as failed).
    """
    versions = await asyncio.to_thread(registry.list_versions, model_name)
    if not versions:
        raise LookupError(f"no model named {model_name!r}: register or train a first version")
    parameters: dict[str, Any] = {"reason": reason, "trigger": trigger, "model_name": model_name}
    if config:
        champion = await asyncio.to_thread(registry.get_alias, model_name, "champion")
        recipe = dict((champion.params or {}).get("train", {})) if champion else {}
        parameters["train"] = {**recipe, **config}
        from pydantic import ValidationError

        from nfl_mlops.modeling.params import TrainParams

        try:
            TrainParams.model_validate(parameters["train"])
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            raise ValueError(f"config does not make a valid training recipe: {problems}") from None
    if strategy:
        parameters["strategy"] = strategy
    job_id = await asyncio.to_thread(create_job, model_name, reason, trigger, dict(parameters), None, db_url)
    parameters["job_id"] = job_id
    try:
        flow_run_id = await submit(parameters)
    except RuntimeError as exc:
        await asyncio.to_thread(update_job, job_id, "failed", {"error": str(exc)}, None, db_url)
        log.warning("retraining job %s not started: %s", job_id, exc)
        raise RetrainingNotStarted(job_id, f"retraining job {job_id} not started: {exc}") from exc
    await asyncio.to_thread(update_job, job_id, "scheduled", None, flow_run_id, db_url)
    return await asyncio.to_thread(get_job, db_url, job_id)


# --------------------------------------------------------------------------------------------
# The retraining flow's logic (the flow only wires these)
# --------------------------------------------------------------------------------------------


def champion_recipe(model_name: str, registry: Any = None) -> tuple[Any, Any]:
    """The data and training parameters (`DataParams`, `TrainParams`) of the current champion (defaults
    when there is none). Its `recent_since` is not part of the recipe: each retraining's own episode sets it."""
    from nfl_mlops.modeling.params import DataParams, TrainParams

    if registry is None:
        from nfl_mlops.registry.store import Registry

        registry = Registry.from_settings()
    champion = registry.get_alias(model_name, "champion")
    params = champion.params if champion else {}
    data = {k: v for k, v in (params.get("data") or {}).items() if k != "recent_since"}
    return DataParams(**data), TrainParams(**params.get("train", {}))


DRIFT_REASONS = ("drift", "degraded")


def reason_kind(reason: str | None, episode_kind: str | None = None) -> str:
    """drift | degraded | other: what started a retraining (an episode's kind wins over the free-text reason)."""
    if episode_kind in DRIFT_REASONS:
        return episode_kind
    text = (reason or "").lower()
    if "drift" in text:
        return "drift"
    if "degrad" in text or "performance" in text:
        return "degraded"
    return "other"


def require_recent_improvement(kind: str) -> bool:
    """A retraining for drift or degradation must beat the champion on the recent window too."""
    return kind in DRIFT_REASONS


def outcome_status(
    passed: bool,
    rollout_status: str | None = None,
    rollout_version: int | None = None,
    version: int | None = None,
) -> str:
    """completed (the new version serves) | rolled_back (the canary's gates sent traffic back) | rejected (gate)."""
    if not passed:
        return "rejected"
    if rollout_status == "active" and rollout_version is not None and rollout_version == version:
        return "completed"
    return "rolled_back"


@dataclass(frozen=True)
class Admission:
    """Whether a retraining run may train, why, and the drift episode it works for (if any)."""

    allowed: bool
    reason: str
    episode_id: str | None = None
    episode_kind: str | None = None
    traffic_since: datetime | None = None  # start of the claimed episode's first alarming window


def admit(
    model_name: str,
    trigger: str,
    job_id: str,
    episode_id: str | None = None,
    now: datetime | None = None,
    cooldown_minutes: float = RETRAIN_COOLDOWN_MINUTES,
    daily_budget: int = RETRAIN_DAILY_BUDGET,
    max_attempts: int = RETRAIN_MAX_ATTEMPTS,
    db_url: str | None = None,
) -> Admission:
    """Admit retraining job `job_id` (already recorded).

    Manual and API requests always run (for the episode, when one is named and free). An automation
    run works for a drift episode (the one named, else the model's open one) and runs only if it wins
    the episode's compare-and-set claim: one episode, one retraining, under any number of concurrent
    events. The schedule respects the cooldown, the failure back-off and the daily budget.
    """
    now = now or utcnow()
    history = job_history(model_name, exclude=job_id, db_url=db_url)
    if trigger in ("automation",):
        episode = ep.get_episode(episode_id, db_url) if episode_id else None
        if episode is None:
            candidates = ep.open_episodes(model_name, db_url)
            episode = candidates[-1] if candidates else None
        if episode is None and not episode_id:
            # an event from outside monitoring (e.g. the SDK's performance check) is a verdict too: it
            # opens the serving version's episode, which this run then claims like any other
            episode = _episode_for_serving(model_name, reason_of(job_id, db_url), db_url)
        if episode is None or episode.status != ep.OPEN:
            return Admission(
                False,
                "no open drift episode"
                + (f" ({episode_id} is closed: {episode.close_reason})" if episode else f" for {model_name}"),
            )
        budget = retraining_allowed(now, "automation", history, timedelta(0), daily_budget)
        if not budget.allowed and budget.reason.startswith("daily budget"):
            return Admission(False, budget.reason, episode.id, episode.kind)
        if ep.claim(episode.id, job_id, now, max_attempts, db_url):
            return Admission(
                True,
                f"claimed drift episode {episode.id} (v{episode.model_version}, {episode.kind})",
                episode.id,
                episode.kind,
                ep.traffic_since(episode, db_url),
            )
        current = ep.get_episode(episode.id, db_url) or episode
        if current.retraining_job_id:
            why = f"episode {current.id} already has retraining job {current.retraining_job_id}"
        elif current.attempts >= max_attempts:
            why = f"episode {current.id} used its {max_attempts} attempts ({current.attempts} failed)"
        elif current.status != ep.OPEN:
            why = f"episode {current.id} closed: {current.close_reason}"
        else:
            why = (
                f"episode {current.id} backs off after {current.attempts} failed retraining(s) until "
                f"{current.next_attempt_at.isoformat() if current.next_attempt_at else '?'}"
            )
        return Admission(False, why, current.id, current.kind)
    decision = retraining_allowed(now, trigger, history, timedelta(minutes=cooldown_minutes), daily_budget)
    if not decision.allowed:
        return Admission(False, decision.reason)
    if episode_id and ep.claim(episode_id, job_id, now, max_attempts, db_url):
        episode = ep.get_episode(episode_id, db_url)
        return Admission(
            True,
            f"{decision.reason}; for drift episode {episode_id}",
            episode_id,
            episode.kind if episode else None,
            ep.traffic_since(episode, db_url) if episode else None,
        )
    return Admission(True, decision.reason)


def reason_of(job_id: str, db_url: str | None = None) -> str:
    with session_scope(db_url) as s:
        row = s.get(RetrainingJob, job_id)
        return row.reason if row else ""


def _episode_for_serving(model_name: str, reason: str, db_url: str | None) -> ep.EpisodeInfo | None:
    """Open (or find) the episode of the version serving `model_name` now; None when nothing serves."""
    from nfl_mlops.rollout.state import active_rollout, serving_version

    rollout = active_rollout(model_name, db_url=db_url)
    if rollout is None:
        return None
    version = serving_version(rollout.arms, rollout.version)
    kind = reason_kind(reason)
    info, _ = ep.open_episode(
        model_name,
        int(cast(int, version)),
        "stable",
        kind if kind in DRIFT_REASONS else "drift",
        f"{reason or 'event'} (an event without an episode)",
        None,
        db_url,
    )
    return info


def finish(
    job_id: str,
    status: str,
    result: dict[str, Any],
    episode_id: str | None = None,
    version: int | None = None,
    db_url: str | None = None,
    backoff_minutes: float = RETRAIN_BACKOFF_BASE_MINUTES,
) -> dict[str, Any]:
    """Record the job's outcome and what it means for its episode.

    completed: the retrained version serves, the episode closes. failed: the episode is released with a
    back-off (it counts as an attempt). rejected / rolled_back: the episode keeps its one retraining.
    """
    update_job(job_id, status, result, db_url=db_url)
    if not episode_id:
        return {}
    if status == "completed":
        ep.close_episode(
            episode_id,
            f"retrained version v{version} serves (job {job_id})",
            db_url,
            retrained_version=version,
        )
    elif status == "failed":
        ep.release_failed(episode_id, job_id, base_minutes=backoff_minutes, db_url=db_url)
    info = ep.get_episode(episode_id, db_url)
    return info.to_payload() if info else {}


# --------------------------------------------------------------------------------------------
# Jobs whose run ended without closing them
# --------------------------------------------------------------------------------------------

OPEN_JOB_STATUSES = ("scheduled", "running")
ENDED_RUN_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
"""Prefect state types of a flow run that will never again write to its job."""


def _open_jobs(model_name: str | None) -> Any:
    q = select(RetrainingJob).where(RetrainingJob.status.in_(OPEN_JOB_STATUSES))
    return q.where(RetrainingJob.model_name == model_name) if model_name else q


def open_job_runs(model_name: str | None = None, db_url: str | None = None) -> dict[str, str | None]:
    """job id -> flow-run id (None when unknown) of the jobs still `scheduled` or `running`."""
    with session_scope(db_url) as s:
        return {r.id: r.flow_run_id for r in s.scalars(_open_jobs(model_name))}


def reconcile_jobs(
    run_states: Mapping[str, str],
    model_name: str | None = None,
    now: datetime | None = None,
    max_open_hours: float = RETRAIN_MAX_OPEN_HOURS,
    db_url: str | None = None,
    backoff_minutes: float = RETRAIN_BACKOFF_BASE_MINUTES,
) -> list[dict[str, Any]]:
    """End the jobs that no run will close: their flow run ended (a killed worker or process leaves the
    run `Crashed`, or a server marks a lost run so) while the job still says `scheduled`/`running`, or the
    job has been open for more than `max_open_hours` (a run lost with no state at all).

    Each such job ends `failed` with the reason, and gives its drift episode back with a back-off (it
    counts as a failed attempt), so the episode may retry later instead of being held forever.

    Args:
        run_states: flow-run id -> Prefect state type (e.g. "CRASHED") of the open jobs' runs, as far as
            known; a run missing here is judged by age alone (e.g. Prefect unreachable).
        backoff_minutes: the episode's first back-off (doubling per failed attempt).
    """
    now = now or utcnow()
    ended: list[tuple[str, str]] = []
    with session_scope(db_url) as s:
        for job in s.scalars(_open_jobs(model_name)):
            state = run_states.get(job.flow_run_id or "")
            age_h = (now - as_utc(job.created_at)).total_seconds() / 3600
            if state in ENDED_RUN_STATES:
                why = f"its flow run {job.flow_run_id} ended {state} without closing the job"
            elif age_h > max_open_hours:
                why = f"open for {age_h:.1f} h (> {max_open_hours:g} h) with no outcome"
            else:
                continue
            ended.append((job.id, why))
    out = []
    for job_id, why in ended:
        with session_scope(db_url) as s:
            held = s.scalars(select(Episode.id).where(Episode.retraining_job_id == job_id)).all()
        update_job(job_id, "failed", {"error": f"orphaned: {why}"}, db_url=db_url)
        episodes = [ep.release_failed(e, job_id, now, backoff_minutes, db_url=db_url) for e in held]
        log.warning("retraining job %s ended failed: %s", job_id, why)
        out.append({"job_id": job_id, "reason": why, "episodes": [e.to_payload() for e in episodes if e]})
    return out


# --------------------------------------------------------------------------------------------
# What would start a retraining now
# --------------------------------------------------------------------------------------------


def prefect_yaml_path() -> Path | None:
    """`$NFL_MLOPS_ROOT/prefect.yaml`, or None when the project root is unknown (e.g. an installed wheel)."""
    root = os.environ.get(PROJECT_ROOT_ENV)
    return Path(root) / "prefect.yaml" if root else None


def declared_retraining(path: Path | None = None) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """Schedules and trigger events of the retraining deployment as `prefect.yaml` declares them, and the
    file read; ([], [], None) when the project root is unknown or the file cannot be read."""
    import yaml

    path = path or prefect_yaml_path()
    if path is None:
        return [], [], None
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return [], [], None
    for d in spec.get("deployments") or []:
        if d.get("name") == "retraining":
            events = [e for t in d.get("triggers") or [] for e in (t.get("expect") or [])]
            return [dict(s) for s in d.get("schedules") or []], events, str(path)
    return [], [], str(path)


def trigger_check(
    db_url: str,
    model_name: str,
    known: bool = False,
    *,
    cooldown_minutes: float = RETRAIN_COOLDOWN_MINUTES,
    daily_budget: int = RETRAIN_DAILY_BUDGET,
) -> TriggerCheckOut:
    """The latest monitoring verdict, the open drift episodes and whether an automatic retraining would start.

    Raises:
        LookupError: the model is unknown (not `known`, no monitoring run, no job, no episode).
    """
    now = utcnow()
    verdicts = recent_verdicts(model_name, 1, db_url)
    run = verdicts[0] if verdicts else None
    latest: dict[str, Any] | None = None
    if run is not None:
        summary = dict(run.summary or {})
        latest = {
            "monitoring_run_id": run.id,
            "created_at": run.created_at.isoformat(),
            "model_version": run.model_version,
            "n_predictions": run.n_predictions,
            "drift_share": run.drift_share,
            "drift_detected": bool(run.drift_detected),
            "performance_degraded": bool(summary.get("performance_degraded")),
            "skipped": summary.get("skipped"),
            "episode": (summary.get("episode") or {}).get("action"),
            "drifted_columns": summary.get("drifted_columns"),
            "report_path": run.report_path,
        }
    history = job_history(model_name, db_url=db_url)
    open_eps = ep.open_episodes(model_name, db_url)
    recent_eps = ep.list_episodes(model_name, 5, db_url)
    if not (known or latest or history or recent_eps):
        raise LookupError(f"no model named {model_name!r}")
    budget = retraining_allowed(now, "automation", history, timedelta(0), daily_budget)
    reasons = []
    if latest is None:
        reasons.append("no monitoring run yet: nothing to react to")
    else:
        found = [
            w
            for w, on in (
                (f"drift (share {latest['drift_share'] or 0.0:.2f})", latest["drift_detected"]),
                ("performance degraded", latest["performance_degraded"]),
            )
            if on
        ]
        reasons.append(
            f"latest monitoring run ({latest['created_at'][:19]}, v{latest['model_version']}) found "
            + (" and ".join(found) if found else "neither drift nor a performance drop")
            + (f" ({latest['skipped']})" if latest.get("skipped") else "")
        )
    due = [e for e in open_eps if ep.retry_due(e, now)]
    in_flight = [
        j for j in history if j.trigger in ("automation", "schedule") and j.status in ("scheduled", "running")
    ]
    alarm = bool(latest and (latest["drift_detected"] or latest["performance_degraded"]))
    for e in open_eps:
        state = (
            "its retraining is due"
            if e in due
            else f"retraining job {e.retraining_job_id}"
            if e.retraining_job_id
            else f"{e.attempts} failed attempts, gave up"
            if e.attempts >= RETRAIN_MAX_ATTEMPTS
            else f"backing off until {e.next_attempt_at.isoformat() if e.next_attempt_at else '?'}"
        )
        reasons.append(
            f"drift episode {e.id} of v{e.model_version} open since {e.opened_at.isoformat()[:19]} "
            f"({e.kind}): {state}"
        )
    if not open_eps:
        reasons.append(
            "no open drift episode: monitoring opens one by the episode rule "
            "(nfl_mlops.monitoring.episodes); an alarm event from elsewhere opens one for the serving "
            "version" + (" (the latest verdict is an alarm)" if alarm else "")
        )
    if in_flight:
        reasons.append(
            f"automatic retraining blocked: job {in_flight[0].id} ({in_flight[0].status}) is in flight"
        )
    if not budget.allowed:
        reasons.append(f"automatic retraining blocked: {budget.reason}")
    would = bool(due or (alarm and not open_eps)) and budget.allowed and not in_flight
    schedules, events, source = declared_retraining()
    with session_scope(db_url) as s:
        recent = [
            job_out(r)
            for r in s.scalars(
                select(RetrainingJob)
                .where(RetrainingJob.model_name == model_name)
                .order_by(RetrainingJob.created_at.desc())
                .limit(5)
            )
        ]
    rule = ep.EpisodeRule()
    return TriggerCheckOut(
        model_name=model_name,
        would_trigger=would,
        reasons=reasons,
        latest_monitoring=latest,
        automatic={
            "allowed": would,
            "reason": "; ".join(reasons[1:]) or budget.reason,
            "episode_rule": rule.to_payload(),
            "cooldown_minutes": cooldown_minutes,
            "daily_budget": daily_budget,
            "max_attempts": RETRAIN_MAX_ATTEMPTS,
        },
        manual={
            "allowed": True,
            "reason": "manual and API requests are not limited by episodes, cooldown or budget",
        },
        schedules=schedules,
        event_triggers=events,
        recent_jobs=recent,
        open_episodes=[e.to_payload() for e in open_eps],
        recent_episodes=[e.to_payload() for e in recent_eps],
        declared_from=source,
    )


def summary_markdown(model_name: str, trigger: str, reason: str, result: dict[str, Any]) -> str:
    """The retraining run's own report: what started it, the gate's decision with its intervals, the
    rollout's outcome, and where the subflows' reports are (their runs are tagged with the model)."""
    lines = [
        f"# Retraining of {model_name}: {result.get('status', '?')}",
        "",
        "| | |",
        "|---|---|",
        f"| trigger | {trigger} ({result.get('kind', reason_kind(reason))}) |",
        f"| reason | {_cell(reason)} |",
        f"| drift episode | {result.get('episode_id') or '-'} |",
        f"| job | {result.get('job_id', '-')} |",
        f"| candidate | v{result.get('version', '?')} ({'passed' if result.get('passed') else 'rejected'} by the gate) |",
    ]
    if result.get("deployment_id"):
        lines.append(
            f"| rollout | {result.get('strategy')} {result['deployment_id']}: {result.get('status')} |"
        )
    if result.get("rollback_reason"):
        lines.append(f"| rolled back because | {_cell(result['rollback_reason'])} |")
    lines += ["", "## Gate", ""] + [f"- {_cell(r)}" for r in result.get("reasons") or []]
    lines += [
        "",
        "Reports of the subflows: the `training-report`, `registration-gate` and rollout artifacts of the "
        f"runs tagged `model:{model_name}` that this run started.",
    ]
    return "\n".join(lines)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
