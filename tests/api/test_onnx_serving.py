"""ONNX serving over real HTTP (issue 12): the backend setting, what /status and /metrics show, answers like
torch's, and a canary between two ONNX versions judged by the rollout gates on the backend it serves with."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.helpers import (
    ServerHandle,
    api_settings,
    make_client,
    register_versions,
    serving,
    wait_serving,
    wait_until,
)
from tests.api.rollout_helpers import POOL, Traffic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "api-onnx"


@pytest.fixture(scope="module")
def onnx_folder(tiny_model_dir, tmp_path_factory) -> Path:
    from nfl_mlops.data import load_corpus, prepare
    from nfl_mlops.modeling.runtimes import export_runtimes

    rows = prepare(load_corpus()).sample(160, random_state=5)
    folder = tmp_path_factory.mktemp("onnx-version") / "model"
    shutil.copytree(tiny_model_dir, folder)
    record = export_runtimes(folder, rows["text"].tolist(), rows["label"].tolist())
    assert record["onnx"]["admitted"], record
    return folder


@pytest.fixture(scope="module")
def onnx_versions(onnx_folder, settings) -> list[int]:
    from nfl_mlops.rollout import state as rollouts

    s = api_settings(MODEL)
    versions = register_versions(MODEL, onnx_folder, 2, s)
    rollouts.activate(MODEL, versions[0], reason="onnx tests: initial", db_url=s.db_url)
    return versions


@pytest.fixture(scope="module")
def onnx_server(onnx_versions) -> Iterator[ServerHandle]:
    with serving(api_settings(MODEL), version=onnx_versions[0]) as handle:
        yield handle


def _expected_backend(folder: Path) -> str:
    from nfl_mlops.modeling.runtimes import admitted

    return admitted(folder)[0]


def test_auto_serves_the_fastest_admitted_variant_and_says_so(onnx_server, onnx_versions, onnx_folder):
    from nfl_mlops.modeling.predictor import SentimentModel

    v1 = onnx_versions[0]
    backend = _expected_backend(onnx_folder)
    assert backend in ("onnx-int8", "onnx")
    with make_client(onnx_server.base_url) as c:
        status = c.get("/mlops/status").json()
        assert status["backends"] == {str(v1): backend} and status["inference_backend_setting"] == "auto"
        cost = status["cost"][str(v1)]
        assert cost["serving"] == cost["cheapest_admitted"] == backend and "advice" not in cost
        metrics = c.get("/metrics").text
        assert re.search(
            rf'^nfl_mlops_model_backend\{{backend="{backend}",model_version="{v1}"\}} 1\.0$', metrics, re.M
        )
        runtimes = next(v for v in c.get(f"/mlops/models/{MODEL}").json() if v["version"] == v1)
        texts = POOL[:6]
        r = c.post("/mlops/predict/sentiment/batch", json={"texts": texts})
        assert r.status_code == 200, r.text
    torch_labels = [p.label for p in SentimentModel.load(onnx_folder).predict(texts)]
    served = [p["label"] for p in r.json()["predictions"]]
    agree = sum(a == b for a, b in zip(served, torch_labels, strict=True))
    assert agree >= (6 if backend == "onnx" else 5), (served, torch_labels)
    assert runtimes["runtimes"]["onnx"]["admitted"] is True  # the version's variants, with their checks
    assert runtimes["runtimes"]["onnx"]["max_abs_logit_diff"] <= 1e-4


def test_the_setting_can_pin_torch(onnx_versions, settings):
    pinned = api_settings(MODEL, inference_backend="torch")
    with serving(pinned, version=onnx_versions[0]) as handle, make_client(handle.base_url) as c:
        status = c.get("/mlops/status").json()
        assert status["backends"] == {str(onnx_versions[0]): "torch"}
        cost = status["cost"][str(onnx_versions[0])]  # pinned to torch: the status says what it costs
        assert cost["serving"] == "torch" and cost["cheapest_admitted"] != "torch"
        assert (
            "less CPU per prediction" in cost["advice"] and "MLOPS_INFERENCE_BACKEND=auto" in cost["advice"]
        )
        assert c.post("/mlops/predict/sentiment", json={"text": "Brady!"}).status_code == 200


def test_a_canary_between_onnx_versions_is_judged_on_onnx(onnx_server, onnx_versions, onnx_folder):
    v1, v2 = onnx_versions
    backend = _expected_backend(onnx_folder)
    with make_client(onnx_server.base_url) as c:
        body = {
            "model_id": MODEL,
            "model_version": v2,
            "strategy": "canary",
            "canary": {
                "steps": [50, 100],
                "min_requests": 8,
                "max_wait_s": 300,
                "check_seconds": 0.3,
                "gates": {"latency_slack_ms": 5000, "max_label_tvd": 1.0},
            },
        }
        r = c.post("/mlops/deployments", json=body)
        assert r.status_code == 201, r.text
        dep = r.json()["deployment_id"]
        with Traffic(onnx_server.base_url, lambda i: POOL[i % len(POOL)]) as traffic:
            final = wait_until(
                lambda: (lambda d: d if d["progress"]["phase"] not in ("running", "promoting") else None)(
                    c.get(f"/mlops/deployments/{dep}").json()
                ),
                timeout=300,
                interval=0.2,
                what="the ONNX canary to finish",
            )
            time.sleep(0.3)
        assert final["progress"]["phase"] == "promoted", final["history"]
        assert set(traffic.statuses) == {200}
        # both arms were served by the ONNX runtime while the gates judged them
        assert c.get("/mlops/status").json()["backends"].get(str(v2)) == backend
        gates = {g["name"] for h in final["history"][1:] for g in h["gates"]}
        assert {"error_rate", "latency_p95"} <= gates
        wait_serving(c, v2)
