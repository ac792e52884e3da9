"""The deployment flow drives canaries for real (temporary Prefect server, real API, real traffic), and the
API starts the retraining deployment through Prefect.

A uvicorn server (in a thread) serves this module's model while a background thread sends traffic;
`deployment_flow` runs in the test's thread, holds each canary step until its gates decide, and emits
the `nfl-mlops.rollout.*` events that the tests read back from the Prefect server.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import api_settings, make_client, serving, wait_serving, wait_until
from tests.api.rollout_helpers import POOL, Traffic, slow_down

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server"), pytest.mark.timeout(900)]

MODEL = "flow-strategies"
WORK_POOL = "strategies-pool"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api(settings, tiny_model_dir):
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import state as rollouts

    s = api_settings(MODEL)
    reg = Registry.from_settings(s)
    assert [reg.register(MODEL, tiny_model_dir).version for _ in range(3)] == [1, 2, 3]
    rollouts.activate(MODEL, 1, reason="flow strategy tests: initial", db_url=s.db_url)
    reg.promote(MODEL, 1)
    with serving(s) as handle:
        yield handle


def events_named(name: str, deployment_id: str, timeout: float = 60.0) -> list[Any]:
    """Events `name` about `deployment_id` on the Prefect server (they arrive asynchronously)."""
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    def find():
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(event=EventNameFilter(name=[name])), limit=50)
        return [e for e in page.events if e.payload.get("deployment_id") == deployment_id]

    return wait_until(find, timeout=timeout, interval=0.5, what=f"event {name}")


def test_flow_canary_promotes_a_good_candidate_and_emits_promoted(api):
    from flows.deployment import deployment_flow
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout.gates import GateParams
    from nfl_mlops.rollout.strategies import CanaryParams

    params = CanaryParams(
        steps=[25, 100],
        min_requests=6,
        max_wait_s=300,
        check_seconds=0.3,
        gates=GateParams(latency_slack_ms=5000),
    )
    with Traffic(api.base_url, lambda i: POOL[i % len(POOL)]) as traffic:
        r = deployment_flow(
            version="2", model_name=MODEL, strategy="canary", canary=params, reason="flow test"
        )
    assert r.status == "active" and r.config["phase"] == "promoted", r.history
    assert r.arms == {"stable": {"version": 2, "weight": 100.0}} and r.previous_version == 1
    assert r.config["driver"] == "flow" and r.flow_run_id
    assert [h["event"] for h in r.history] == ["activated", "promoted"]
    assert Registry.from_settings().get(MODEL, "champion").version == 2
    assert set(traffic.statuses) == {200} and {p["model_version"] for p in traffic.responses} >= {1, 2}
    [event] = events_named("nfl-mlops.rollout.promoted", r.id)
    assert event.payload["version"] == 2 and event.payload["strategy"] == "canary"
    assert event.resource.id == f"nfl-mlops.model.{MODEL}"
    with make_client(api.base_url) as c:
        wait_serving(c, 2)
    # the rollout's report artifact: its history table and the chart of its traffic steps and gate checks
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        reports = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["rollout-report"]))
        )
    report = max(reports, key=lambda a: a.created).data
    assert "v2 (canary)" in report and "![traffic steps and gate checks](data:image/png;base64," in report


def test_flow_canary_rolls_back_a_slow_candidate_and_emits_rolled_back(api, monkeypatch):
    from flows.deployment import deployment_flow
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import state as rollouts
    from nfl_mlops.rollout.gates import GateParams
    from nfl_mlops.rollout.strategies import CanaryParams

    before = rollouts.active_rollout(MODEL)
    stable = rollouts.serving_version(before.arms)
    slow_down(monkeypatch, MODEL, 3, 1.0)  # only the API's copy of v3 is slow; the flow's smoke test is not
    params = CanaryParams(
        steps=[50, 100], min_requests=5, max_wait_s=300, check_seconds=0.3, gates=GateParams(max_p95_ms=900)
    )
    with Traffic(api.base_url, lambda i: f"{POOL[i % len(POOL)]} #{i}") as traffic:
        r = deployment_flow(version="3", model_name=MODEL, strategy="canary", canary=params)
    assert r.status == "rolled_back" and "latency_p95" in r.reason, r.history
    assert r.history[-1]["event"] == "rolled_back"
    active = rollouts.active_rollout(MODEL)
    assert active.version == stable and active.strategy == "rollback"
    assert Registry.from_settings().get(MODEL, "champion").version == stable
    assert set(traffic.statuses) == {200}
    [event] = events_named("nfl-mlops.rollout.rolled_back", r.id)
    assert event.payload["restored_version"] == stable and "latency_p95" in event.payload["reason"]
    assert any(g["name"] == "latency_p95" and g["passed"] is False for g in event.payload["gates"])


def test_api_retraining_trigger_starts_the_retraining_deployment(api, monkeypatch):
    """With a Prefect API, `POST /retraining/trigger` creates a run of `retraining/retraining` with the job id."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    from flows.retraining import retraining_flow

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"), overwrite=True)
    source = retraining_flow.from_source(source=str(ROOT), entrypoint="flows/retraining.py:retraining_flow")
    source.deploy(name="retraining", work_pool_name=WORK_POOL, print_next_steps=False)
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # the API's thread reads the environment

    started = time.monotonic()
    with make_client(api.base_url) as c:
        r = c.post(
            "/mlops/retraining/trigger",
            json={
                "model_name": MODEL,
                "reason": "performance_degradation",
                "config": {"epochs": 0.5, "learning_rate": 1e-5},
            },
        )
        assert r.status_code == 202, r.text
        job = r.json()
    assert time.monotonic() - started < 30
    assert job["status"] == "scheduled" and job["trigger"] == "api" and job["flow_run_id"]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(job["flow_run_id"])
        assert run.parameters["job_id"] == job["job_id"]
        assert run.parameters["trigger"] == "api" and run.parameters["reason"] == "performance_degradation"
        assert run.parameters["train"]["epochs"] == 0.5 and run.parameters["model_name"] == MODEL
        assert "api" in run.tags
        client.delete_flow_run(run.id)  # nothing runs it here; leave no scheduled run behind
