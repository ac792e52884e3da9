"""Rollout tasks: warm and smoke-test a version, switch traffic or start a stepped rollout, hold each
step until its gates decide, confirm the API follows."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.registry.store import Registry, VersionInfo
from nfl_mlops.rollout import controller
from nfl_mlops.rollout import state as rollouts
from nfl_mlops.rollout.smoke import SMOKE_CASES, smoke_test
from nfl_mlops.rollout.strategies import ABTestParams, CanaryParams, ShadowParams


@task(name="warm-and-smoke-test", cache_policy=NO_CACHE)
def warm_and_smoke_test(model_name: str, version: str | int) -> tuple[VersionInfo, dict[str, Any]]:
    """Load the version, warm it up, and check it answers sanely before any traffic moves."""
    from nfl_mlops.modeling.predictor import SentimentModel

    info = Registry.from_settings().get(model_name, version)
    if info.status != "ready":
        raise ValueError(f"{model_name} v{info.version} is {info.status}; refusing to deploy it")
    model = SentimentModel.load(info.path)
    model.warmup()
    report = smoke_test(model, SMOKE_CASES)
    get_run_logger().info("smoke test of v%d: %s", info.version, report)
    if not report["passed"]:
        raise RuntimeError(f"smoke test failed for {model_name} v{info.version}: {report}")
    return info, report


@task(name="switch-traffic", cache_policy=NO_CACHE)
def switch_traffic(info: VersionInfo, strategy: str, environment: str, reason: str | None,
                   flow_run_id: str | None) -> rollouts.RolloutInfo:
    """Blue-green: all traffic on the new version at once (refused while a stepped rollout is in progress)."""
    r = controller.start_rollout(info.model_name, info.version, strategy, environment, reason=reason,
                                 flow_run_id=flow_run_id, driver="flow")
    get_run_logger().info("deployment %s: all traffic on v%d (previous v%s)", r.id, r.version, r.previous_version)
    return r


@task(name="start-rollout", cache_policy=NO_CACHE)
def start_rollout(info: VersionInfo, strategy: str, environment: str,
                  params: CanaryParams | ShadowParams | ABTestParams, reason: str | None, flow_run_id: str | None,
                  test_name: str | None = None) -> rollouts.RolloutInfo:
    """Start a canary, shadow or A/B rollout at its first step.

    Canary and shadow are driven by this flow; an A/B test runs for days, so the serving API's replicas
    end it when its duration is over.
    """
    driver = "api" if strategy == "ab_test" else "flow"
    r = controller.start_rollout(info.model_name, info.version, strategy, environment, params=params, reason=reason,
                                 flow_run_id=flow_run_id, driver=driver, test_name=test_name)
    get_run_logger().info("deployment %s (%s): traffic %s", r.id, strategy, r.arms)
    return r


@task(name="hold-step", cache_policy=NO_CACHE)
def hold_step(rollout_id: str, poll_seconds: float | None = None) -> controller.Outcome:
    """Hold the rollout's current step, evaluating its gates, until it moves (next step, promoted, rolled back)."""
    logger = get_run_logger()
    seen: dict[str, str] = {}

    def report(out: controller.Outcome) -> None:
        gates = "; ".join(f"{g.name}={'pass' if g.passed else 'FAIL' if g.passed is False else 'wait'}"
                          for g in out.decision.gates)
        line = f"{out.decision.action}: {out.decision.reason} [{gates}]"
        if seen.get("last") != line:  # log changes, not every poll
            logger.info(line)
            seen["last"] = line

    out = controller.drive(rollout_id, until="transition", poll_seconds=poll_seconds, on_tick=report)
    if out.rollout.status != "active" and out.decision.action == "hold":
        logger.warning("deployment %s ended outside this flow: %s", rollout_id, out.rollout.reason)
    return out


@task(name="wait-for-api", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 5])
def wait_for_api(api_url: str, version: int, timeout_s: float = 120.0) -> bool:
    """Poll the API's health until it serves `version` (False when it never does)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            body = httpx.get(f"{api_url.rstrip('/')}/mlops/health", timeout=5).json()
            if body.get("serving_version") == version and body.get("status") == "healthy":
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    get_run_logger().warning("API at %s did not report v%d healthy within %.0fs", api_url, version, timeout_s)
    return False
