"""Rollout strategies over real HTTP: canary (good, broken, slow), shadow (agreeing, disagreeing), A/B.

A real uvicorn server serves this module's model; its rollout driver advances the rollouts that
`POST /mlops/deployments` and `POST /mlops/ab-tests` start, while a background thread sends traffic.
Nobody steps in: the gates promote a good candidate and roll back a bad one by themselves.

Candidates are real registered folders: v2 and v4 are copies of v1; v3 has a truncated
position-embedding table (it loads, warms up and passes the smoke test, then raises on every tweet
longer than 24 tokens); v5's classifier bias makes it answer `positive` to everything. v4 is made
slow in the serving process (every forward pass of v4 sleeps 1 s).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.helpers import api_settings, make_client, serving, wait_serving, wait_until
from tests.api.rollout_helpers import (
    LONG_TWEETS,
    POOL,
    Traffic,
    biased_model,
    slow_down,
    truncated_positions_model,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "api-rollouts"
GOOD, BROKEN, SLOW, BIASED = 2, 3, 4, 5
FAST_CHECK = 0.3


@pytest.fixture(scope="module")
def rollout_settings(settings, tiny_model_dir, tmp_path_factory):
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import state as rollouts

    s = api_settings(MODEL)
    reg = Registry.from_settings(s)
    root = tmp_path_factory.mktemp("rollout_candidates")
    folders = [
        tiny_model_dir,
        tiny_model_dir,
        truncated_positions_model(tiny_model_dir, root / "broken"),
        tiny_model_dir,
        biased_model(tiny_model_dir, root / "biased"),
    ]
    got = [
        reg.register(MODEL, f, metrics={"accuracy": 0.5}, description=f"rollout test {i + 1}").version
        for i, f in enumerate(folders)
    ]
    assert got == [1, GOOD, BROKEN, SLOW, BIASED]
    rollouts.activate(MODEL, 1, reason="rollout tests: initial", db_url=s.db_url)
    reg.promote(MODEL, 1)
    return s


@pytest.fixture(scope="module")
def server(rollout_settings):
    with serving(rollout_settings) as handle:
        yield handle


@pytest.fixture()
def client(server):
    with make_client(server.base_url) as c:
        yield c


@pytest.fixture()
def on_v1(server, client, rollout_settings):
    """v1 active (whatever was in progress is superseded), served, and champion."""
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import state as rollouts

    r = rollouts.activate(MODEL, 1, reason="rollout tests: reset", db_url=rollout_settings.db_url)
    Registry.from_settings(rollout_settings).promote(MODEL, 1)
    wait_until(
        lambda: client.get("/mlops/status").json()["deployment"]["deployment_id"] == r.id,
        timeout=30,
        what="the reset rollout to be followed",
    )
    wait_serving(client, 1)
    return r


def deployment(client: httpx.Client, deployment_id: str) -> dict[str, Any]:
    r = client.get(f"/mlops/deployments/{deployment_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(client: httpx.Client, deployment_id: str, done, timeout: float = 240.0) -> dict[str, Any]:
    return wait_until(
        lambda: (lambda d: d if done(d) else None)(deployment(client, deployment_id)),
        timeout=timeout,
        interval=0.2,
        what=f"deployment {deployment_id}",
    )


def champion(client: httpx.Client) -> int:
    versions = client.get(f"/mlops/models/{MODEL}").json()
    return next(v["version"] for v in versions if "champion" in v["aliases"])


def at(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


# Canary
def test_canary_promotes_a_good_candidate_step_by_step(client, on_v1, server):
    body = {
        "model_id": MODEL,
        "model_version": GOOD,
        "strategy": "canary",
        "reason": "rollout test: good canary",
        "canary": {
            "steps": [20, 50, 100],
            "min_requests": 8,
            "max_wait_s": 300,
            "check_seconds": FAST_CHECK,
            # the traffic cycles 8 texts: which of them each arm happens to get decides its label mix, so
            # a label-shift verdict here would judge the routing, not the model (seen on a loaded machine:
            # TVD 0.30); this test is about the steps
            "gates": {"latency_slack_ms": 5000, "max_label_tvd": 1.0},
        },
    }
    r = client.post("/mlops/deployments", json=body)
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["strategy"] == "canary" and d["status"] == "active" and d["model_version"] == GOOD
    assert d["previous_version"] == 1
    assert d["arms"] == {
        "stable": {"version": 1, "weight": 80.0},
        "candidate": {"version": GOOD, "weight": 20.0},
    }
    assert (
        d["progress"]["phase"] == "running"
        and d["progress"]["step"] == 1
        and d["progress"]["steps"] == [20, 50, 100]
    )
    # one rollout at a time
    r = client.post("/mlops/deployments", json={"model_id": MODEL, "model_version": 1})
    assert r.status_code == 409 and "in progress" in r.json()["detail"]

    with Traffic(server.base_url, lambda i: POOL[i % len(POOL)]) as traffic:
        final = wait_for(
            client, d["deployment_id"], lambda x: x["progress"]["phase"] not in ("running", "promoting")
        )
        time.sleep(0.5)
    assert final["progress"]["phase"] == "promoted", final["history"]
    assert final["status"] == "active" and final["arms"] == {"stable": {"version": GOOD, "weight": 100.0}}
    events = [h["event"] for h in final["history"]]
    assert events == ["activated", "traffic", "promoted"], final["history"]
    step2 = final["history"][1]
    assert step2["arms"]["candidate"]["weight"] == 50.0
    for h in final["history"][1:]:
        assert {g["name"] for g in h["gates"]} == {"error_rate", "latency_p95", "label_shift"}
        assert all(g["passed"] for g in h["gates"]), h
    assert set(traffic.statuses) == {200} and not traffic.errors
    assert {p["model_version"] for p in traffic.responses} == {1, GOOD}
    assert champion(client) == GOOD
    assert wait_serving(client, GOOD)["serving_version"] == GOOD


def test_canary_with_a_broken_candidate_is_rolled_back_by_the_gates(client, on_v1, server):
    body = {
        "model_id": MODEL,
        "model_version": BROKEN,
        "strategy": "canary",
        "canary": {"steps": [25, 100], "min_requests": 30, "max_wait_s": 300, "check_seconds": FAST_CHECK},
    }
    r = client.post("/mlops/deployments", json=body)  # v3 passes the smoke test: its tweets are short
    assert r.status_code == 201, r.text
    d = r.json()
    with Traffic(server.base_url, lambda i: f"{LONG_TWEETS[i % 3]} (take {i})") as traffic:
        final = wait_for(client, d["deployment_id"], lambda x: x["status"] != "active")
    assert final["status"] == "rolled_back", final
    assert "error_rate" in final["reason"] and "failed" in final["reason"]
    last = final["history"][-1]
    assert last["event"] == "rolled_back"
    gate = next(g for g in last["gates"] if g["name"] == "error_rate")
    assert gate["passed"] is False and gate["value"] == 1.0
    # users never saw the broken version: every request was answered, by v1
    assert traffic.responses and set(traffic.statuses) == {200} and not traffic.errors
    assert {p["model_version"] for p in traffic.responses} == {1}
    active = [
        x
        for x in client.get("/mlops/deployments", params={"model_id": MODEL}).json()
        if x["status"] == "active"
    ]
    assert len(active) == 1 and active[0]["model_version"] == 1 and active[0]["strategy"] == "rollback"
    assert d["deployment_id"] in active[0]["reason"]
    assert champion(client) == 1
    assert client.get("/mlops/status").json()["counts"]["arm_errors"] >= 3


def test_canary_with_a_slow_candidate_is_rolled_back_by_the_latency_gate(client, on_v1, server, monkeypatch):
    slow_down(monkeypatch, MODEL, SLOW, 1.0)
    body = {
        "model_id": MODEL,
        "model_version": SLOW,
        "strategy": "canary",
        "canary": {
            "steps": [50, 100],
            "min_requests": 5,
            "max_wait_s": 300,
            "check_seconds": FAST_CHECK,
            "gates": {"max_p95_ms": 900},
        },
    }
    r = client.post("/mlops/deployments", json=body)
    assert r.status_code == 201, r.text
    d = r.json()
    with Traffic(
        server.base_url, lambda i: f"{POOL[i % len(POOL)]} #{i}"
    ) as traffic:  # unique: no cache hits
        final = wait_for(client, d["deployment_id"], lambda x: x["status"] != "active")
    assert final["status"] == "rolled_back", final
    assert "latency_p95" in final["reason"]
    gates = {g["name"]: g for g in final["history"][-1]["gates"]}
    assert gates["latency_p95"]["passed"] is False and gates["latency_p95"]["value"] >= 1000
    assert gates["error_rate"]["passed"] is True
    assert set(traffic.statuses) == {200}
    assert any(p["model_version"] == SLOW for p in traffic.responses)  # it did serve, slowly, before the gate
    assert champion(client) == 1
    wait_serving(client, 1)


# Shadow
def test_shadow_answers_are_logged_never_returned_and_an_agreeing_candidate_is_promoted(
    client, on_v1, server, rollout_settings
):
    from nfl_mlops.monitoring.feedback import prediction_window

    started = time.time()
    body = {
        "model_id": MODEL,
        "model_version": GOOD,
        "strategy": "shadow",
        "shadow": {"min_requests": 10, "check_seconds": FAST_CHECK, "gates": {"latency_slack_ms": 5000}},
    }
    r = client.post("/mlops/deployments", json=body)
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["arms"]["shadow"] == {"version": GOOD, "weight": 0.0, "shadow": True}
    with Traffic(server.base_url, lambda i: POOL[i % len(POOL)]) as traffic:
        final = wait_for(
            client, d["deployment_id"], lambda x: x["progress"]["phase"] not in ("running", "promoting")
        )
    assert final["progress"]["phase"] == "promoted", final["history"]
    promoted = final["history"][-1]
    gates = {g["name"]: g for g in promoted["gates"]}
    assert (
        gates["agreement"]["passed"] and gates["agreement"]["value"] == 1.0 and gates["agreement"]["n"] >= 10
    )
    # traffic moved to the candidate at `switched_at`; the promotion is recorded once the replicas confirm it
    assert at(promoted["switched_at"]) <= at(promoted["at"])
    before = [p for p in traffic.responses if p["received"] < at(promoted["switched_at"])]
    assert before and all(p["model_version"] == 1 and p["arm"] == "stable" for p in before)
    log = prediction_window(
        MODEL,
        start=datetime.fromtimestamp(started - 5, UTC),
        served_only=False,
        db_url=rollout_settings.db_url,
    )
    shadow = log[log["arm"] == "shadow"]
    assert len(shadow) >= 10 and not shadow["served"].astype(bool).any()
    assert set(shadow["model_version"]) == {GOOD}
    assert champion(client) == GOOD


def test_shadow_candidate_that_disagrees_is_rolled_back(client, on_v1, server):
    body = {
        "model_id": MODEL,
        "model_version": BIASED,
        "strategy": "shadow",
        "shadow": {"min_requests": 10, "check_seconds": FAST_CHECK, "gates": {"latency_slack_ms": 5000}},
    }
    r = client.post("/mlops/deployments", json=body)
    assert r.status_code == 201, r.text
    with Traffic(server.base_url, lambda i: POOL[i % len(POOL)]) as traffic:
        final = wait_for(client, r.json()["deployment_id"], lambda x: x["status"] != "active")
    assert final["status"] == "rolled_back" and "agreement" in final["reason"], final
    assert {p["model_version"] for p in traffic.responses} == {1}  # the shadow never answered anyone
    assert champion(client) == 1


# A/B test
def _label_other_than(label: str) -> str:
    return "positive" if label != "positive" else "negative"


def test_ab_test_declares_the_better_arm_then_promotes_it(client, on_v1, server, rollout_settings):
    from nfl_mlops.db import ABTest, session_scope, utcnow

    body = {
        "test_name": "rollout-tests-ab",
        "model_a_id": MODEL,
        "model_a_version": 1,
        "model_b_id": MODEL,
        "model_b_version": "v2",
        "traffic_split": 50,
        "duration_days": 7,
        "min_samples": 25,
        "check_seconds": 0.5,
    }
    r = client.post("/mlops/ab-tests", json=body)
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["status"] == "running" and t["model_a_version"] == 1 and t["model_b_version"] == GOOD
    assert t["verdict"]["decision"] == "no_difference_yet" and t["arms"]["a"]["predictions"] == 0
    ends = datetime.fromisoformat(t["ends_at"]) - datetime.fromisoformat(t["created_at"])
    assert ends == timedelta(days=7)
    dep = deployment(client, t["deployment_id"])
    assert dep["strategy"] == "ab_test" and dep["arms"] == {
        "a": {"version": 1, "weight": 50.0},
        "b": {"version": GOOD, "weight": 50.0},
    }
    assert client.post("/mlops/ab-tests", json=body).status_code == 409  # running already

    # sticky per key
    for k in range(6):
        arms = {
            client.post("/mlops/predict/sentiment", json={"text": POOL[j], "key": f"sticky-{k}"}).json()[
                "arm"
            ]
            for j in range(3)
        }
        assert len(arms) == 1 and arms <= {"a", "b"}

    # outcomes: B is always right; A is right on one request in three
    seen = {"a": 0, "b": 0}
    for i in range(90):
        p = client.post(
            "/mlops/predict/sentiment", json={"text": POOL[i % len(POOL)], "key": f"ab-user-{i}"}
        ).json()
        seen[p["arm"]] += 1
        right = p["arm"] == "b" or seen["a"] % 3 == 0
        truth = p["label"] if right else _label_other_than(p["label"])
        fb = client.post("/mlops/feedback", json={"prediction_id": p["prediction_id"], "label": truth})
        assert fb.status_code == 200, fb.text
    assert seen["a"] >= 25 and seen["b"] >= 25, seen
    r = client.get(f"/mlops/ab-tests/{t['test_id']}")
    assert r.status_code == 200
    now = r.json()
    assert now["arms"]["b"]["labelled"] == seen["b"] and now["arms"]["b"]["accuracy"] == 1.0
    assert now["arms"]["a"]["labelled"] == seen["a"] and now["arms"]["a"]["accuracy"] < 0.5
    assert now["arms"]["a"]["predictions"] >= seen["a"]  # the sticky requests count too
    v = now["verdict"]
    assert v["decision"] == "b_better" and v["winner"] == "b" and v["significant"] and not v["final"]
    assert v["p_value"] < 0.05 and v["prob_b_better"] > 0.99 and v["ci"][0] > 0
    assert now["status"] == "running" and now["winner"] is None  # declared, not ended: the duration runs

    # fast-forward to the end of the test: the API's driver ends it and B takes all traffic
    with session_scope(rollout_settings.db_url) as s:
        s.get(ABTest, t["test_id"]).ends_at = utcnow() - timedelta(seconds=1)
    done = wait_until(
        lambda: (lambda x: x if x["status"] != "running" else None)(
            client.get(f"/mlops/ab-tests/{t['test_id']}").json()
        ),
        timeout=60,
        what="the A/B test to end",
    )
    assert done["status"] == "completed" and done["winner"] == "b" and done["verdict"]["final"]
    dep = deployment(client, t["deployment_id"])
    assert dep["status"] == "active" and dep["progress"]["phase"] == "promoted"
    assert dep["arms"] == {"stable": {"version": GOOD, "weight": 100.0}}
    assert champion(client) == GOOD
    wait_serving(client, GOOD)


def test_ab_test_through_deployments_and_rollback_stops_it(client, on_v1):
    r = client.post(
        "/mlops/deployments",
        json={
            "model_id": MODEL,
            "model_version": GOOD,
            "strategy": "ab_test",
            "traffic_split": 30,
            "duration_days": 2,
        },
    )
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["arms"] == {"a": {"version": 1, "weight": 70.0}, "b": {"version": GOOD, "weight": 30.0}}
    test_id = d["progress"]["ab_test_id"]
    t = client.get(f"/mlops/ab-tests/{test_id}").json()
    assert t["traffic_split"] == 30 and t["duration_days"] == 2 and t["deployment_id"] == d["deployment_id"]
    listed = client.get("/mlops/ab-tests", params={"model_id": MODEL}).json()
    assert test_id in {x["test_id"] for x in listed}
    again = client.post(
        "/mlops/ab-tests",
        json={
            "test_name": t["test_name"],
            "model_a_id": MODEL,
            "model_a_version": 1,
            "model_b_id": MODEL,
            "model_b_version": GOOD,
        },
    )
    assert again.status_code == 409 and "already running" in again.json()["detail"], again.text
    r = client.post(f"/mlops/deployments/{d['deployment_id']}/rollback", json={"reason": "stop the test"})
    assert r.status_code == 200 and r.json()["model_version"] == 1
    t = client.get(f"/mlops/ab-tests/{test_id}").json()
    assert t["status"] == "stopped" and t["verdict"]["final"]


@pytest.mark.parametrize(
    ("patch", "status", "fragment"),
    [
        ({"model_b_id": "another-model"}, 422, "same registered model"),
        ({"model_b_version": 1}, 422, "same version"),
        ({"model_b_version": "v99"}, 404, "no version v99"),
        ({"traffic_split": 100}, 422, "traffic_split"),
        ({"duration_days": 0}, 422, "duration_days"),
        ({"test_name": ""}, 422, "test_name"),
    ],
    ids=["two-models", "same-version", "unknown-version", "split-100", "zero-days", "no-name"],
)
def test_ab_test_errors(client, on_v1, patch, status, fragment):
    body = {
        "test_name": "bad",
        "model_a_id": MODEL,
        "model_a_version": 1,
        "model_b_id": MODEL,
        "model_b_version": GOOD,
        **patch,
    }
    r = client.post("/mlops/ab-tests", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]
    assert client.get("/mlops/ab-tests/no-such-test").status_code == 404
