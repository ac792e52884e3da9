"""What a deployment (rollout) and an A/B test look like to their readers: the API, the SDK and the CLI.

The library owns these records; the serving package is one of their consumers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from nfl_mlops.rollout import abtest
from nfl_mlops.rollout import state as rollouts


class DeploymentOut(BaseModel):
    deployment_id: str = Field(..., description="Id of the rollout.")
    model_id: str = Field(..., description="Registered model name.")
    environment: str = Field(..., description="Environment.")
    model_version: int = Field(
        ..., description="The version rolled out (the candidate of a canary, B of an A/B)."
    )
    previous_version: int | None = Field(None, description="Where a rollback returns traffic to.")
    strategy: str = Field(..., description="blue_green, canary, shadow, ab_test, or rollback.")
    status: str = Field(..., description="active, superseded, rolled_back or completed.")
    arms: dict[str, Any] = Field(..., description="Traffic: arm -> {version, weight (percent), shadow}.")
    config: dict[str, Any] = Field(default_factory=dict, description="Strategy settings and step state.")
    progress: dict[str, Any] | None = Field(
        None, description="Canary/shadow/A-B: phase, step, last gate check."
    )
    reason: str | None = Field(None, description="Why it was started or ended.")
    history: list[Any] = Field(
        ..., description="Events: activated, traffic steps with gates, promoted, rolled back."
    )
    flow_run_id: str | None = Field(None, description="The Prefect flow run that made it, if any.")
    created_at: datetime = Field(..., description="When it started.")
    updated_at: datetime = Field(..., description="Last change.")


class ArmStatsOut(BaseModel):
    arm: str = Field(..., description="a or b.")
    version: int = Field(..., description="Model version of the arm.")
    predictions: int = Field(..., description="Predictions served by the arm.")
    labelled: int = Field(..., description="Of those, predictions with a feedback label.")
    correct: int = Field(..., description="Labelled predictions whose label was right.")
    accuracy: float | None = Field(None, description="correct / labelled.")


class VerdictOut(BaseModel):
    decision: str = Field(..., description="a_better, b_better, no_difference_yet, or no_difference (final).")
    winner: str | None = Field(None, description="a, b, or null.")
    significant: bool = Field(..., description="p-value below alpha on enough samples.")
    enough_data: bool = Field(..., description="Both arms have min_samples labelled predictions.")
    final: bool = Field(..., description="The test's duration is over (or it was stopped).")
    z: float | None = Field(None, description="Two-proportion z statistic (B minus A).")
    p_value: float | None = Field(None, description="Two-sided p-value.")
    accuracy_diff: float | None = Field(None, description="accuracy(B) - accuracy(A).")
    ci: list[float] | None = Field(
        None, description="Confidence interval of the difference at level 1 - alpha."
    )
    prob_b_better: float | None = Field(
        None, description="Bayesian P(accuracy B > accuracy A), uniform priors."
    )
    reason: str = Field(..., description="The verdict in words.")


class ABTestOut(BaseModel):
    test_id: str = Field(..., description="Id of the test.")
    test_name: str = Field(..., description="Name of the test.")
    model_id: str = Field(..., description="Registered model.")
    environment: str = Field(..., description="Environment.")
    model_a_version: int = Field(..., description="Version of arm A.")
    model_b_version: int = Field(..., description="Version of arm B.")
    traffic_split: float = Field(..., description="Percent of traffic on B.")
    duration_days: float = Field(..., description="Planned duration.")
    status: str = Field(
        ..., description="running, completed (duration over) or stopped (rolled back/superseded)."
    )
    winner: str | None = Field(None, description="The declared winner once completed.")
    deployment_id: str | None = Field(None, description="The rollout carrying the test's traffic.")
    params: dict[str, Any] = Field(..., description="Test settings (min_samples, alpha, promote_winner...).")
    created_at: datetime = Field(..., description="Start.")
    ends_at: datetime = Field(..., description="Planned end.")
    finished_at: datetime | None = Field(None, description="Actual end.")
    arms: dict[str, ArmStatsOut] = Field(..., description="Current statistics per arm.")
    verdict: VerdictOut = Field(..., description="Current verdict.")


def deployment_out(r: rollouts.RolloutInfo) -> DeploymentOut:
    """The public record of a rollout."""
    from nfl_mlops.rollout.controller import progress

    return DeploymentOut(
        deployment_id=r.id,
        model_id=r.model_name,
        environment=r.environment,
        model_version=r.version,
        previous_version=r.previous_version,
        strategy=r.strategy,
        status=r.status,
        arms=r.arms,
        config=r.config,
        progress=progress(r),
        reason=r.reason,
        history=r.history,
        flow_run_id=r.flow_run_id,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def ab_out(test: abtest.ABTestInfo, db_url: str | None = None) -> ABTestOut:
    """The public record of an A/B test with its live statistics; `stopped` once its rollout ended."""
    status = test.status
    if status == "running" and test.rollout_id:
        try:
            if rollouts.get_rollout(test.rollout_id, db_url).status != "active":
                status = "stopped"  # rolled back or replaced by another deployment
        except rollouts.RolloutNotFound:
            status = "stopped"
    rep = abtest.report(test, db_url=db_url)
    if status != "running":
        rep["verdict"]["final"] = True
    return ABTestOut(
        test_id=test.id,
        test_name=test.test_name,
        model_id=test.model_name,
        environment=test.environment,
        model_a_version=test.version_a,
        model_b_version=test.version_b,
        traffic_split=test.traffic_split,
        duration_days=test.duration_days,
        status=status,
        winner=test.winner,
        deployment_id=test.rollout_id,
        params=test.params,
        created_at=test.created_at,
        ends_at=test.ends_at,
        finished_at=test.finished_at,
        arms=rep["arms"],
        verdict=rep["verdict"],
    )
