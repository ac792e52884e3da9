"""POST /mlops/explain over real HTTP (issue 13, item 5): occlusion attributions on the version the rollout
routes the request to (torch) or on an explicit one (ONNX), word offsets that map back into the text, nothing
written to the prediction log, behind the same key as predictions, and clear 4xx/503 answers to bad requests.

The served model is a one-layer BERT trained in seconds to key on one word (`train_keyword_model`), so the
test knows which word must carry the explanation."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.helpers import MAX_CHARS, api_settings, make_client, register_versions, serving, wait_until
from tests.unit.test_explain import FILLER, NEGATIVE_WORD, POSITIVE_WORD, train_keyword_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MODEL = "api-explain"
KEY = "explain-key-5d2c7a90"
TEXT = f"the crowd saw a {POSITIVE_WORD} at the stadium today!"


@pytest.fixture(scope="module")
def explain_versions(settings, tmp_path_factory) -> dict[str, Any]:
    """v1: the keyword model on torch; v2: the same weights with ONNX variants admitted (served on ONNX).
    The rollout routes everything to v1 and keeps v2 loaded as a shadow arm."""
    from nfl_mlops.modeling.runtimes import admitted, export_runtimes
    from nfl_mlops.rollout import state as rollouts

    root = tmp_path_factory.mktemp("explain-versions")
    torch_dir = train_keyword_model(root / "torch")
    onnx_dir = root / "onnx"
    shutil.copytree(torch_dir, onnx_dir)
    n = len(FILLER)
    texts = [
        f"{FILLER[i % n]} {FILLER[(i + 5) % n]} {w} {FILLER[(i + 11) % n]}".replace("  ", " ")
        for i, w in enumerate([POSITIVE_WORD, NEGATIVE_WORD, ""] * 20)
    ]
    labels = ["positive", "negative", "neutral"] * 20
    record = export_runtimes(onnx_dir, texts, labels)
    assert record["onnx"]["admitted"], record
    s = api_settings(MODEL, api_key=KEY, open_endpoints=frozenset({"health"}))
    [v1] = register_versions(MODEL, torch_dir, 1, s)
    [v2] = register_versions(MODEL, onnx_dir, 1, s)
    rollouts.activate(
        MODEL,
        v1,
        strategy="shadow",
        arms={
            "stable": {"version": v1, "weight": 100.0},
            "shadow": {"version": v2, "weight": 0.0, "shadow": True},
        },
        reason="explain tests",
        db_url=s.db_url,
    )
    return {"settings": s, "torch": v1, "onnx": v2, "onnx_backend": admitted(onnx_dir)[0]}


@pytest.fixture(scope="module")
def explain_server(explain_versions) -> Iterator[Any]:
    with serving(explain_versions["settings"], version=explain_versions["torch"]) as handle:
        with make_client(handle.base_url) as c:  # both arms loaded (readiness needs every arm's version)
            wait_until(lambda: c.get("/mlops/health/ready").status_code == 200, what="both versions loaded")
        yield handle


@pytest.fixture()
def keyed(explain_server) -> Iterator[httpx.Client]:
    with make_client(explain_server.base_url, headers={"X-API-Key": KEY}) as c:
        yield c


def _top(body: dict[str, Any]) -> dict[str, Any]:
    return max(body["tokens"], key=lambda t: t["attribution"])


def test_explains_the_routed_version_word_by_word(explain_versions, explain_server, keyed):
    r = keyed.post("/mlops/explain", json={"text": TEXT, "key": "user-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model_version"], body["arm"], body["backend"]) == (
        explain_versions["torch"],
        "stable",
        "torch",
    )
    assert body["method"] == "occlusion" and body["label"] == "positive"
    # every word with offsets that map back into the text, in order, covering every non-space character
    tokens = body["tokens"]
    assert [t["token"] for t in tokens] == TEXT.replace("!", " !").split()
    for t in tokens:
        assert TEXT[t["start"] : t["end"]] == t["token"]
    assert [t["start"] for t in tokens] == sorted(t["start"] for t in tokens)
    top = _top(body)
    assert top["token"] == POSITIVE_WORD and top["attribution"] > 0.3
    assert all(t["attribution"] < top["attribution"] / 3 for t in tokens if t is not top)
    # the probabilities are the prediction's: same version, same runtime
    p = keyed.post("/mlops/predict/sentiment", json={"text": TEXT, "key": "user-1"}).json()
    assert p["model_version"] == body["model_version"] and p["label"] == body["label"]
    assert body["probabilities"] == pytest.approx(p["scores"], abs=1e-5)


def test_an_explicit_version_is_explained_on_the_backend_it_serves_with(explain_versions, keyed):
    torch_body = keyed.post("/mlops/explain", json={"text": TEXT}).json()
    r = keyed.post("/mlops/explain", json={"text": TEXT, "version": explain_versions["onnx"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == explain_versions["onnx"] and body["arm"] is None
    assert body["backend"] == explain_versions["onnx_backend"] and body["backend"].startswith("onnx")
    assert body["label"] == "positive" and _top(body)["token"] == POSITIVE_WORD
    # the same weights: attributions agree with torch's (int8 within its quantization error)
    tol = 1e-3 if body["backend"] == "onnx" else 0.05
    assert [t["attribution"] for t in body["tokens"]] == pytest.approx(
        [t["attribution"] for t in torch_body["tokens"]], abs=tol
    )


def test_explanations_are_not_logged_as_predictions(explain_versions, explain_server, keyed):
    from sqlalchemy import func, select

    from nfl_mlops.db import Prediction, session_scope

    text = f"we watched the {NEGATIVE_WORD} on the field"
    before = dict(explain_server.service.counts)
    r = keyed.post("/mlops/explain", json={"text": text})
    assert (
        r.status_code == 200 and r.json()["label"] == "negative" and _top(r.json())["token"] == NEGATIVE_WORD
    )
    explain_server.service.logger.flush()
    with session_scope(explain_versions["settings"].db_url) as s:
        rows = s.scalar(select(func.count()).select_from(Prediction).where(Prediction.model_name == MODEL))
        assert s.scalar(select(func.count()).select_from(Prediction).where(Prediction.text == text)) == 0
    assert explain_server.service.counts == before
    # a prediction of the same text is logged (the check above can fail)
    keyed.post("/mlops/predict/sentiment", json={"text": text})
    explain_server.service.logger.flush()
    with session_scope(explain_versions["settings"].db_url) as s:
        assert (
            s.scalar(select(func.count()).select_from(Prediction).where(Prediction.model_name == MODEL))
            > rows
        )


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"text": ""}, 422, "empty"),
        ({"text": "   \n"}, 422, "empty"),
        ({}, 422, "text"),
        ({"text": "x" * (MAX_CHARS + 1)}, 413, f"limit is {MAX_CHARS}"),
        ({"text": "go " * 129}, 413, "at most 128"),
        ({"text": TEXT, "version": 99}, 404, "version 99 is not served"),
        ({"text": TEXT, "version": 0}, 422, "greater than or equal to 1"),
        ({"text": TEXT, "version": "2"}, 422, "integer"),
        ({"text": TEXT, "key": "k" * 201}, 422, "200 characters"),
    ],
)
def test_bad_requests_get_a_clear_4xx(keyed, payload, status, message):
    r = keyed.post("/mlops/explain", json=payload)
    assert r.status_code == status, r.text
    assert message in r.text


def test_the_endpoint_takes_the_key_like_predictions(explain_server, keyed):
    with make_client(explain_server.base_url) as anonymous:
        assert anonymous.post("/mlops/explain", json={"text": TEXT}).status_code == 401
        assert anonymous.post("/mlops/predict/sentiment", json={"text": TEXT}).status_code == 401
    with make_client(explain_server.base_url, headers={"X-API-Key": "wrong"}) as wrong:
        r = wrong.post("/mlops/explain", json={"text": TEXT})
        assert r.status_code == 401 and KEY not in r.text
    assert keyed.post("/mlops/explain", json={"text": TEXT}).status_code == 200


def test_nothing_deployed_answers_503_with_a_message(empty_server):
    with make_client(empty_server.base_url) as c:
        r = c.post("/mlops/explain", json={"text": TEXT})
        assert r.status_code == 503 and "no model is deployed" in r.json()["detail"]


def test_the_endpoint_is_documented(keyed):
    spec = keyed.get("/openapi.json").json()
    op = spec["paths"]["/mlops/explain"]["post"]
    assert {"200", "404", "413", "422", "503"} <= set(op["responses"])
    assert "ExplanationOut" in spec["components"]["schemas"]


def test_onnx_folder_is_what_serves(explain_versions):
    """Guard of the ONNX test: the registered v2 folder carries an admitted ONNX variant."""
    from nfl_mlops.modeling.runtimes import admitted
    from nfl_mlops.registry.store import Registry

    info = Registry.from_settings(explain_versions["settings"]).get(MODEL, explain_versions["onnx"])
    assert admitted(Path(info.path))[0].startswith("onnx")
