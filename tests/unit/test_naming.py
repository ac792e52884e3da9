"""Flow-run names and subflow tags (what the Prefect UI lists)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from nfl_mlops.naming import run_name, run_tags


def test_runs_are_named_for_what_they_do(settings) -> None:
    at = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)
    assert run_name("training", {"model_name": "nfl-sentiment"}) == "train-nfl-sentiment"
    assert run_name("training", {}) == f"train-{settings.model_name}"  # the default model
    assert run_name("registration", {"candidate": SimpleNamespace(model_name="m")}) == "register-m"
    assert run_name("registration", {"candidate": {"model_name": "m"}}) == "register-m"  # from a deployment
    assert (
        run_name("deployment", {"model_name": "m", "version": "3", "strategy": "canary"})
        == "deploy-m-v3-canary"
    )
    assert run_name("deployment", {"model_name": "m"}) == "deploy-m-challenger-blue_green"
    assert run_name("monitoring", {"model_name": "m", "end": at}) == "monitor-m-2026-12-01T22:00"
    assert run_name("monitoring", {"model_name": "m", "end": at.isoformat()}) == "monitor-m-2026-12-01T22:00"
    assert run_name("monitoring", {"model_name": "m"}, now=at) == "monitor-m-2026-12-01T22:00"
    retrain = {"model_name": "m", "trigger": "automation", "reason": "drift: 11/11 signals"}
    assert run_name("retraining", retrain) == "retrain-m-automation-drift"
    assert (
        run_name("retraining", {"model_name": "m", "reason": "Performance degraded"})
        == "retrain-m-manual-degraded"
    )
    assert run_name("pipeline", {"model_name": "m", "strategy": "canary"}) == "pipeline-m-canary"
    assert run_name("hpo", {"model_name": "M One"}) == "hpo-m-one"
    assert len(run_name("training", {"model_name": "x" * 500})) <= 80
    assert run_name("monitoring", {"model_name": "m", "end": "not a time"}) == "monitoring"  # never raises


def test_subflow_tags() -> None:
    assert run_tags("m") == ["model:m"]
    assert run_tags("m", 3, trigger="automation", reason="drift", episode=None) == [
        "model:m",
        "version:v3",
        "trigger:automation",
        "reason:drift",
    ]
