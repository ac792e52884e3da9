"""The deployment actions, once: check a version is servable (load, warm, smoke test), deploy it, roll back.

The deployment flow's tasks, the `/mlops/deployments` routes, the SDK and the CLI are thin shells over
these functions, so each action has the same side effects whichever door it comes through:

- `check_servable`: the version is `ready`, loads, warms and passes its smoke test, else `NotServable`.
- `deploy`: the rollout starts with its strategy and is ticked once (`settle`). `champion` moves, and
  `nfl-mlops.rollout.promoted` is emitted, only once every live API replica serves the new version
  (`rollout.replicas`): for blue-green at the first tick that finds it confirmed (at once when no replica
  is live), for a driven strategy (canary, shadow, A/B) when the controller's promotion is confirmed.
  Whoever drives the rollout keeps ticking it (the flow's hold loop, or the API replicas' driver); a
  replica that cannot load the version, or a deadline without confirmation, rolls it back.
- `rollback`: traffic returns to the previous version, an A/B test riding on the rollout is stopped,
  `champion` moves back, and `nfl-mlops.rollout.rolled_back` is emitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nfl_mlops import events
from nfl_mlops.registry.store import Registry, VersionInfo
from nfl_mlops.rollout import abtest, controller, replicas
from nfl_mlops.rollout import state as rollouts
from nfl_mlops.rollout.smoke import smoke_test
from nfl_mlops.rollout.strategies import Strategy


class NotServable(rollouts.RolloutError):
    """The version cannot take traffic: not `ready`, does not load, or fails its smoke test."""


def load_model(info: VersionInfo) -> Any:
    """Load and warm a registered version in this process."""
    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.registry.artifacts import resolve_version

    model = SentimentModel.load(resolve_version(info), name=f"{info.model_name}-v{info.version}")
    model.warmup()
    return model


def check_servable(
    registry: Registry, model_name: str, version: int | str, loader: Callable[[VersionInfo], Any] = load_model
) -> tuple[VersionInfo, dict[str, Any]]:
    """Resolve `version`, load and warm it (with `loader`: the API passes its own cache) and smoke-test it.

    Returns:
        The version and its smoke-test report.

    Raises:
        NotFoundError: unknown model or version. NotServable: with a message that says why.
    """
    info = registry.get(model_name, version)
    if info.status != "ready":
        raise NotServable(
            f"{info.model_name} v{info.version} is {info.status}; only a ready version can be deployed"
        )
    try:
        model = loader(info)
    except Exception as exc:  # a folder that does not load: say so, without a trace
        raise NotServable(
            f"{info.model_name} v{info.version} does not load: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    try:
        report = smoke_test(model)
    except Exception as exc:
        raise NotServable(
            f"smoke test of {info.model_name} v{info.version} raised {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    if not report["passed"]:
        raise NotServable(f"{info.model_name} v{info.version} failed its smoke test: {report}")
    return info, report


def deploy(
    registry: Registry,
    model_name: str,
    version: int,
    strategy: Strategy | str,
    environment: str = "production",
    params: Any = None,
    reason: str | None = None,
    driver: str = "api",
    flow_run_id: str | None = None,
    test_name: str | None = None,
    version_a: int | None = None,
    db_url: str | None = None,
    confirm_timeout_s: float = replicas.CONFIRM_TIMEOUT_S,
) -> rollouts.RolloutInfo:
    """Start the rollout of a (checked) version and tick it once (`settle`).

    Returns the rollout after that tick: a blue-green switch is `promoted` (champion moved) when no other
    replica had to confirm it, else `promoting` until the driver sees every live replica serve it.

    Raises:
        RolloutError: another rollout of the model is in progress, the strategy has nothing to compare with,
            or an A/B test named `test_name` is already running.
    """
    strategy = Strategy(strategy)
    if test_name and abtest.running_test_named(test_name, db_url) is not None:
        raise rollouts.RolloutError(f"an A/B test named {test_name!r} is already running")
    r = controller.start_rollout(
        model_name,
        version,
        strategy,
        environment,
        params=params,
        reason=reason,
        flow_run_id=flow_run_id,
        driver=driver,
        test_name=test_name,
        version_a=version_a,
        db_url=db_url,
        confirm_timeout_s=confirm_timeout_s,
    )
    return settle(registry, r.id, db_url).rollout


def settle(registry: Registry, deployment_id: str, db_url: str | None = None) -> controller.Outcome:
    """Tick a rollout that awaits the replicas' confirmation once, and emit its event when it moved (best effort).

    The HTTP route calls it again after its own replica has switched, so a single-replica API answers a
    blue-green deployment promoted.
    """
    r = rollouts.get_rollout(deployment_id, db_url)
    if not controller.awaiting(r):
        return controller.Outcome(r, controller.Decision("hold", "nothing to confirm"), False)
    out = controller.tick(deployment_id, db_url=db_url, registry=registry)
    if out.applied:
        controller.emit_best_effort(out)
    return out


def rollback(
    registry: Registry, deployment_id: str, reason: str = "manual rollback", db_url: str | None = None
) -> rollouts.RolloutInfo:
    """Send all traffic back to the version that served before `deployment_id`; returns the new active rollout.

    Raises:
        RolloutNotFound: unknown deployment. RolloutError: it is not active or has no previous version.
    """
    before = rollouts.get_rollout(deployment_id, db_url)
    restored = rollouts.rollback(deployment_id, reason, db_url)
    test = abtest.ab_test_for_rollout(deployment_id, db_url)
    if test is not None:
        abtest.finish_record(test.id, "stopped", None, {"reason": reason}, db_url)
    registry.promote(restored.model_name, restored.version)
    events.emit(
        events.ROLLOUT_ROLLED_BACK,
        restored.model_name,
        {
            "deployment_id": deployment_id,
            "model_name": restored.model_name,
            "strategy": before.strategy,
            "version": before.version,
            "restored_version": restored.version,
            "reason": reason,
            "manual": True,
        },
    )
    return restored
