"""Deployment flow: warm + smoke-test the version, switch traffic (blue-green), move `champion`."""

from __future__ import annotations

from prefect import flow

from nfl_mlops.lineage import current_flow_run_id
from nfl_mlops.rollout.state import RolloutInfo
from nfl_mlops.settings import get_settings
from tasks.alerts import emit
from tasks.registry import promote
from tasks.rollout import switch_traffic, wait_for_api, warm_and_smoke_test


@flow(name="deployment", log_prints=True)
def deployment_flow(
    version: str = "challenger",
    model_name: str | None = None,
    strategy: str = "blue_green",
    environment: str = "production",
    api_url: str | None = None,
    reason: str | None = None,
) -> RolloutInfo:
    """Roll out `version` (a number, `v3` or an alias); the previous version stays warm for rollback.

    Args:
        api_url: when given (default MLOPS_API_URL), wait until that API reports the new version healthy.
    """
    settings = get_settings()
    model_name = model_name or settings.model_name
    api_url = api_url or settings.api_url
    # Warm
    info, _smoke = warm_and_smoke_test(model_name, version)
    # Switch
    rollout = switch_traffic(info, strategy, environment, reason, current_flow_run_id())
    promote(model_name, info.version)
    if api_url:
        wait_for_api(api_url, info.version)
    emit("rollout.promoted", model_name, {"version": info.version, "previous_version": rollout.previous_version,
                                          "deployment_id": rollout.id, "strategy": strategy})
    return rollout
