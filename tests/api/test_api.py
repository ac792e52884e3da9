"""The /mlops service over real HTTP: uvicorn on a free port, httpx against it, a real tiny model.

Every response body the clients see is checked for stack traces (and, on the keyed server, for
the API key) by the client's response hook (see conftest.BodyChecker).
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from tests.api.helpers import (
    API_KEY,
    KEYED_MODEL,
    MAX_BATCH,
    MAX_CHARS,
    MODEL,
    api_settings,
    make_client,
    register_versions,
    start_server,
    wait_serving,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LABELS = {"negative", "neutral", "positive"}
TEXTS = [
    "Brady is the GOAT, what a comeback in the fourth quarter!",
    "Deflategate again? The refs and the league office are a joke.",
    "Kickoff is at 6:30 tonight on channel 4.",
    "Worst play calling I have ever seen, fire the coordinator",
    "Super Bowl parade downtown tomorrow, so proud of this team #champions",
    "Seahawks vs Patriots, week 12 preview",
]


def predict(client: httpx.Client, text: str, **extra) -> dict:
    r = client.post("/mlops/predict/sentiment", json={"text": text, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def check_prediction(p: dict, version: int) -> None:
    assert p["label"] in LABELS
    assert 0.0 <= p["confidence"] <= 1.0
    assert set(p["scores"]) == LABELS
    assert math.isclose(sum(p["scores"].values()), 1.0, abs_tol=1e-3)
    assert all(0.0 <= s <= 1.0 for s in p["scores"].values())
    assert p["label"] == max(p["scores"], key=p["scores"].get)
    assert math.isclose(p["confidence"], p["scores"][p["label"]], abs_tol=1e-6)
    assert p["model_version"] == version
    assert isinstance(p["prediction_id"], str) and p["prediction_id"]
    assert p["arm"] == "stable"
    assert p["latency_ms"] >= 0


def detail_of(r: httpx.Response) -> str:
    body = r.json()
    assert isinstance(body.get("detail"), str) and body["detail"].strip(), body
    return body["detail"]


# Status and health
def test_health_and_status(client, on_v1):
    r = client.get("/mlops/health")
    assert r.status_code == 200
    assert r.json() == {"status": "healthy", "database": True, "model_loaded": True, "serving_version": 1}

    r = client.get("/mlops/status")
    assert r.status_code == 200
    s = r.json()
    assert s["model_name"] == MODEL
    assert s["deployment"]["model_id"] == MODEL and s["deployment"]["model_version"] == 1
    assert (
        s["deployment"]["status"] == "active" and s["deployment"]["deployment_id"] == on_v1["deployment_id"]
    )
    assert 1 in s["loaded_versions"]
    assert set(s["counts"]) >= {"requests", "predictions"}
    assert set(s["prediction_log"]) == {"written", "queued"}
    assert s["services"]["database"] in ("sqlite", "postgresql", "postgresql+psycopg")
    assert s["services"]["tracking"] == "wandb-offline"
    assert s["uptime_s"] >= 0
    assert s["last_refresh_error"] is None


# Predictions
def test_predict_single(client, on_v1):
    p = predict(client, TEXTS[0])
    check_prediction(p, 1)
    keyed = predict(client, TEXTS[0], key="user-42")
    check_prediction(keyed, 1)
    assert keyed["label"] == p["label"]
    assert keyed["prediction_id"] != p["prediction_id"]


def test_batch_preserves_order_and_matches_single_calls(client, on_v1):
    texts = TEXTS + [TEXTS[0]]
    r = client.post("/mlops/predict/sentiment/batch", json={"texts": texts, "key": "user-7"})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["model_version"] == 1 and b["request_id"]
    assert len(b["predictions"]) == len(texts)
    ids = [p["prediction_id"] for p in b["predictions"]]
    assert len(set(ids)) == len(ids)
    for text, bp in zip(texts, b["predictions"], strict=True):
        check_prediction(bp, 1)
        sp = predict(client, text)
        for label in LABELS:  # padding in a batch may move scores in the last digits only
            assert math.isclose(bp["scores"][label], sp["scores"][label], abs_tol=1e-3), (text, bp, sp)
        top = sorted(sp["scores"].values(), reverse=True)
        assert bp["label"] == sp["label"] or top[0] - top[1] < 1e-3, (text, bp, sp)
    # the duplicate text at the end answers like the first one
    assert b["predictions"][-1]["scores"] == pytest.approx(b["predictions"][0]["scores"], abs=1e-3)


def test_batch_size_limit(client, on_v1):
    r = client.post("/mlops/predict/sentiment/batch", json={"texts": ["go pats"] * (MAX_BATCH + 1)})
    assert r.status_code == 413
    d = detail_of(r)
    assert str(MAX_BATCH + 1) in d and str(MAX_BATCH) in d and "limit" in d
    r = client.post("/mlops/predict/sentiment/batch", json={"texts": ["go pats"] * MAX_BATCH})
    assert r.status_code == 200 and len(r.json()["predictions"]) == MAX_BATCH


def test_text_length_limit(client, on_v1):
    long = "x" * (MAX_CHARS + 1)
    r = client.post("/mlops/predict/sentiment", json={"text": long})
    assert r.status_code == 413
    d = detail_of(r)
    assert str(MAX_CHARS + 1) in d and str(MAX_CHARS) in d
    r = client.post("/mlops/predict/sentiment/batch", json={"texts": ["fine", long]})
    assert r.status_code == 413
    assert str(MAX_CHARS) in detail_of(r)
    ok = client.post("/mlops/predict/sentiment", json={"text": "y" * MAX_CHARS})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("path", "kwargs", "fragments"),
    [
        ("/predict/sentiment/batch", {"json": {"texts": []}}, ["texts", "at least 1"]),
        ("/predict/sentiment", {"json": {"text": ""}}, ["text", "empty or only whitespace"]),
        ("/predict/sentiment", {"json": {"text": "  \n\t "}}, ["text", "empty or only whitespace"]),
        ("/predict/sentiment/batch", {"json": {"texts": ["ok", "   "]}}, ["texts", "whitespace", "[1]"]),
        ("/predict/sentiment", {"json": {}}, ["text", "Field required"]),
        ("/predict/sentiment", {"json": {"txt": "hello"}}, ["text", "Field required"]),
        ("/predict/sentiment", {"json": {"text": 123}}, ["text", "string"]),
        ("/predict/sentiment", {"json": {"text": None}}, ["text", "string"]),
        ("/predict/sentiment", {"json": ["hello"]}, ["body"]),
        ("/predict/sentiment", {"json": {"text": "hi", "key": "k" * 201}}, ["key", "200"]),
        ("/predict/sentiment/batch", {"json": {"texts": "hello"}}, ["texts", "list"]),
        ("/predict/sentiment/batch", {"json": {"texts": ["ok", 5]}}, ["texts.1", "string"]),
        ("/predict/sentiment/batch", {"json": {}}, ["texts", "Field required"]),
        (
            "/predict/sentiment",
            {"content": b'{"text": "unterminated', "headers": {"content-type": "application/json"}},
            ["JSON"],
        ),
        (
            "/predict/sentiment/batch",
            {"content": b"not json at all", "headers": {"content-type": "application/json"}},
            ["JSON"],
        ),
        ("/predict/sentiment", {}, ["body", "required"]),
    ],
    ids=[
        "empty-batch",
        "empty-text",
        "blank-text",
        "blank-batch-item",
        "missing-body-field",
        "misspelt-field",
        "int-text",
        "null-text",
        "list-body",
        "long-key",
        "texts-not-list",
        "int-in-batch",
        "missing-texts",
        "bad-json",
        "bad-json-batch",
        "no-body",
    ],
)
def test_invalid_requests_are_422_with_a_clear_detail(client, on_v1, path, kwargs, fragments):
    r = client.post(f"/mlops{path}", **kwargs)
    assert r.status_code == 422, r.text
    d = detail_of(r)
    for f in fragments:
        assert f.lower() in d.lower(), (f, d)
    assert isinstance(r.json()["errors"], list) and r.json()["errors"]


def test_no_active_rollout_is_503(empty_server):
    with make_client(empty_server.base_url) as c:
        for path, body in [
            ("/mlops/predict/sentiment", {"text": "hello"}),
            ("/mlops/predict/sentiment/batch", {"texts": ["hello", "there"]}),
        ]:
            r = c.post(path, json=body)
            assert r.status_code == 503, r.text
            d = detail_of(r)
            assert "no model is deployed" in d and "/mlops/deployments" in d
        h = c.get("/mlops/health")
        assert h.status_code == 200
        assert h.json() == {
            "status": "degraded",
            "database": True,
            "model_loaded": False,
            "serving_version": None,
        }
        s = c.get("/mlops/status").json()
        assert (
            s["model_name"] == "nothing-deployed" and s["deployment"] is None and s["loaded_versions"] == []
        )
        # validation still comes first
        assert c.post("/mlops/predict/sentiment", json={"text": " "}).status_code == 422


# Models
def test_models(client, on_v1):
    r = client.get("/mlops/models")
    assert r.status_code == 200
    mine = [m for m in r.json() if m["model_id"] == MODEL]
    assert [m["version"] for m in mine] == [1, 2]

    r = client.get(f"/mlops/models/{MODEL}")
    assert r.status_code == 200
    versions = r.json()
    assert [v["version"] for v in versions] == [1, 2]
    for v in versions:
        assert v["status"] == "ready"
        assert v["model_id"] == MODEL
        assert v["path"].endswith(f"/{MODEL}/v{v['version']}")
        assert set(v["metrics"]) == {"accuracy", "macro_f1"}
        assert v["params"]["epochs"] == 2
        assert v["lineage"]["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert v["created_at"]

    r = client.get("/mlops/models/no-such-model")
    assert r.status_code == 404
    assert "no-such-model" in detail_of(r)


# Deployments
def test_list_deployments(client, on_v1):
    r = client.get("/mlops/deployments")
    assert r.status_code == 200
    deps = {d["deployment_id"]: d for d in r.json()}
    d = deps[on_v1["deployment_id"]]
    assert d["model_id"] == MODEL and d["model_version"] == 1 and d["status"] == "active"
    assert d["environment"] == "production"
    assert d["arms"] == {"stable": {"version": 1, "weight": 100.0}}
    assert d["history"] and d["history"][0]["event"] == "activated"
    active = [x for x in r.json() if x["model_id"] == MODEL and x["status"] == "active"]
    assert len(active) == 1


def test_deploy_then_rollback(client, on_v1):
    first = on_v1["deployment_id"]
    r = client.post("/mlops/deployments", json={"model_id": MODEL, "model_version": "v2"})
    assert r.status_code == 201, r.text
    d2 = r.json()
    assert d2["model_version"] == 2 and d2["previous_version"] == 1
    assert d2["status"] == "active" and d2["strategy"] == "blue_green"
    # the endpoint refreshes the service: the very next prediction comes from v2
    check_prediction(predict(client, TEXTS[1]), 2)
    b = client.post("/mlops/predict/sentiment/batch", json={"texts": TEXTS[:3]}).json()
    assert b["model_version"] == 2 and {p["model_version"] for p in b["predictions"]} == {2}
    assert wait_serving(client, 2)["status"] == "healthy"
    status = client.get("/mlops/status").json()
    assert status["deployment"]["deployment_id"] == d2["deployment_id"]
    assert {1, 2} <= set(status["loaded_versions"])  # the previous version stays warm
    deps = {d["deployment_id"]: d for d in client.get("/mlops/deployments").json()}
    assert deps[first]["status"] == "superseded"

    # only the active deployment can be rolled back
    r = client.post(f"/mlops/deployments/{first}/rollback")
    assert r.status_code == 409
    assert "superseded" in detail_of(r)
    r = client.post("/mlops/deployments/does-not-exist/rollback")
    assert r.status_code == 404
    assert "does-not-exist" in detail_of(r)

    r = client.post(
        f"/mlops/deployments/{d2['deployment_id']}/rollback", json={"reason": "api test rollback"}
    )
    assert r.status_code == 200, r.text
    back = r.json()
    assert back["model_version"] == 1 and back["strategy"] == "rollback" and back["status"] == "active"
    assert d2["deployment_id"] in back["reason"] and "api test rollback" in back["reason"]
    check_prediction(predict(client, TEXTS[1]), 1)
    deps = {d["deployment_id"]: d for d in client.get("/mlops/deployments").json()}
    assert deps[d2["deployment_id"]]["status"] == "rolled_back"
    assert deps[d2["deployment_id"]]["reason"] == "api test rollback"
    v1 = client.get(f"/mlops/models/{MODEL}").json()[0]
    assert "champion" in v1["aliases"]

    # a rollback deployment has no previous version of its own; the rolled-back one is not active
    r = client.post(f"/mlops/deployments/{back['deployment_id']}/rollback")
    assert r.status_code == 409
    assert "no previous version" in detail_of(r)
    r = client.post(f"/mlops/deployments/{d2['deployment_id']}/rollback")
    assert r.status_code == 409
    assert "rolled_back" in detail_of(r)
    check_prediction(predict(client, TEXTS[2]), 1)


def test_deploy_accepts_a_number_or_an_alias(client, on_v1, main_settings):
    from nfl_mlops.registry.store import Registry

    # the version as GET /mlops/models returns it (an int) works, as do "1" and "v1"
    r = client.post("/mlops/deployments", json={"model_id": MODEL, "model_version": 2})
    assert r.status_code == 201, r.text
    assert r.json()["model_version"] == 2
    check_prediction(predict(client, TEXTS[0]), 2)
    r = client.post("/mlops/deployments", json={"model_id": MODEL, "model_version": "1"})
    assert r.status_code == 201 and r.json()["model_version"] == 1
    check_prediction(predict(client, TEXTS[0]), 1)
    Registry.from_settings(main_settings).set_alias(MODEL, "challenger", 2)
    try:
        r = client.post("/mlops/deployments", json={"model_id": MODEL, "model_version": "challenger"})
        assert r.status_code == 201, r.text
        assert r.json()["model_version"] == 2
        check_prediction(predict(client, TEXTS[0]), 2)
    finally:
        Registry.from_settings(main_settings).delete_alias(MODEL, "challenger")
    r = client.post("/mlops/deployments", json={"model_id": MODEL, "model_version": "v1"})
    assert r.status_code == 201 and r.json()["model_version"] == 1
    check_prediction(predict(client, TEXTS[0]), 1)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model_id": MODEL, "model_version": "v99"}, 404, "no version v99"),
        ({"model_id": MODEL, "model_version": "99"}, 404, "no version 99"),
        ({"model_id": MODEL, "model_version": "no-such-alias"}, 404, "no alias 'no-such-alias'"),
        ({"model_id": "no-such-model", "model_version": "1"}, 404, "no-such-model"),
        ({"model_id": MODEL, "model_version": "1", "strategy": "yolo"}, 422, "strategy"),
        ({"model_id": MODEL}, 422, "model_version"),
        ({"model_id": MODEL, "model_version": 1.5}, 422, "model_version"),
        ({"model_id": MODEL, "model_version": True}, 422, "model_version"),
    ],
    ids=[
        "unknown-version",
        "unknown-number",
        "unknown-alias",
        "unknown-model",
        "bad-strategy",
        "no-version",
        "float-version",
        "bool-version",
    ],
)
def test_deploy_errors(client, on_v1, body, status, fragment):
    r = client.post("/mlops/deployments", json=body)
    assert r.status_code == status, r.text
    assert fragment in detail_of(r)
    # nothing changed
    assert client.get("/mlops/health").json()["serving_version"] == 1
    active = [
        d
        for d in client.get("/mlops/deployments").json()
        if d["model_id"] == MODEL and d["status"] == "active"
    ]
    assert [d["deployment_id"] for d in active] == [on_v1["deployment_id"]]


def test_service_follows_a_rollout_made_elsewhere(client, on_v1, main_settings):
    """The deployment flow writes the DB directly; the API picks it up within a poll period."""
    from nfl_mlops.rollout import state as rollouts

    r = rollouts.activate(MODEL, 2, reason="api tests: out-of-band", db_url=main_settings.db_url)
    wait_until(
        lambda: predict(client, "any news on the draft?")["model_version"] == 2,
        timeout=10,
        what="the poll to switch to v2",
    )
    assert client.get("/mlops/health").json()["serving_version"] == 2
    rollouts.rollback(r.id, "api tests: back", db_url=main_settings.db_url)
    wait_until(
        lambda: predict(client, "any news on the draft?")["model_version"] == 1,
        timeout=10,
        what="the poll to switch back to v1",
    )


# Feedback
def test_feedback(client, on_v1, main_settings):
    from nfl_mlops.monitoring.feedback import prediction_window

    p = predict(client, TEXTS[3])
    # sent at once: the prediction may still be queued in the log writer
    r = client.post("/mlops/feedback", json={"prediction_id": p["prediction_id"], "label": "negative"})
    assert r.status_code == 200, r.text
    assert r.json() == {"prediction_id": p["prediction_id"], "label": "negative", "recorded": True}
    df = prediction_window(MODEL, db_url=main_settings.db_url)
    row = df[df["id"] == p["prediction_id"]]
    assert len(row) == 1
    row = row.iloc[0]
    assert row["true_label"] == "negative"
    assert row["text"] == TEXTS[3] and row["label"] == p["label"] and row["model_version"] == 1
    assert bool(row["served"]) and row["arm"] == "stable"

    # a later label replaces the earlier one
    r = client.post("/mlops/feedback", json={"prediction_id": p["prediction_id"], "label": "neutral"})
    assert r.status_code == 200
    df = prediction_window(MODEL, db_url=main_settings.db_url)
    assert df.loc[df["id"] == p["prediction_id"], "true_label"].tolist() == ["neutral"]

    r = client.post("/mlops/feedback", json={"prediction_id": "0123456789abcdef", "label": "positive"})
    assert r.status_code == 404
    assert "0123456789abcdef" in detail_of(r)
    r = client.post("/mlops/feedback", json={"prediction_id": p["prediction_id"], "label": "ecstatic"})
    assert r.status_code == 422
    assert "label" in detail_of(r)
    r = client.post("/mlops/feedback", json={"label": "positive"})
    assert r.status_code == 422
    assert "prediction_id" in detail_of(r)


# Lineage
def test_lineage_of_a_prediction(client, on_v1):
    p = predict(client, TEXTS[4])  # asked at once: the prediction may still be queued in the log writer
    r = client.get(f"/mlops/lineage/{p['prediction_id']}")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["prediction"]["id"] == p["prediction_id"] and out["prediction"]["model_version"] == 1
    assert out["model"]["version"] == 1 and out["model"]["name"] == MODEL
    assert out["dataset"]["version"] == "api-test-0"
    assert "git_sha" in out["code"]
    r = client.get("/mlops/lineage/0123456789abcdef")
    assert r.status_code == 404 and "0123456789abcdef" in detail_of(r)


# API key
def test_api_key_guards_mutating_endpoints(keyed_server, keyed_settings):
    from nfl_mlops.rollout import state as rollouts

    handle, _logs = keyed_server
    wrong = "wrong-" + API_KEY[::-1]
    with make_client(handle.base_url, forbidden=("Traceback", API_KEY, wrong)) as c:
        # predictions and health stay open (MLOPS_OPEN_ENDPOINTS' default); reads of internals need the key
        p = predict(c, TEXTS[0])
        check_prediction(p, 1)
        assert c.post("/mlops/predict/sentiment/batch", json={"texts": TEXTS[:2]}).status_code == 200
        for path in ("/mlops/health", "/mlops/health/live", "/mlops/health/ready", "/metrics"):
            assert c.get(path).status_code == 200, path
        for path in (
            "/mlops/models",
            f"/mlops/models/{KEYED_MODEL}",
            "/mlops/deployments",
            "/mlops/status",
            f"/mlops/lineage/{p['prediction_id']}",
        ):
            for headers in ({}, {"X-API-Key": wrong}):
                r = c.get(path, headers=headers)
                assert r.status_code == 401 and detail_of(r) == "missing or wrong X-API-Key header", path
            assert c.get(path, headers={"X-API-Key": API_KEY}).status_code == 200, path

        def refused(method_path: str, **kwargs) -> None:
            for headers in ({}, {"X-API-Key": wrong}, {"X-API-Key": ""}, {"X-API-Key": API_KEY.upper()}):
                r = c.post(method_path, headers=headers, **kwargs)
                assert r.status_code == 401, (method_path, headers, r.text)
                assert detail_of(r) == "missing or wrong X-API-Key header"

        first = rollouts.active_rollout(KEYED_MODEL, db_url=keyed_settings.db_url)
        body = {"model_id": KEYED_MODEL, "model_version": "2"}
        refused("/mlops/deployments", json=body)
        assert rollouts.active_rollout(KEYED_MODEL, db_url=keyed_settings.db_url).id == first.id
        r = c.post("/mlops/deployments", json=body, headers={"X-API-Key": API_KEY})
        assert r.status_code == 201, r.text
        d2 = r.json()
        check_prediction(predict(c, TEXTS[1]), 2)

        refused(f"/mlops/deployments/{d2['deployment_id']}/rollback")
        assert rollouts.active_rollout(KEYED_MODEL, db_url=keyed_settings.db_url).id == d2["deployment_id"]
        r = c.post(f"/mlops/deployments/{d2['deployment_id']}/rollback", headers={"x-api-key": API_KEY})
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == 1
        check_prediction(predict(c, TEXTS[1]), 1)

        fb = {"prediction_id": p["prediction_id"], "label": "positive"}
        refused("/mlops/feedback", json=fb)
        r = c.post("/mlops/feedback", json=fb, headers={"X-API-Key": API_KEY})
        assert r.status_code == 200 and r.json()["recorded"] is True

        # the key check comes before anything else is revealed
        r = c.post("/mlops/deployments", json={"model_id": KEYED_MODEL, "model_version": "v99"})
        assert r.status_code == 401
        r = c.post(
            "/mlops/deployments",
            json={"model_id": KEYED_MODEL, "model_version": "v99"},
            headers={"X-API-Key": API_KEY},
        )
        assert r.status_code == 404
        assert len(c.checker.seen) > 20  # the hook saw every body


def test_api_key_never_appears_in_logs(keyed_server, keyed_settings):
    handle, logs = keyed_server
    with make_client(handle.base_url, forbidden=("Traceback", API_KEY)) as c:
        assert c.get("/mlops/status", headers={"X-API-Key": API_KEY}).status_code == 200
        assert API_KEY not in c.get("/openapi.json").text
    handle.stop()  # the shutdown logs count too
    text = logs.text
    assert "POST /mlops/deployments" in text and "401" in text  # the capture saw the server's access log
    assert API_KEY not in text
    assert API_KEY[::-1] not in text
    assert API_KEY not in repr(keyed_settings) and API_KEY not in str(keyed_settings.model_dump())


# Prediction log
def test_prediction_log_loses_nothing(settings, tiny_model_dir):
    """Concurrent singles and batches, then a graceful stop: every answer is a row in the log."""
    from nfl_mlops.db import Prediction, get_engine, utcnow
    from nfl_mlops.rollout import state as rollouts

    name = "api-predlog"
    s = api_settings(name)
    [v] = register_versions(name, tiny_model_dir, 1, s)
    rollouts.activate(name, v, reason="api tests: prediction log", db_url=s.db_url)
    started = utcnow()
    handle = start_server(s)
    try:
        local, clients, lock = threading.local(), [], threading.Lock()

        def client() -> httpx.Client:  # one client per worker thread
            if not hasattr(local, "c"):
                local.c = make_client(handle.base_url)
                with lock:
                    clients.append(local.c)
            return local.c

        with make_client(handle.base_url) as c:
            wait_serving(c, v)

        n_single, batches = 200, [[f"{t} #{b}" for t in TEXTS] * 2 for b in range(4)]

        def single(i: int) -> list[str]:
            r = client().post("/mlops/predict/sentiment", json={"text": f"{TEXTS[i % len(TEXTS)]} ({i})"})
            assert r.status_code == 200, r.text
            return [r.json()["prediction_id"]]

        def batch(texts: list[str]) -> list[str]:
            r = client().post("/mlops/predict/sentiment/batch", json={"texts": texts})
            assert r.status_code == 200, r.text
            return [p["prediction_id"] for p in r.json()["predictions"]]

        jobs = [(single, i) for i in range(n_single)]
        for k, b in enumerate(batches):
            jobs.insert(k * 50 + 25, (batch, b))
        service = handle.service
        logger = service.logger

        def fire(part: list) -> list[str]:
            with ThreadPoolExecutor(max_workers=32) as pool:
                futures = [pool.submit(fn, arg) for fn, arg in part]
                return [pid for f in futures for pid in f.result()]

        try:
            # phase 1: the writer flushes in the background while requests come in
            answered = fire(jobs[: len(jobs) // 2])
            # phase 2: the writer holds its rows, so only the shutdown can write them
            logger.flush_seconds, logger.batch_size = 3600.0, 10**9
            wait_until(lambda: logger.queued == 0, timeout=10, what="phase 1 to be written")
            time.sleep(0.6)  # the round in progress (0.5 s) ends; the next one waits an hour
            held = fire(jobs[len(jobs) // 2 :])
            answered += held
            time.sleep(0.6)
            assert logger.queued == len(held), "the writer was expected to hold phase 2"
        finally:
            for cl in clients:
                cl.close()
        assert len(answered) == n_single + sum(len(b) for b in batches)
        assert len(set(answered)) == len(answered)
    finally:
        handle.stop()  # lifespan shutdown: the log writer writes what is still queued
    assert service.logger.queued == 0
    with get_engine(s.db_url).connect() as conn:
        count = conn.scalar(
            select(func.count())
            .select_from(Prediction)
            .where(Prediction.model_name == name, Prediction.created_at >= started)
        )
        ids = set(conn.scalars(select(Prediction.id).where(Prediction.model_name == name)))
    assert count == len(answered)
    assert ids == set(answered)
    assert service.logger.written == len(answered)
