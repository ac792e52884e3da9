"""Deployment flow: warm + smoke-test the version, then roll it out with a strategy.

- blue_green: switch all traffic at once; the previous version stays warm for instant rollback.
- canary: traffic steps, each held until its gates pass (error rate, p95 latency, label shift vs.
  stable); a failed gate rolls back and emits `nfl-mlops.rollout.rolled_back`.
- shadow: the candidate answers a copy of the traffic (logged, never returned); errors, latency and
  agreement with stable decide.
- ab_test: arms A (serving now) and B split by percentage; the serving API ends it after
  `duration_days` (a worker is not held for days), the winner by significance test.

Every traffic change is verified: it counts as done only when every live API replica heartbeats that it
serves it (`nfl_mlops.rollout.replicas`); a replica that cannot load the version, or no confirmation within
`confirm_timeout_s`, rolls the rollout back. Promotion then moves the `champion` alias and emits
`nfl-mlops.rollout.promoted`.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run as this_run

from nfl_mlops.lineage import current_flow_run_id
from nfl_mlops.naming import run_name
from nfl_mlops.rollout.controller import report_markdown
from nfl_mlops.rollout.replicas import CONFIRM_TIMEOUT_S
from nfl_mlops.rollout.state import RolloutInfo, get_rollout
from nfl_mlops.rollout.strategies import ABTestParams, CanaryParams, ShadowParams, Strategy
from nfl_mlops.settings import get_settings
from tasks.alerts import emit, publish_markdown, publish_model_status
from tasks.rollout import hold_step, start_rollout, warm_and_smoke_test


@flow(name="deployment", log_prints=True, flow_run_name=lambda: run_name("deployment", this_run.parameters))
def deployment_flow(
    version: str = "challenger",
    model_name: str | None = None,
    strategy: Strategy = Strategy.BLUE_GREEN,
    environment: str = "production",
    reason: str | None = None,
    canary: CanaryParams | None = None,
    shadow: ShadowParams | None = None,
    ab_test: ABTestParams | None = None,
    test_name: str | None = None,
    confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
    api_url: str | None = None,
) -> RolloutInfo:
    """Roll out `version` (a number, `v3` or an alias) with `strategy`.

    Args:
        canary, shadow, ab_test: settings of that strategy (defaults when omitted).
        test_name: name of the A/B test record.
        confirm_timeout_s: seconds every live API replica has to serve each traffic change (else rollback).
        api_url: ignored (deprecated): the API replicas' heartbeats in the state DB replace polling an API.

    Returns:
        The rollout record: `active` when promoted (or an A/B test started), `rolled_back` when a gate failed
        or a replica could not serve it.
    """
    settings = get_settings()
    model_name = model_name or settings.model_name

    # Warm
    info, _smoke = warm_and_smoke_test(model_name, version)

    # Start: blue-green switches at once, the others at their first step
    params = {
        Strategy.CANARY: canary or CanaryParams(),
        Strategy.SHADOW: shadow or ShadowParams(),
        Strategy.AB_TEST: ab_test or ABTestParams(),
    }.get(strategy)
    rollout = start_rollout(
        info, strategy, environment, params, reason, current_flow_run_id(), test_name, confirm_timeout_s
    )
    if strategy == Strategy.AB_TEST:
        publish_model_status(model_name)
        return rollout

    # Hold each step until the replicas serve it and its gates decide
    outcome = hold_step(rollout.id)
    while not outcome.ended:
        outcome = hold_step(rollout.id)

    # Promote or roll back
    if outcome.event:
        emit(outcome.event, model_name, outcome.payload)
    final = get_rollout(rollout.id)
    if strategy != Strategy.BLUE_GREEN or final.status != "active":
        publish_markdown(
            "rollout-report",
            report_markdown(final),
            f"{model_name} v{info.version} {strategy}: {final.status}",
        )
    publish_model_status(model_name)
    return final
