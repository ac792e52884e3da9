"""End to end on a real Prefect server: a drift event makes the automation run the retraining
deployment through a process worker; the challenger that passes the gate goes out by canary while
live traffic reaches the real API (the gates promote it); a second event for the same drift episode
starts no training (the episode had its one retraining)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "e2e-model"
POOL = "e2e-process-pool"


async def _runs_of(client, deployment_id):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return await client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )


async def _wait_for_new_run(client, deployment_id, known: set, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [r for r in await _runs_of(client, deployment_id) if r.id not in known]
        if fresh:
            return fresh[0]
        await asyncio.sleep(0.5)
    raise AssertionError("the automation created no flow run for the drift event")


async def _execute(client, run_id, timeout=600.0):
    """Let a real process worker pick the run up and wait for a final state."""
    from prefect.workers.process import ProcessWorker

    deadline = time.monotonic() + timeout
    async with ProcessWorker(work_pool_name=POOL) as worker:
        while time.monotonic() < deadline:
            await worker.get_and_submit_flow_runs()
            run = await client.read_flow_run(run_id)
            if run.state and run.state.is_final():
                return run
            await asyncio.sleep(2)
    raise AssertionError(f"flow run {run_id} did not finish in {timeout}s")


def _emit_drift(share: float, episode_id: str) -> None:
    from prefect.events import emit_event

    emit_event(
        event="nfl-mlops.drift.detected",
        resource={"prefect.resource.id": f"nfl-mlops.model.{MODEL}"},
        payload={"reason": "drift", "drift_share": share, "episode_id": episode_id},
    )


@pytest.fixture(scope="module")
def champion(settings):
    """v1 (small recipe) so that the triggered retraining reuses a small recipe."""
    from flows.pipeline import pipeline_flow
    from nfl_mlops.modeling.params import DataParams, TrainParams

    return pipeline_flow(
        data=DataParams(topics_exclude=["nfl"], max_train_samples=300, max_eval_samples=150, seed=5),
        train=TrainParams(epochs=1, learning_rate=2e-4, max_length=48),
        model_name=MODEL,
    )


@pytest.fixture(scope="module")
def api(champion):
    """The real API serving MODEL (v1 now), in this process."""
    from tests.api.helpers import api_settings, serving

    with serving(api_settings(MODEL)) as handle:
        yield handle


# small steps so that the test's trickle of traffic decides them in seconds
CANARY = {
    "steps": [50.0, 100.0],
    "min_requests": 10,
    "check_seconds": 0.5,
    "max_wait_s": 300.0,
    "gates": {"max_label_tvd": 1.0, "latency_slack_ms": 5000.0},
}


async def test_drift_event_triggers_retraining_once_per_episode(champion, api, settings, monkeypatch):
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from deployments.demo import CanaryTraffic
    from flows.retraining import retraining_flow
    from nfl_mlops.db import RetrainingJob, session_scope
    from nfl_mlops.monitoring import episodes as ep
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import state as rollouts

    assert champion["passed"]
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
    trigger = DeploymentEventTrigger(
        enabled=True,
        match={"prefect.resource.id": "nfl-mlops.model.*"},
        expect={"nfl-mlops.drift.detected"},
        posture="Reactive",
        threshold=1,
        within=0,
        parameters={
            "trigger": "automation",
            "model_name": MODEL,
            "strategy": "canary",
            "canary": CANARY,
            "api_url": api.base_url,
            "reason": "{{ event.payload.reason | default('drift') }}",
            "drift_share": "{{ event.payload.drift_share | default(0.0) }}",
            "episode_id": "{{ event.payload.episode_id | default('') }}",
        },
    )
    source = await retraining_flow.from_source(
        source=str(ROOT), entrypoint="flows/retraining.py:retraining_flow"
    )
    deployment_id = await source.deploy(
        name="e2e-retraining", work_pool_name=POOL, triggers=[trigger], print_next_steps=False
    )
    monkeypatch.setenv("NFL_MLOPS_ROOT", str(ROOT))

    async with get_client() as client:
        # First drift event -> the automation creates a run -> a worker executes it -> v2 exists
        known = {r.id for r in await _runs_of(client, deployment_id)}
        episode, _ = ep.open_episode(MODEL, 1, "stable", "drift", "drift (test)", None, settings.db_url)
        _emit_drift(0.6, episode.id)
        run = await _wait_for_new_run(client, deployment_id, known)
        assert run.parameters["trigger"] == "automation"
        assert run.parameters["drift_share"] == pytest.approx(0.6)  # templated, JSON type kept
        texts = [
            "Touchdown Patriots!! what a drive #NFL",
            "That interception was awful, bench him",
            "Kickoff at 1pm on CBS",
            "Refs are blind today #SuperBowl",
            "Love this defense",
        ]
        with CanaryTraffic(api.base_url, MODEL, texts) as live:
            run = await _execute(client, run.id)
        assert run.state.is_completed(), run.state

        versions = Registry.from_settings().list_versions(MODEL)
        assert [v.version for v in versions] == [1, 2]
        assert versions[1].status in ("ready", "rejected")
        served = {
            a["version"] for r in rollouts.list_rollouts(MODEL, settings.db_url) for a in r.arms.values()
        }
        if versions[1].status == "ready":  # only a challenger that passed the gate is served, by canary
            canary = live.canary
            assert canary is not None and canary["model_version"] == 2, canary
            assert canary["status"] == "active" and canary["config"]["phase"] == "promoted", canary["history"]
            assert live.sent >= CANARY["min_requests"]
            assert Registry.from_settings().get(MODEL, "champion").version == 2
            assert rollouts.active_rollout(MODEL, "production", settings.db_url).version == 2
        else:  # a worse challenger is never served
            assert 2 not in served
            assert Registry.from_settings().get(MODEL, "champion").version == 1

        after = ep.get_episode(episode.id, settings.db_url)
        assert after.retraining_job_id is not None
        if versions[1].status == "ready":  # v2 serves: the episode closed with it
            assert after.status == "closed" and after.retrained_version == 2, after
        # Second event for the same episode -> a run, but it trains nothing
        known.add(run.id)
        _emit_drift(0.7, episode.id)
        second = await _wait_for_new_run(client, deployment_id, known)
        second = await _execute(client, second.id)
        assert second.state.is_completed()

    assert len(Registry.from_settings().list_versions(MODEL)) == 2
    with session_scope() as s:
        jobs = sorted(s.query(RetrainingJob).filter_by(model_name=MODEL).all(), key=lambda j: j.created_at)
    assert [j.trigger for j in jobs] == ["automation", "automation"]
    assert jobs[0].status in ("completed", "rejected")
    assert jobs[1].status == "skipped" and "episode" in jobs[1].result["skipped"], jobs[1].result
    assert second.state.name == "Skipped"
