"""Retraining flow: admission -> training -> registration -> deployment, started by schedule, automation, API or hand."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.runtime import flow_run as this_run
from prefect.states import Completed, State

from flows.deployment import deployment_flow
from flows.registration import registration_flow
from flows.training import training_flow
from nfl_mlops.lineage import current_flow_run_id
from nfl_mlops.modeling.params import DataParams, TrainParams
from nfl_mlops.monitoring.thresholds import (
    PERFORMANCE_MAX_DROP,
    RETRAIN_BACKOFF_BASE_MINUTES,
    RETRAIN_COOLDOWN_MINUTES,
    RETRAIN_DAILY_BUDGET,
)
from nfl_mlops.naming import run_name, run_tags
from nfl_mlops.retraining import (
    champion_recipe,
    outcome_status,
    reason_kind,
    require_recent_improvement,
    summary_markdown,
)
from nfl_mlops.rollout.strategies import CanaryParams, Strategy, retraining_canary
from nfl_mlops.settings import get_settings
from tasks.alerts import publish_markdown
from tasks.drift import accept_new_normal
from tasks.jobs import close_job, open_job, reconcile_jobs
from tasks.labeling import wait_for_labels


@flow(name="retraining", log_prints=True, flow_run_name=lambda: run_name("retraining", this_run.parameters))
def retraining_flow(
    reason: str = "scheduled",
    trigger: str = "manual",
    drift_share: float | None = None,
    model_name: str | None = None,
    data: DataParams | None = None,
    train: TrainParams | None = None,
    include_feedback: bool = True,
    strategy: Strategy = Strategy.CANARY,
    canary: CanaryParams | None = None,
    api_url: str | None = None,
    episode_id: str | None = None,
    cooldown_minutes: float = RETRAIN_COOLDOWN_MINUTES,
    daily_budget: int = RETRAIN_DAILY_BUDGET,
    retry_backoff_minutes: float = RETRAIN_BACKOFF_BASE_MINUTES,
    job_id: str | None = None,
    label_wait_minutes: float = 0.0,
) -> State:
    """Retrain on the champion's recipe plus labelled feedback; deploy only a challenger that passes the gate.

    A challenger rejected for a drift episode while the champion holds on the drifted traffic (within the
    performance threshold of what it is monitored against) closes the episode as the accepted new normal:
    the champion's reference becomes that traffic (`tasks.drift.accept_new_normal`).

    Ends `Completed` (the result dict: status completed | rejected | rolled_back), `Completed` named
    `Skipped` when admission refused (another run holds the episode, back-off, budget, no open episode),
    or `Failed` (the error is recorded on the job, and the episode backs off).

    Args:
        trigger: manual | api | schedule | automation. An automation run works for a drift episode and
            runs only when it claims it (one retraining per episode); the schedule respects the cooldown,
            the failure back-off and the daily budget (failed runs count).
        episode_id: the drift episode (the event payload's); empty = the model's open episode.
        data, train: override the champion's recipe.
        strategy, canary: how a challenger that passes goes out (default canary, 10 -> 50 -> 100 % under
            live traffic, the same through every door);
            a canary without `canary` settings uses `retraining_canary()` (no label-shift gate).
        cooldown_minutes, daily_budget: the schedule's limits (see `nfl_mlops.monitoring.thresholds`).
        retry_backoff_minutes: a failed retraining gives its episode back after this long (doubling per
            failed attempt).
        label_wait_minutes: a retraining for an episode first waits up to this long for the episode's
            labelling queue to be labelled (`GET /mlops/labeling/queue`); 0 = train on the labels there are.
    """
    settings = get_settings()
    model_name = model_name or settings.model_name
    logger = get_run_logger()
    strategy = Strategy(strategy)
    recipe_data, recipe_train = champion_recipe(model_name)
    data = (data or recipe_data).model_copy(update={"include_feedback": include_feedback})
    train = train or recipe_train
    params = {
        "reason": reason,
        "trigger": trigger,
        "drift_share": drift_share,
        "data": data.model_dump(mode="json"),
        "train": train.model_dump(mode="json"),
        "strategy": str(strategy),
        "episode_id": episode_id or None,
    }
    if strategy == Strategy.CANARY:
        canary = canary or retraining_canary()
        params["canary"] = canary.model_dump(mode="json")

    # Admission (after ending the jobs of runs that died without closing them: their episodes come back)
    reconcile_jobs(model_name, retry_backoff_minutes)
    job_id, admission = open_job(
        model_name,
        reason,
        trigger,
        params,
        current_flow_run_id(),
        job_id,
        episode_id or None,
        cooldown_minutes,
        daily_budget,
    )
    if not admission.allowed:
        logger.info("retraining skipped: %s", admission.reason)
        return Completed(
            name="Skipped",
            message=f"retraining skipped: {admission.reason}",
            data={
                "status": "skipped",
                "job_id": job_id,
                "reason": admission.reason,
                "episode_id": admission.episode_id,
            },
        )
    kind = reason_kind(reason, admission.episode_kind)
    labels_waited = None
    if admission.episode_id and label_wait_minutes > 0:
        labels_waited = wait_for_labels(model_name, admission.episode_id, label_wait_minutes)
    if admission.traffic_since is not None and data.recent_since is None:
        # the drifted traffic is the recent window (and the new version's reference), not every label ever
        data = data.model_copy(update={"recent_since": admission.traffic_since})
    logger.info(
        "retraining %s (%s: %s, trigger %s, drift share %s, %s)",
        model_name,
        kind,
        reason,
        trigger,
        drift_share,
        admission.reason,
    )

    # Train -> register -> deploy
    try:
        labels = {"trigger": trigger, "reason": kind, "episode": admission.episode_id}
        with tags(*run_tags(model_name, **labels)):
            candidate = training_flow(data=data, train=train, model_name=model_name)
            registration = registration_flow(
                candidate, require_recent_improvement=require_recent_improvement(kind)
            )
        result: dict[str, Any] = {
            "job_id": job_id,
            "version": registration.version,
            "kind": kind,
            "passed": registration.passed,
            "reasons": registration.reasons,
            "metrics": candidate.metrics,
            "episode_id": admission.episode_id,
            "labelling": labels_waited,
        }
        rollout = None
        if registration.passed:
            with tags(*run_tags(model_name, registration.version, **labels)):
                rollout = deployment_flow(
                    version=str(registration.version),
                    model_name=model_name,
                    strategy=strategy,
                    api_url=api_url,
                    reason=f"retraining: {reason}",
                    canary=canary,
                )
            result.update(deployment_id=rollout.id, strategy=str(strategy))
        status = outcome_status(
            registration.passed,
            rollout.status if rollout else None,
            rollout.version if rollout else None,
            registration.version,
        )
        result["status"] = status
        if status == "rolled_back":  # the canary's gates rolled it back: the champion keeps serving
            result["rollback_reason"] = rollout.reason if rollout else None
    except BaseException as exc:
        error = {"error": f"{type(exc).__name__}: {exc}"}
        close_job(job_id, "failed", error, admission.episode_id, None, retry_backoff_minutes)
        raise
    result["episode"] = close_job(job_id, status, result, admission.episode_id, registration.version)
    if status == "rejected" and admission.episode_id and kind == "drift":
        # no better model for the drifted traffic: if the champion holds on it, it is the new normal
        result["new_normal"] = accept_new_normal(
            model_name,
            candidate.dataset_dir,
            admission.episode_id,
            PERFORMANCE_MAX_DROP,
            train.base_model or settings.base_model,
        )

    # Report (on this run, beside the subflows' own)
    publish_markdown(
        "retraining-summary",
        summary_markdown(model_name, trigger, reason, result),
        f"{model_name} retraining: {status}, v{registration.version}",
    )
    return Completed(message=f"retraining {status}: v{registration.version}", data=result)
