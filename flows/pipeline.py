"""The whole loop once: training -> registration -> deployment (the first model, or a manual refresh)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.deployment import deployment_flow
from flows.registration import registration_flow
from flows.training import training_flow
from nfl_mlops.modeling.params import DataParams, TrainParams
from nfl_mlops.rollout.strategies import Strategy


@flow(name="pipeline", log_prints=True)
def pipeline_flow(
    data: DataParams = DataParams(),
    train: TrainParams = TrainParams(),
    model_name: str | None = None,
    strategy: Strategy = Strategy.BLUE_GREEN,
) -> dict[str, Any]:
    """Train a candidate, gate and register it, and deploy it when it passes."""
    # Train
    candidate = training_flow(data=data, train=train, model_name=model_name)

    # Gate and register
    registration = registration_flow(candidate)
    out: dict[str, Any] = {
        "version": registration.version,
        "passed": registration.passed,
        "metrics": candidate.metrics,
        "baseline": candidate.baseline_metrics,
    }

    # Deploy
    if registration.passed:
        rollout = deployment_flow(
            version=str(registration.version),
            model_name=candidate.model_name,
            strategy=strategy,
            reason="pipeline",
        )
        out["deployment_id"] = rollout.id
        out["deployment_status"] = rollout.status
    return out
