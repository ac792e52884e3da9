"""The whole loop once: training -> registration -> deployment (the first model, or a manual refresh)."""

from __future__ import annotations

from typing import Any

from prefect import flow, tags
from prefect.runtime import flow_run as this_run

from flows.deployment import deployment_flow
from flows.registration import registration_flow
from flows.training import training_flow
from nfl_mlops.modeling.params import DataParams, TrainParams
from nfl_mlops.naming import run_name, run_tags
from nfl_mlops.rollout.strategies import Strategy
from nfl_mlops.settings import get_settings


@flow(name="pipeline", log_prints=True, flow_run_name=lambda: run_name("pipeline", this_run.parameters))
def pipeline_flow(
    data: DataParams = DataParams(),
    train: TrainParams = TrainParams(),
    model_name: str | None = None,
    strategy: Strategy = Strategy.BLUE_GREEN,
) -> dict[str, Any]:
    """Train a candidate, gate and register it, and deploy it when it passes."""
    # Train (subflow runs carry the model's tag)
    with tags(*run_tags(model_name or get_settings().model_name, trigger="pipeline")):
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
        with tags(*run_tags(candidate.model_name, registration.version, trigger="pipeline")):
            rollout = deployment_flow(
                version=str(registration.version),
                model_name=candidate.model_name,
                strategy=strategy,
                reason="pipeline",
            )
        out["deployment_id"] = rollout.id
        out["deployment_status"] = rollout.status
    return out
