"""Rollout tasks: warm and smoke-test a version, switch traffic, confirm the API follows."""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.registry.store import Registry, VersionInfo
from nfl_mlops.rollout import state as rollouts
from nfl_mlops.rollout.smoke import SMOKE_CASES, smoke_test


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
    r = rollouts.activate(info.model_name, info.version, strategy=strategy, environment=environment,
                          reason=reason, flow_run_id=flow_run_id)
    get_run_logger().info("deployment %s: all traffic on v%d (previous v%s)", r.id, r.version, r.previous_version)
    return r


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
