"""Each default is defined once: prefect.yaml, the CLI, the API, the SDK and the stack take theirs from the
flows' typed parameters and the settings, and say so only where they deliberately differ."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _spec() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def _flow(entrypoint: str) -> Any:
    module, name = entrypoint.split(":")
    return getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)


def _defaults(flow: Any) -> dict[str, Any]:
    return {n: p.default for n, p in inspect.signature(flow.fn).parameters.items()}


DEPLOYMENTS = [d["name"] for d in _spec()["deployments"]]


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_prefect_yaml_sets_only_parameters_the_flow_has(name: str) -> None:
    d = next(d for d in _spec()["deployments"] if d["name"] == name)
    params = _defaults(_flow(d["entrypoint"]))
    given = dict(d.get("parameters") or {})
    for trigger in d.get("triggers") or []:
        given.update(trigger.get("parameters") or {})
    unknown = sorted(set(given) - set(params))
    assert not unknown, f"prefect.yaml gives {name} parameters its flow does not have: {unknown}"


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_prefect_yaml_repeats_no_flow_default(name: str) -> None:
    """A deployment parameter exists only where the deployment deliberately differs from the flow."""
    d = next(d for d in _spec()["deployments"] if d["name"] == name)
    defaults = _defaults(_flow(d["entrypoint"]))
    repeated = {
        k: v
        for k, v in (d.get("parameters") or {}).items()
        if k in defaults and defaults[k] is not inspect.Parameter.empty and defaults[k] == v
    }
    assert not repeated, f"prefect.yaml repeats the flow's defaults for {name}: {repeated}"


def test_strategies_in_prefect_yaml_are_known() -> None:
    from nfl_mlops.rollout.strategies import Strategy

    for d in _spec()["deployments"]:
        strategy = (d.get("parameters") or {}).get("strategy")
        if strategy is not None:
            Strategy(strategy)  # ValueError names the typo


def test_the_work_pool_is_named_once() -> None:
    """prefect.yaml names it (once, by an anchor); the stack creates and polls what prefect.yaml says."""
    from deployments.stack import declared_work_pool
    from nfl_mlops.settings import Settings

    pools = {d["work_pool"]["name"] for d in _spec()["deployments"]}
    assert len(pools) == 1 and declared_work_pool() == pools.pop()
    assert "work_pool" not in Settings.model_fields


def test_cli_and_stack_take_ports_from_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from deployments.cli import build_parser
    from deployments.stack import LocalStack
    from nfl_mlops.settings import get_settings

    for argv in (["demo"], ["up"], ["serve"]):
        args = build_parser().parse_args(argv)
        assert {getattr(args, k, None) for k in ("prefect_port", "api_port", "port", "host")} == {None}, argv
    monkeypatch.setenv("MLOPS_API_PORT", "8123")
    monkeypatch.setenv("MLOPS_PREFECT_PORT", "4321")
    get_settings.cache_clear()
    try:
        stack = LocalStack(home=tmp_path)
        assert (stack.api_port, stack.prefect_port) == (8123, 4321)
        assert stack.work_pool == "nfl-mlops-process"
    finally:
        monkeypatch.delenv("MLOPS_API_PORT")
        monkeypatch.delenv("MLOPS_PREFECT_PORT")
        get_settings.cache_clear()


def test_every_door_deploys_with_the_same_default_strategy() -> None:
    from flows.deployment import deployment_flow
    from flows.pipeline import pipeline_flow
    from nfl_mlops.sdk import MLOpsService
    from nfl_mlops.serving.schemas import DeployRequest

    api = DeployRequest(model_id="m", model_version=1).strategy
    sdk = inspect.signature(MLOpsService.deploy_model).parameters["strategy"].default
    assert api == sdk == _defaults(deployment_flow)["strategy"] == _defaults(pipeline_flow)["strategy"]


def test_a_strategy_typo_is_refused_before_any_work() -> None:
    from pydantic import ValidationError

    from nfl_mlops.serving.schemas import DeployRequest

    with pytest.raises(ValidationError):
        DeployRequest(model_id="m", model_version=1, strategy="canery")


def test_ab_test_defaults_are_the_strategy_settings() -> None:
    """The HTTP request and the SDK take the A/B test's defaults from `ABTestParams`, never restate them."""
    import inspect

    from nfl_mlops.rollout.strategies import ABTestParams
    from nfl_mlops.sdk import MLOpsService
    from nfl_mlops.serving.schemas import CreateABTestRequest

    d = ABTestParams()
    fields = CreateABTestRequest.model_fields
    for k in ("traffic_split", "duration_days", "min_samples", "alpha", "promote_winner", "check_seconds"):
        assert fields[k].default == getattr(d, k), k
    sdk = inspect.signature(MLOpsService.create_ab_test).parameters
    assert sdk["traffic_split"].default is None and sdk["duration_days"].default is None


def test_prefect_yaml_triggers_expect_the_library_event_names() -> None:
    from nfl_mlops import events

    expected = {
        e for d in _spec()["deployments"] for t in d.get("triggers") or [] for e in t.get("expect") or []
    }
    assert expected == {
        events.event_name(events.DRIFT_DETECTED),
        events.event_name(events.PERFORMANCE_DEGRADED),
    }


def test_automations_are_named_and_described() -> None:
    """Their cards in the Prefect UI say what they do (not `retraining__automation_1`)."""
    triggers = [t for d in _spec()["deployments"] for t in d.get("triggers") or []]
    names = [t.get("name") for t in triggers]
    assert names == ["retrain-on-drift", "retrain-on-degradation"]
    assert all(len(t.get("description", "")) > 40 for t in triggers)
