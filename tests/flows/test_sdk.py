"""The Python facade, used the way SPEC.md's usage examples use it, against a real Prefect server,
the real state DB, a real (tiny) fine-tuned model and W&B in offline mode."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

MODEL = "nfl_sentiment_sdk"


def events_named(name: str, model_name: str) -> list:
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    from tests.api.helpers import wait_until

    def find():
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(event=EventNameFilter(name=[name])), limit=50)
        return [e for e in page.events if e.payload.get("model_name") == model_name]

    return wait_until(find, timeout=60, interval=0.5, what=f"event {name}")


async def test_the_facade_as_the_spec_uses_it(prefect_server, tiny_model_dir, settings) -> None:
    from sqlalchemy import select

    from flows.retraining import retraining_flow
    from nfl_mlops.db import Experiment, session_scope
    from nfl_mlops.registry.store import InvalidModelFolder
    from nfl_mlops.rollout import state as rollouts
    from nfl_mlops.rollout.state import RolloutError
    from nfl_mlops.sdk import (
        DeploymentStrategy,
        ExperimentNotRunning,
        ModelPerformanceMetrics,
        ModelType,
        mlops_service,
    )

    # Initialize MLOps services
    status = await mlops_service.initialize()
    assert status["initialized"] is True
    assert status["services"]["tracking"] == "wandb-offline" and status["services"]["prefect_api"] is True

    # Model management
    model_metadata = await mlops_service.register_model(
        model_name=MODEL,
        model_path=str(tiny_model_dir),
        model_type=ModelType.SENTIMENT_ANALYSIS,
        metrics={"accuracy": 0.87, "f1_score": 0.85},
        description="Enhanced NFL sentiment analysis model",
    )
    assert (model_metadata.model_id, model_metadata.version) == (MODEL, 1)
    card = (Path(model_metadata.path) / "README.md").read_text()
    assert "base_model" in card and "Enhanced NFL sentiment analysis model" in card
    v2 = await mlops_service.register_model(
        MODEL, tiny_model_dir, metrics={"accuracy": 0.88, "f1_score": 0.86}
    )
    assert v2.version == 2
    with pytest.raises(InvalidModelFolder, match="config.json"):
        await mlops_service.register_model(MODEL, Path(model_metadata.path).parent)  # not a model folder
    assert [m.version for m in await mlops_service.list_models(MODEL)] == [1, 2]  # nothing half-written

    deployment = await mlops_service.deploy_model(
        model_id=model_metadata.model_id,
        model_version=model_metadata.version,
        environment="production",
        strategy=DeploymentStrategy.BLUE_GREEN,
    )
    assert deployment["model_version"] == 1 and deployment["status"] == "active"
    assert rollouts.active_rollout(MODEL, "production", settings.db_url).id == deployment["deployment_id"]
    status = await mlops_service.get_service_status()
    assert status["models"][MODEL] == {"versions": 2, "champion": 1, "challenger": None}
    assert any(d["deployment_id"] == deployment["deployment_id"] for d in status["deployments"])

    # Experiment tracking
    run_id = await mlops_service.start_experiment(
        experiment_name="sentiment_model_training",
        config={"learning_rate": 2e-5, "batch_size": 16, "hub_token": "hf_not_for_logs"},
        tags=["sentiment", "nfl", "training"],
    )
    await mlops_service.log_metrics({"train_loss": 0.15, "val_accuracy": 0.87, "epoch": 1})
    assert await mlops_service.finish_experiment({"final_accuracy": 0.89, "final_f1": 0.87}) == run_id
    with session_scope(settings.db_url) as s:
        row = s.scalar(select(Experiment).where(Experiment.id == run_id))
        assert row.status == "finished" and row.tracker == "wandb-offline" and row.tracker_run_id
        assert row.metrics["val_accuracy"] == 0.87 and row.metrics["final_f1"] == 0.87
        assert "hf_not_for_logs" not in str(row.config) and row.config["learning_rate"] == 2e-5
        assert Path(row.run_dir).exists()  # an offline run `wandb sync` can send later
    with pytest.raises(ExperimentNotRunning):
        await mlops_service.log_metrics({"train_loss": 0.1})

    # A/B testing ("1.0" and "2.0" name v1 and v2)
    test_id = await mlops_service.create_ab_test(
        test_name="sentiment_model_comparison",
        model_a_id=MODEL,
        model_a_version="1.0",
        model_b_id=MODEL,
        model_b_version="2.0",
        traffic_split=50.0,
        duration_days=7,
    )
    test = await mlops_service.get_ab_test(test_id)
    assert (test["model_a_version"], test["model_b_version"], test["traffic_split"]) == (1, 2, 50.0)
    assert test["status"] == "running" and test["verdict"]["winner"] is None
    r = rollouts.active_rollout(MODEL, "production", settings.db_url)
    assert r.strategy == "ab_test" and {a["version"] for a in r.arms.values()} == {1, 2}
    with pytest.raises(RolloutError):  # one test at a time
        await mlops_service.create_ab_test("again", MODEL, 1, MODEL, 2)
    with pytest.raises(ValueError, match="same version"):
        await mlops_service.create_ab_test("same", MODEL, 1, MODEL, "v1")
    await mlops_service.rollback(r.id, "sdk test: end the A/B test")

    # Model monitoring: within tolerance, then degraded (-> event + retraining trigger state)
    healthy = await mlops_service.monitor_model_performance(
        model_id=MODEL,
        model_version="1.0",
        performance_metrics=ModelPerformanceMetrics(
            model_id=MODEL,
            model_version="1.0",
            timestamp=datetime.now(UTC),
            accuracy=0.85,
            f1_score=0.83,
            error_rate=0.01,
            avg_prediction_time_ms=45.0,
        ),
    )
    assert not healthy.degraded and healthy.reasons == [] and not healthy.event_emitted
    checked = await mlops_service.retraining_service.check_retraining_triggers(MODEL)
    assert checked["would_trigger"] is False

    performance_metrics = ModelPerformanceMetrics(
        model_id=MODEL,
        model_version="1.0",
        timestamp=datetime.now(UTC),
        accuracy=0.70,
        f1_score=0.83,
        error_rate=0.05,
        avg_prediction_time_ms=45.0,
        prediction_count=500,
    )
    verdict = await mlops_service.monitor_model_performance(
        model_id=MODEL, model_version="1.0", performance_metrics=performance_metrics
    )
    assert verdict.degraded and verdict.event_emitted
    assert any(r.startswith("accuracy 0.700") for r in verdict.reasons)
    assert any(r.startswith("error rate") for r in verdict.reasons) and len(verdict.reasons) == 2
    [event] = events_named("nfl-mlops.performance.degraded", MODEL)
    assert event.payload["model_version"] == 1 and "accuracy" in event.payload["reason"]
    trigger_status = await mlops_service.retraining_service.check_retraining_triggers(MODEL)
    assert trigger_status["would_trigger"] is True
    assert trigger_status["latest_monitoring"]["performance_degraded"] is True
    assert "nfl-mlops.drift.detected" in trigger_status["event_triggers"]

    # Automated retraining: the run is created on the real Prefect deployment with the overrides
    with pytest.raises(LookupError):
        await mlops_service.trigger_retraining("no_such_model", reason="x")
    await (await retraining_flow.to_deployment(name="retraining")).apply()
    run_id = await mlops_service.trigger_retraining(
        model_name=MODEL, reason="performance_degradation", config={"epochs": 5, "learning_rate": 1e-5}
    )
    from prefect import get_client

    async with get_client() as client:
        run = await client.read_flow_run(run_id)
    assert run.parameters["model_name"] == MODEL and run.parameters["reason"] == "performance_degradation"
    assert run.parameters["train"]["epochs"] == 5 and run.parameters["train"]["learning_rate"] == 1e-5
    jobs = await mlops_service.retraining_service.list_jobs(MODEL)
    assert (
        jobs[0]["flow_run_id"] == run_id and jobs[0]["status"] == "scheduled" and jobs[0]["trigger"] == "sdk"
    )
    async with get_client() as client:  # it must not run in a test: cancel it
        from prefect.states import Cancelled

        await client.set_flow_run_state(run_id, Cancelled(), force=True)


async def test_retraining_without_prefect_is_recorded_as_failed(tiny_model_dir, monkeypatch) -> None:
    from nfl_mlops.retraining import RetrainingNotStarted
    from nfl_mlops.sdk import MLOpsService

    svc = MLOpsService()
    await svc.initialize()
    await svc.register_model("nfl_sentiment_sdk_offline", tiny_model_dir)
    monkeypatch.setitem(os.environ, "PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens there
    with pytest.raises(RetrainingNotStarted, match="not reachable") as err:
        await svc.trigger_retraining("nfl_sentiment_sdk_offline", reason="manual")
    [job] = await svc.retraining_service.list_jobs("nfl_sentiment_sdk_offline")
    assert (
        job["job_id"] == err.value.job_id
        and job["status"] == "failed"
        and "not reachable" in job["result"]["error"]
    )


def test_performance_judgement_is_a_pure_function() -> None:
    from nfl_mlops.monitoring.performance import judge_reported
    from nfl_mlops.sdk import ModelPerformanceMetrics

    m = ModelPerformanceMetrics(
        model_id="m",
        model_version=1,
        timestamp=datetime.now(UTC),
        accuracy=0.80,
        f1_score=0.70,
        error_rate=0.0,
    )
    ref = {"accuracy": 0.84, "f1_score": 0.80}
    assert judge_reported(m.model_dump(), ref, max_drop=0.05, max_error_rate=0.02) == [
        "f1_score 0.700 is 0.100 below the registered 0.800 (allowed drop 0.050)"
    ]
    assert judge_reported(m.model_dump(), {"accuracy": None, "f1_score": None}, 0.05, 0.02) == []
    with pytest.raises(ValueError):
        ModelPerformanceMetrics(model_id="m", model_version=1, timestamp=datetime.now(UTC), accuracy=1.5)
