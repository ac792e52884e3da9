"""Retraining flow: training -> registration -> deployment, started by schedule, automation, API or hand."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.deployment import deployment_flow
from flows.registration import registration_flow
from flows.training import training_flow
from nfl_mlops.lineage import current_flow_run_id
from nfl_mlops.modeling.params import DataParams, TrainParams
from nfl_mlops.monitoring.thresholds import RETRAIN_DAILY_BUDGET
from nfl_mlops.registry.store import Registry
from nfl_mlops.rollout.strategies import CanaryParams, retraining_canary
from nfl_mlops.settings import get_settings
from tasks.jobs import close_job, open_job


def champion_recipe(model_name: str) -> tuple[DataParams, TrainParams]:
    """The data and training parameters of the current champion (defaults when there is none)."""
    champion = Registry.from_settings().get_alias(model_name, "champion")
    params = champion.params if champion else {}
    return DataParams(**params.get("data", {})), TrainParams(**params.get("train", {}))


@flow(name="retraining", log_prints=True)
def retraining_flow(
    reason: str = "scheduled",
    trigger: str = "manual",
    drift_share: float | None = None,
    model_name: str | None = None,
    data: DataParams | None = None,
    train: TrainParams | None = None,
    include_feedback: bool = True,
    strategy: str = "blue_green",
    canary: CanaryParams | None = None,
    api_url: str | None = None,
    cooldown_minutes: float | None = None,
    daily_budget: int = RETRAIN_DAILY_BUDGET,
    job_id: str | None = None,
) -> dict[str, Any]:
    """Retrain on the champion's recipe plus labelled feedback; deploy only a challenger that passes the gate.

    Args:
        trigger: manual | api | schedule | automation. Automatic triggers respect the cooldown and budget.
        data, train: override the champion's recipe.
        strategy, canary: how a challenger that passes goes out (prefect.yaml's deployment uses canary);
            a canary without `canary` settings uses `retraining_canary()` (no label-shift gate).
    """
    settings = get_settings()
    model_name = model_name or settings.model_name
    logger = get_run_logger()
    recipe_data, recipe_train = champion_recipe(model_name)
    data = (data or recipe_data).model_copy(update={"include_feedback": include_feedback})
    train = train or recipe_train
    cooldown = settings.retrain_cooldown_minutes if cooldown_minutes is None else cooldown_minutes
    params = {"reason": reason, "trigger": trigger, "drift_share": drift_share, "data": data.model_dump(),
              "train": train.model_dump(), "strategy": strategy}
    if strategy == "canary":
        canary = canary or retraining_canary()
        params["canary"] = canary.model_dump(mode="json")

    # Admission
    job_id, decision = open_job(model_name, reason, trigger, params, current_flow_run_id(), job_id, cooldown,
                                daily_budget)
    if not decision.allowed:
        logger.info("retraining skipped: %s", decision.reason)
        return {"status": "skipped", "job_id": job_id, "reason": decision.reason}
    logger.info("retraining %s (%s, trigger %s, drift share %s)", model_name, reason, trigger, drift_share)

    # Train -> register -> deploy
    try:
        candidate = training_flow(data=data, train=train, model_name=model_name)
        registration = registration_flow(candidate)
        result: dict[str, Any] = {"job_id": job_id, "version": registration.version,
                                  "passed": registration.passed, "reasons": registration.reasons,
                                  "metrics": candidate.metrics}
        if registration.passed:
            rollout = deployment_flow(version=str(registration.version), model_name=model_name, strategy=strategy,
                                      api_url=api_url, reason=f"retraining: {reason}", canary=canary)
            result.update(deployment_id=rollout.id, strategy=strategy)
            if rollout.status == "active" and rollout.version == registration.version:
                result.update(status="completed")
            else:  # the canary's gates rolled it back: the champion keeps serving
                result.update(status="rolled_back", rollback_reason=rollout.reason)
        else:
            result.update(status="rejected")
    except BaseException as exc:
        close_job(job_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    close_job(job_id, result["status"], result)
    return result
