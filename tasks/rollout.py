"""Rollout tasks: warm and smoke-test a version, switch traffic or start a stepped rollout, hold each
step until every live API replica serves it and its gates decide."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.registry.store import Registry, VersionInfo
from nfl_mlops.rollout import actions, controller, replicas
from nfl_mlops.rollout import state as rollouts
from nfl_mlops.rollout.strategies import ABTestParams, CanaryParams, ShadowParams, Strategy


@task(name="warm-and-smoke-test", cache_policy=NO_CACHE)
def warm_and_smoke_test(model_name: str, version: str | int) -> tuple[VersionInfo, dict[str, Any]]:
    """Load the version, warm it up, and check it answers sanely before any traffic moves."""
    info, report = actions.check_servable(Registry.from_settings(), model_name, version)
    get_run_logger().info("smoke test of v%d: %s", info.version, report)
    return info, report


@task(name="start-rollout", cache_policy=NO_CACHE)
def start_rollout(
    info: VersionInfo,
    strategy: Strategy,
    environment: str,
    params: CanaryParams | ShadowParams | ABTestParams | None,
    reason: str | None,
    flow_run_id: str | None,
    test_name: str | None = None,
    confirm_timeout_s: float = replicas.CONFIRM_TIMEOUT_S,
) -> rollouts.RolloutInfo:
    """Start the rollout: blue-green switches all traffic at once (`champion` moves once every live API
    replica serves it); canary and shadow start at their first step, driven by this flow; an A/B test runs
    for days, so the serving API's replicas drive it and end it when its duration is over."""
    driver = "api" if strategy == Strategy.AB_TEST else "flow"
    r = actions.deploy(
        Registry.from_settings(),
        info.model_name,
        info.version,
        strategy,
        environment,
        params=params,
        reason=reason,
        driver=driver,
        flow_run_id=flow_run_id,
        test_name=test_name,
        confirm_timeout_s=confirm_timeout_s,
    )
    get_run_logger().info(
        "deployment %s (%s of v%d, previous v%s): traffic %s",
        r.id,
        strategy,
        r.version,
        r.previous_version,
        r.arms,
    )
    return r


@task(name="hold-step", cache_policy=NO_CACHE)
def hold_step(rollout_id: str, poll_seconds: float | None = None) -> controller.Outcome:
    """Hold the rollout's current step until it moves: the replicas confirm its traffic (or fail to: rolled
    back), then its gates decide (next step, promotion, rollback)."""
    logger = get_run_logger()
    seen: dict[str, str] = {}

    def report(out: controller.Outcome) -> None:
        gates = "; ".join(
            f"{g.name}={'pass' if g.passed else 'FAIL' if g.passed is False else 'wait'}"
            for g in out.decision.gates
        )
        line = f"{out.decision.action}: {out.decision.reason} [{gates}]"
        if seen.get("last") != line:  # log changes, not every poll
            logger.info(line)
            seen["last"] = line

    out = controller.drive(rollout_id, until="transition", poll_seconds=poll_seconds, on_tick=report)
    if out.rollout.status != "active" and out.decision.action == "hold":
        logger.warning("deployment %s ended outside this flow: %s", rollout_id, out.rollout.reason)
    return out
