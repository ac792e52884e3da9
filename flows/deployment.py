"""Deployment flow: warm + smoke-test the version, then roll it out with a strategy.

- blue_green: switch all traffic at once; the previous version stays warm for instant rollback.
- canary: traffic steps, each held until its gates pass (error rate, p95 latency, label shift vs.
  stable); a failed gate rolls back and emits `nfl-mlops.rollout.rolled_back`.
- shadow: the candidate answers a copy of the traffic (logged, never returned); errors, latency and
  agreement with stable decide.
- ab_test: arms A (serving now) and B split by percentage; the serving API ends it after
  `duration_days` (a worker is not held for days), the winner by significance test.

Promotion moves the `champion` alias and emits `nfl-mlops.rollout.promoted`.
"""

from __future__ import annotations

from prefect import flow

from nfl_mlops import events
from nfl_mlops.lineage import current_flow_run_id
from nfl_mlops.rollout.controller import report_markdown
from nfl_mlops.rollout.state import RolloutInfo, get_rollout
from nfl_mlops.rollout.strategies import ABTestParams, CanaryParams, ShadowParams, Strategy
from nfl_mlops.settings import get_settings
from tasks.alerts import emit, publish_markdown
from tasks.rollout import hold_step, start_rollout, wait_for_api, warm_and_smoke_test


@flow(name="deployment", log_prints=True)
def deployment_flow(
    version: str = "challenger",
    model_name: str | None = None,
    strategy: Strategy = Strategy.BLUE_GREEN,
    environment: str = "production",
    api_url: str | None = None,
    reason: str | None = None,
    canary: CanaryParams | None = None,
    shadow: ShadowParams | None = None,
    ab_test: ABTestParams | None = None,
    test_name: str | None = None,
) -> RolloutInfo:
    """Roll out `version` (a number, `v3` or an alias) with `strategy`.

    Args:
        api_url: when given (default MLOPS_API_URL), wait until that API reports the promoted version healthy.
        canary, shadow, ab_test: settings of that strategy (defaults when omitted).
        test_name: name of the A/B test record.

    Returns:
        The rollout record: `active` when promoted (or an A/B test started), `rolled_back` when a gate failed.
    """
    settings = get_settings()
    model_name = model_name or settings.model_name
    api_url = api_url or settings.api_url

    # Warm
    info, _smoke = warm_and_smoke_test(model_name, version)

    # Switch at once
    if strategy == Strategy.BLUE_GREEN:
        rollout = start_rollout(info, strategy, environment, None, reason, current_flow_run_id())
        if api_url:
            wait_for_api(api_url, info.version)
        emit(events.ROLLOUT_PROMOTED, model_name, {"version": info.version,
                                                   "previous_version": rollout.previous_version,
                                                   "deployment_id": rollout.id, "strategy": str(strategy)})
        return rollout

    # Start stepped
    params = {Strategy.CANARY: canary or CanaryParams(), Strategy.SHADOW: shadow or ShadowParams(),
              Strategy.AB_TEST: ab_test or ABTestParams()}[strategy]
    rollout = start_rollout(info, strategy, environment, params, reason, current_flow_run_id(), test_name)
    if strategy == Strategy.AB_TEST:
        return rollout

    # Hold each step until its gates decide
    outcome = hold_step(rollout.id)
    while not outcome.ended:
        outcome = hold_step(rollout.id)

    # Promote or roll back
    if outcome.event:
        emit(outcome.event, model_name, outcome.payload)
    final = get_rollout(rollout.id)
    publish_markdown("rollout-report", report_markdown(final), f"{model_name} v{info.version} {strategy}: {final.status}")
    if final.status == "active" and api_url:
        wait_for_api(api_url, info.version)
    return final
