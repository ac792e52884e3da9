"""The /mlops API surface over real HTTP: models, deployments, experiments, retraining, API key, limits, OpenAPI.

Every body the clients read is checked for stack traces (tests.api.helpers.BodyChecker).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import api_settings, make_client, start_server, wait_serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MODEL = "api-endpoints"
IDLE = "api-endpoints-idle"  # registered, never deployed
KEYED = "api-endpoints-keyed"
KEY = "endpoints-key-7c2e41a9b0"


@pytest.fixture(scope="module")
def server(settings) -> Iterator:
    handle = start_server(api_settings(MODEL))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture()
def client(server) -> Iterator[httpx.Client]:
    with make_client(server.base_url) as c:
        yield c


def detail(r: httpx.Response) -> str:
    body = r.json()
    assert isinstance(body.get("detail"), str) and body["detail"], body
    return body["detail"]


def register(client: httpx.Client, name: str, path: Path, **extra) -> httpx.Response:
    return client.post("/mlops/models/register", json={"model_name": name, "model_path": str(path), **extra})


# Models
def test_register_list_and_get_models(client, tiny_model_dir):
    r = register(
        client,
        MODEL,
        tiny_model_dir,
        metrics={"accuracy": 0.87, "f1_score": 0.85},
        description="Enhanced NFL sentiment analysis model",
        params={"learning_rate": 2e-5},
    )
    assert r.status_code == 201, r.text
    v = r.json()
    assert v["model_id"] == MODEL and v["version"] == 1 and v["status"] == "ready"
    assert v["metrics"] == {"accuracy": 0.87, "f1_score": 0.85} and v["params"] == {"learning_rate": 2e-5}
    assert (
        v["description"] == "Enhanced NFL sentiment analysis model"
        and v["model_type"] == "sentiment_analysis"
    )
    # a portable path in the lineage (the model card is pushed to the Hub): no machine path
    assert v["lineage"]["source_path"] == f".../{tiny_model_dir.parent.name}/{tiny_model_dir.name}"
    assert Path(v["path"]).name == "v1" and (Path(v["path"]) / "model.safetensors").exists()
    r = register(client, MODEL, tiny_model_dir, metrics={"accuracy": 0.88})
    assert r.status_code == 201 and r.json()["version"] == 2
    assert [x["version"] for x in client.get(f"/mlops/models/{MODEL}").json()] == [1, 2]
    assert {(m["model_id"], m["version"]) for m in client.get("/mlops/models").json()} >= {
        (MODEL, 1),
        (MODEL, 2),
    }
    r = client.get("/mlops/models/no-such-model")
    assert r.status_code == 404 and "no-such-model" in detail(r)


def test_register_rejects_what_is_not_a_model_folder(client, tiny_model_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    labels = tmp_path / "labels"
    labels.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (labels / "config.json").write_text(json.dumps({**config, "id2label": {"0": "bad", "1": "good"}}))
    bin_only = tmp_path / "bin"
    bin_only.mkdir()
    shutil.copy(tiny_model_dir / "config.json", bin_only / "config.json")
    (bin_only / "pytorch_model.bin").write_bytes(b"pickle")
    cases = [
        (tmp_path / "missing", "below an import root"),
        (empty, "no config.json"),
        (garbage, "not readable JSON"),
        (labels, "expected ['negative', 'neutral', 'positive']"),
        (bin_only, "model.safetensors"),
    ]
    before = len(client.get("/mlops/models").json())
    for path, fragment in cases:
        r = register(client, "api-endpoints-bad", path)
        assert r.status_code == 422, (path, r.text)
        assert fragment in detail(r), (path, detail(r))
    for body, fragment in [
        ({"model_name": "../escape", "model_path": str(tiny_model_dir)}, "model_name"),
        ({"model_name": "ok", "model_path": str(tiny_model_dir), "metrics": {"accuracy": "high"}}, "metrics"),
        ({"model_name": "ok", "model_path": str(tiny_model_dir), "colour": "red"}, "colour"),
        ({"model_name": "ok"}, "model_path"),
    ]:
        r = client.post("/mlops/models/register", json=body)
        assert r.status_code == 422 and fragment in detail(r), r.text
    nan = (
        b'{"model_name": "ok", "model_path": "%s", "metrics": {"accuracy": NaN}}'
        % str(tiny_model_dir).encode()
    )
    r = client.post("/mlops/models/register", content=nan, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "finite" in detail(r)
    assert len(client.get("/mlops/models").json()) == before  # nothing was registered
    assert client.get("/mlops/models/api-endpoints-bad").status_code == 404


# Deployments
def test_deployment_endpoints(client, server, tiny_model_dir, settings):
    from nfl_mlops.registry.store import Registry

    r = client.post(
        "/mlops/deployments", json={"model_id": MODEL, "model_version": 1, "reason": "first deployment"}
    )
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["strategy"] == "blue_green" and d["progress"] is None and d["config"]["driver"] == "api"
    wait_serving(client, 1)
    got = client.get(f"/mlops/deployments/{d['deployment_id']}")
    assert got.status_code == 200 and got.json()["deployment_id"] == d["deployment_id"]
    assert got.json()["reason"] == "first deployment"
    assert len(client.get("/mlops/deployments", params={"model_id": MODEL, "limit": 1}).json()) == 1
    for path in ("/mlops/deployments/nope",):
        r = client.get(path)
        assert r.status_code == 404 and "nope" in detail(r)
    r = client.post("/mlops/deployments/nope/rollback")
    assert r.status_code == 404
    # settings of another strategy
    r = client.post(
        "/mlops/deployments", json={"model_id": MODEL, "model_version": 2, "canary": {"steps": [10, 100]}}
    )
    assert r.status_code == 422 and "canary given with strategy blue_green" in detail(r)
    r = client.post(
        "/mlops/deployments",
        json={
            "model_id": MODEL,
            "model_version": 2,
            "strategy": "canary",
            "canary": {"steps": [60, 30, 100]},
        },
    )
    assert r.status_code == 422 and "steps must increase" in detail(r)
    r = client.post(
        "/mlops/deployments",
        json={"model_id": MODEL, "model_version": 2, "strategy": "shadow", "traffic_split": 20},
    )
    assert r.status_code == 422 and "ab_test given with strategy shadow" in detail(r)
    # a canary needs a version serving to compare with
    reg = Registry.from_settings(settings)
    reg.register(IDLE, tiny_model_dir)
    r = client.post("/mlops/deployments", json={"model_id": IDLE, "model_version": 1, "strategy": "canary"})
    assert r.status_code == 409 and "needs a version serving" in detail(r)
    # a rejected version is never deployed
    rejected = reg.register(MODEL, tiny_model_dir, status="rejected", reason="below champion")
    r = client.post(
        "/mlops/deployments",
        json={"model_id": MODEL, "model_version": rejected.version, "strategy": "canary"},
    )
    assert r.status_code == 409 and "rejected" in detail(r)
    # the same version cannot be its own canary
    r = client.post("/mlops/deployments", json={"model_id": MODEL, "model_version": 1, "strategy": "canary"})
    assert r.status_code == 409 and "already the serving version" in detail(r)
    assert client.get("/mlops/health").json()["serving_version"] == 1


# Experiments
def test_experiment_lifecycle(client):
    r = client.post(
        "/mlops/experiments",
        json={
            "experiment_name": "sentiment_model_training",
            "tags": ["sentiment", "nfl", "training"],
            "config": {
                "learning_rate": 2e-5,
                "batch_size": 16,
                "wandb_api_key": "secret-value",
                "nested": {"a": [1, 2]},
            },
        },
    )
    assert r.status_code == 201, r.text
    e = r.json()
    eid = e["experiment_id"]
    assert (
        e["status"] == "running" and e["tracker"] == "api" and e["tags"] == ["sentiment", "nfl", "training"]
    )
    assert e["config"] == {"learning_rate": 2e-5, "batch_size": 16, "nested": {"a": [1, 2]}}  # secret dropped
    for step, m in enumerate(
        [{"train_loss": 0.3, "epoch": 0}, {"train_loss": 0.15, "val_accuracy": 0.87, "epoch": 1}]
    ):
        r = client.post("/mlops/experiments/metrics", json={"experiment_id": eid, "metrics": m, "step": step})
        assert r.status_code == 200 and r.json() == {"experiment_id": eid, "logged": len(m), "step": step}
    got = client.get(f"/mlops/experiments/{eid}").json()
    assert got["metrics"] == {"train_loss": 0.15, "val_accuracy": 0.87, "epoch": 1}
    assert [h["step"] for h in got["history"]] == [0, 1]
    r = client.post(
        f"/mlops/experiments/{eid}/finish", json={"metrics": {"final_accuracy": 0.89, "final_f1": 0.87}}
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "finished" and done["finished_at"] and done["metrics"]["final_f1"] == 0.87
    assert eid in {x["experiment_id"] for x in client.get("/mlops/experiments").json()}
    assert eid in {
        x["experiment_id"] for x in client.get("/mlops/experiments", params={"status": "finished"}).json()
    }
    # a finished run takes no more metrics
    r = client.post("/mlops/experiments/metrics", json={"experiment_id": eid, "metrics": {"x": 1}})
    assert r.status_code == 409 and "finished" in detail(r)
    assert client.post(f"/mlops/experiments/{eid}/finish").status_code == 409
    # unknown ids, bad metrics
    for r in (
        client.post("/mlops/experiments/metrics", json={"experiment_id": "nope", "metrics": {"x": 1}}),
        client.post("/mlops/experiments/nope/finish"),
        client.get("/mlops/experiments/nope"),
    ):
        assert r.status_code == 404 and "nope" in detail(r)
    for body in (
        {"experiment_id": eid, "metrics": {}},
        {"experiment_id": eid, "metrics": {"loss": "low"}},
        {"experiment_id": eid, "metrics": {"loss": 1}, "step": -1},
    ):
        assert client.post("/mlops/experiments/metrics", json=body).status_code == 422
    r = client.post(
        "/mlops/experiments/metrics",
        content=b'{"experiment_id": "x", "metrics": {"loss": Infinity}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "finite" in detail(r)
    assert client.post("/mlops/experiments", json={"experiment_name": ""}).status_code == 422


# Retraining
def test_retraining_trigger_without_prefect_answers_503_and_records_a_failed_job(client, monkeypatch):
    from prefect.context import _temporary_global_settings_context, get_settings_context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # nor a URL in Prefect's settings: a temporary server of an earlier test in this session sets one, also
    # process-wide (where the API's thread reads it), as prefect_test_harness does
    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),
        _temporary_global_settings_context(get_settings_context()),
    ):
        r = client.post(
            "/mlops/retraining/trigger",
            json={
                "model_name": MODEL,
                "reason": "performance_degradation",
                "config": {"epochs": 5, "learning_rate": 1e-5},
            },
        )
    assert r.status_code == 503, r.text
    assert "PREFECT_API_URL is not set" in detail(r) and r.json()["job_id"]
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens there
    r2 = client.post("/mlops/retraining/trigger", json={"model_name": MODEL, "reason": "manual"})
    assert r2.status_code == 503 and "not reachable" in detail(r2)
    jobs = {j["job_id"]: j for j in client.get("/mlops/retraining/jobs", params={"model_name": MODEL}).json()}
    for resp in (r, r2):
        job = jobs[resp.json()["job_id"]]
        assert job["status"] == "failed" and job["trigger"] == "api" and job["finished_at"]
        assert job["result"]["error"] and job["flow_run_id"] is None
    assert jobs[r.json()["job_id"]]["params"]["train"]["epochs"] == 5
    # validation and unknown models come first
    for body, status, fragment in [
        ({"model_name": "no-such-model"}, 404, "no-such-model"),
        ({"config": {"epochs": 0}}, 422, "epochs"),
        ({"config": {"layers": 3}}, 422, "unknown training settings"),
        ({"reason": ""}, 422, "reason"),
        ({"strategy": "yolo"}, 422, "strategy"),
    ]:
        r = client.post("/mlops/retraining/trigger", json=body)
        assert r.status_code == status and fragment in detail(r), r.text


def test_retraining_triggers_explain_what_would_start_a_retraining(client, settings):
    from nfl_mlops.db import MonitoringRun, session_scope
    from nfl_mlops.monitoring.triggers import create_job

    r = client.get(f"/mlops/retraining/triggers/{MODEL}")
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["would_trigger"] is False and t["latest_monitoring"] is None
    assert any("no monitoring run" in x for x in t["reasons"])
    assert t["manual"]["allowed"] is True and t["automatic"]["allowed"] is False  # nothing to react to
    assert t["automatic"]["episode_rule"]["persistence"] >= 1 and t["open_episodes"] == []
    assert {"cron": "0 3 * * 1", "timezone": "UTC"} in t["schedules"]
    assert set(t["event_triggers"]) == {"nfl-mlops.drift.detected", "nfl-mlops.performance.degraded"}

    with session_scope(settings.db_url) as s:
        s.add(
            MonitoringRun(
                model_name=MODEL,
                model_version=1,
                n_predictions=300,
                drift_share=0.6,
                drift_detected=True,
                summary={"drifted_columns": ["topic"]},
            )
        )
    t = client.get(f"/mlops/retraining/triggers/{MODEL}").json()
    assert t["would_trigger"] is True and t["latest_monitoring"]["drift_detected"] is True
    assert any("found drift" in x and "0.60" in x for x in t["reasons"])

    create_job(MODEL, "drift", "automation", {}, db_url=settings.db_url)  # an automatic run just started
    t = client.get(f"/mlops/retraining/triggers/{MODEL}").json()
    assert t["would_trigger"] is False and t["automatic"]["allowed"] is False
    assert "in flight" in t["automatic"]["reason"]
    assert t["recent_jobs"][0]["trigger"] == "automation"

    r = client.get("/mlops/retraining/triggers/no-such-model")
    assert r.status_code == 404 and "no-such-model" in detail(r)


# API key, limits, OpenAPI
MUTATING = [
    ("/mlops/models/register", {"model_name": KEYED, "model_path": "/nonexistent"}),
    ("/mlops/deployments", {"model_id": KEYED, "model_version": 1}),
    ("/mlops/deployments/some-id/rollback", None),
    (
        "/mlops/ab-tests",
        {
            "test_name": "t",
            "model_a_id": KEYED,
            "model_a_version": 1,
            "model_b_id": KEYED,
            "model_b_version": 2,
        },
    ),
    ("/mlops/experiments", {"experiment_name": "keyed"}),
    ("/mlops/experiments/metrics", {"experiment_id": "x", "metrics": {"loss": 1.0}}),
    ("/mlops/experiments/some-id/finish", None),
    ("/mlops/retraining/trigger", {"model_name": KEYED}),
    ("/mlops/feedback", {"prediction_id": "x", "label": "positive"}),
]


def test_mutating_endpoints_need_the_api_key(settings):
    handle = start_server(api_settings(KEYED, api_key=KEY))
    try:
        with make_client(handle.base_url, forbidden=("Traceback", KEY)) as c:
            for path, body in MUTATING:
                for headers in (
                    {},
                    {"X-API-Key": "wrong"},
                    {"X-API-Key": KEY + "x"},
                    {"X-API-Key": "ключ".encode()},
                ):
                    r = c.post(path, json=body, headers=headers)
                    assert r.status_code == 401, (path, headers, r.text)
                    assert detail(r) == "missing or wrong X-API-Key header"
            # with the key the request reaches the endpoint (and its own answer)
            ok = {"X-API-Key": KEY}
            assert c.post("/mlops/models/register", json=MUTATING[0][1], headers=ok).status_code == 422
            assert c.post("/mlops/deployments", json=MUTATING[1][1], headers=ok).status_code == 404
            assert (
                c.post("/mlops/experiments", json={"experiment_name": "keyed"}, headers=ok).status_code == 201
            )
            assert c.post("/mlops/experiments/some-id/finish", headers=ok).status_code == 404
            # reads that reveal internals need the key too; health stays open
            for path in (
                "/mlops/models",
                "/mlops/deployments",
                "/mlops/experiments",
                "/mlops/ab-tests",
                "/mlops/retraining/jobs",
                "/mlops/status",
                "/mlops/reports",
                "/mlops/lineage/0123456789abcdef",
            ):
                assert c.get(path).status_code == 401, path
                assert c.get(path, headers=ok).status_code in (200, 404), path
            assert c.get("/mlops/health").status_code == 200
    finally:
        handle.stop()


def test_limits(client):
    from nfl_mlops.serving.app import body_limit

    limit = body_limit(api_settings(MODEL))
    huge = {"experiment_name": "big", "config": {"blob": "x" * (limit + 1)}}
    r = client.post("/mlops/experiments", json=huge)
    assert r.status_code == 413 and str(limit) in detail(r)
    r = client.post("/mlops/predict/sentiment/batch", json={"texts": ["go pats " * 100] * 400})
    assert r.status_code == 413
    r = client.post(
        "/mlops/experiments", json={"experiment_name": "wide", "config": {f"k{i}": i for i in range(501)}}
    )
    assert r.status_code == 422 and "config" in detail(r)
    r = client.post("/mlops/experiments", json={"experiment_name": "tags", "tags": ["t"] * 51})
    assert r.status_code == 422
    r = client.get("/mlops/deployments", params={"limit": 100000})
    assert r.status_code == 422 and "limit" in detail(r)


def test_openapi_documents_every_endpoint(client):
    spec = client.get("/openapi.json").json()
    expected = {
        ("post", "/mlops/models/register"),
        ("get", "/mlops/models"),
        ("get", "/mlops/models/{model_id}"),
        ("post", "/mlops/deployments"),
        ("get", "/mlops/deployments"),
        ("get", "/mlops/deployments/{deployment_id}"),
        ("post", "/mlops/deployments/{deployment_id}/rollback"),
        ("post", "/mlops/experiments"),
        ("post", "/mlops/experiments/metrics"),
        ("get", "/mlops/experiments"),
        ("post", "/mlops/experiments/{experiment_id}/finish"),
        ("get", "/mlops/experiments/{experiment_id}"),
        ("post", "/mlops/retraining/trigger"),
        ("get", "/mlops/retraining/jobs"),
        ("get", "/mlops/retraining/triggers/{model_name}"),
        ("post", "/mlops/ab-tests"),
        ("get", "/mlops/ab-tests"),
        ("get", "/mlops/ab-tests/{test_id}"),
        ("post", "/mlops/predict/sentiment"),
        ("post", "/mlops/predict/sentiment/batch"),
        ("post", "/mlops/feedback"),
        ("get", "/mlops/status"),
        ("get", "/mlops/health"),
        ("get", "/mlops/lineage/{prediction_id}"),
    }
    got = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert expected <= got, expected - got
    for p, ops in spec["paths"].items():
        for m, op in ops.items():
            assert op.get("summary") and op.get("description"), (m, p)
            if "{" in p:
                assert "404" in op["responses"], (m, p)
    schemas = spec["components"]["schemas"]
    for name in (
        "RegisterModelRequest",
        "DeployRequest",
        "CreateABTestRequest",
        "StartExperimentRequest",
        "LogMetricsRequest",
        "FinishExperimentRequest",
        "RetrainRequest",
        "CanaryParams",
        "GateParams",
        "ABTestOut",
        "DeploymentOut",
        "ExperimentOut",
        "RetrainingJobOut",
        "TriggerCheckOut",
    ):
        for field, prop in schemas[name]["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"


def test_api_docs_render_from_assets_the_service_serves_itself(client):
    """/docs and /redoc work with no network: every script and stylesheet they load comes from this server."""
    import re

    for page in ("/docs", "/redoc"):
        r = client.get(page)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"], page
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', r.text)
        assert assets, page
        assert not [a for a in assets if a.startswith(("http://", "https://", "//"))], (page, assets)
        for asset in assets:
            got = client.get(asset)
            assert got.status_code == 200 and len(got.content) > 1000, asset
    spec = client.get("/openapi.json").json()
    assert not [p for p in spec["paths"] if p.startswith("/mlops/docs-assets")]  # not part of the API


def test_saved_reports_are_served_by_name_and_nothing_else(client, settings):
    root = settings.reports_path
    root.mkdir(parents=True, exist_ok=True)
    (root / "drift-endpoint-test.html").write_text("<html><body>drift report</body></html>")
    (root / "drift-endpoint-test.json").write_text('{"metrics": []}')
    r = client.get("/mlops/reports")
    assert r.status_code == 200, r.text
    listed = {x["name"]: x for x in r.json()}
    assert listed["drift-endpoint-test.html"]["url"] == "/mlops/reports/drift-endpoint-test.html"
    page = client.get("/mlops/reports/drift-endpoint-test.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "drift report" in page.text
    data = client.get("/mlops/reports/drift-endpoint-test.json")
    assert data.status_code == 200 and data.json() == {"metrics": []}
    (root / "drift-endpoint-test.png").write_bytes(b"\x89PNG\r\n\x1a\n chart")
    chart = client.get("/mlops/reports/drift-endpoint-test.png")  # the drift chart beside its report
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
    assert chart.content.startswith(b"\x89PNG")
    for name in ("..%2Fmlops.db", "mlops.db", "nope.html", "%2Fetc%2Fpasswd"):
        r = client.get(f"/mlops/reports/{name}")
        assert r.status_code == 404 and "detail" in r.json(), (name, r.text)
