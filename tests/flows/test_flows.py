"""Real flow runs against a temporary Prefect server: training, registration, deployment, monitoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nfl_mlops.modeling.params import DataParams, TrainParams

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

MODEL = "flow-test-model"
SMALL_DATA = DataParams(topics_exclude=["nfl"], max_train_samples=400, max_eval_samples=200, seed=3)
SMALL_TRAIN = TrainParams(epochs=1, learning_rate=2e-4, batch_size=32, max_length=48)


@pytest.fixture(scope="module")
def v1(settings):
    """The whole pipeline once on a small slice: v1 trained, registered, deployed."""
    from flows.pipeline import pipeline_flow

    out = pipeline_flow(data=SMALL_DATA, train=SMALL_TRAIN, model_name=MODEL)
    return out


def test_pipeline_registers_and_deploys_a_real_model(v1, settings):
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout.state import active_rollout

    assert v1["passed"] and v1["version"] == 1
    info = Registry.from_settings().get(MODEL, "champion")
    assert info.version == 1 and info.status == "ready"
    folder = Path(info.path)
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "reference/profile.parquet",
    ):
        assert (folder / name).exists(), name
    assert not list(folder.glob("*.bin")), "weights must be safetensors only"
    # metrics and the baseline on the same test rows
    test = info.metrics["test"]
    assert test["n"] == info.metrics["baseline"]["test"]["n"] > 100
    assert sum(map(sum, test["confusion"])) == test["n"]
    # a real model trained on 400 tweets beats always predicting the majority class
    majority = max(sum(row) for row in test["confusion"]) / test["n"]
    assert test["accuracy"] > majority
    # lineage
    lin = info.lineage
    for key in (
        "dataset_version",
        "split_seed",
        "tracker_run_id",
        "training_flow_run_id",
        "registration_flow_run_id",
        "base_model",
    ):
        assert lin.get(key), key
    assert info.params["train"]["learning_rate"] == SMALL_TRAIN.learning_rate
    card = (folder / "README.md").read_text()
    assert card.startswith("---") and "model-index" in card and "base_model" in card
    # the most confident test mistakes, explained word by word (training wrote them beside the weights)
    mistakes = sum(test["confusion"][i][j] for i in range(3) for j in range(3) if i != j)
    if mistakes:
        assert (folder / "explained_mistakes.json").exists()
        assert "Most confident mistakes, explained" in card
    # served
    rollout = active_rollout(MODEL)
    assert rollout is not None and rollout.version == 1 and rollout.strategy == "blue_green"


def test_runs_are_named_and_tagged_in_prefect(v1):
    """The real server lists the pipeline's runs by what they did, the subflows tagged with model and version."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        runs = {r.name: r for r in client.read_flow_runs(limit=200)}
    for name in (
        f"pipeline-{MODEL}-blue_green",
        f"train-{MODEL}",
        f"register-{MODEL}",
        f"deploy-{MODEL}-v1-blue_green",
    ):
        assert name in runs, sorted(runs)
    assert {f"model:{MODEL}", "trigger:pipeline"} <= set(runs[f"train-{MODEL}"].tags)
    assert {f"model:{MODEL}", "version:v1"} <= set(runs[f"deploy-{MODEL}-v1-blue_green"].tags)


def test_the_model_status_artifact_shows_the_state_after_the_pipeline(v1):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"model-status-{MODEL}"]))
        )
    assert found, "no model-status artifact"
    latest = max(found, key=lambda a: a.created)
    assert f"# {MODEL}: champion v1" in latest.data and "- stable: v1, 100 %" in latest.data
    assert "| v1 | ready | champion |" in latest.data


def test_training_is_tracked_offline(v1, settings):
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.tracking.experiments import list_experiments

    info = Registry.from_settings().get(MODEL, 1)
    run_id = info.lineage["tracker_run_id"]
    runs = list(Path(settings.wandb_dir).rglob(f"offline-run-*-{run_id}"))
    assert runs, "W&B offline run directory missing"
    exp = next(e for e in list_experiments() if e.tracker_run_id == run_id)
    assert exp.status == "finished" and exp.tracker == "wandb-offline"
    assert "test/macro_f1" in exp.metrics and "train_seconds" in exp.metrics


def test_dataset_is_immutable_and_leak_free(v1, settings):
    from nfl_mlops.data.datasets import TrainingData
    from nfl_mlops.registry.store import Registry

    info = Registry.from_settings().get(MODEL, 1)
    data = TrainingData.load(Path(info.lineage["dataset_dir"]))
    assert data.version == info.lineage["dataset_version"]
    assert not set(data.train["norm"]) & set(data.test["norm"])
    assert "nfl" not in set(data.train["topic"])
    manifest = json.loads((Path(info.lineage["dataset_dir"]) / "manifest.json").read_text())
    assert manifest["sizes"]["train"] == len(data.train)


def test_registration_rejects_a_worse_candidate(v1, settings, tmp_path):
    """A genuinely worse model (trained on shuffled labels) is rejected, though it claims the champion's metrics."""
    import numpy as np

    from flows.deployment import deployment_flow
    from flows.registration import registration_flow
    from nfl_mlops.data.datasets import TrainingData
    from nfl_mlops.modeling.candidate import Candidate
    from nfl_mlops.modeling.train import fine_tune
    from nfl_mlops.registry.store import Registry

    reg = Registry.from_settings()
    champion = reg.get(MODEL, "champion")
    data = TrainingData.load(Path(champion.lineage["dataset_dir"]))
    rows = data.train.iloc[:200]
    shuffled = list(np.random.default_rng(0).permutation(rows["label"].tolist()))
    fine_tune(
        rows["text"].tolist(),
        shuffled,
        SMALL_TRAIN,
        tmp_path / "shuffled",
        base_model=champion.params["train"]["base_model"],
    )
    claimed = {k: dict(v) for k, v in champion.metrics.items() if k == "test"}  # it lies: "as good as v1"
    candidate = Candidate(
        model_name=MODEL,
        model_dir=str(tmp_path / "shuffled"),
        dataset_dir=champion.lineage["dataset_dir"],
        metrics=claimed,
        params=champion.params,
        lineage={"base_model": "test"},
    )
    result = registration_flow(candidate)
    assert not result.passed and result.status == "rejected"
    assert any(r.startswith("test:") and "not shown non-inferior" in r for r in result.reasons), (
        result.reasons
    )
    gate = result.comparisons["gate"]
    assert gate["sets"]["test"]["interval"]["high"] < 0  # clearly worse, not a borderline call
    assert gate["reported_by_candidate"]["test"] == champion.metrics["test"]["macro_f1"]
    assert result.comparisons["candidate"]["test"]["macro_f1"] < champion.metrics["test"]["macro_f1"] - 0.05
    rejected = reg.get(MODEL, result.version)
    assert rejected.status == "rejected" and "not shown non-inferior" in rejected.reason
    assert (
        rejected.metrics["test"]["macro_f1"] == result.comparisons["candidate"]["test"]["macro_f1"]
    )  # measured
    assert reg.get(MODEL, "champion").version == champion.version
    assert (
        reg.get_alias(MODEL, "challenger") is None
        or reg.get_alias(MODEL, "challenger").version != result.version
    )
    with pytest.raises(Exception, match="rejected"):
        deployment_flow(version=str(result.version), model_name=MODEL)


def test_monitoring_finds_drift_on_nfl_traffic_and_not_on_in_distribution(v1, settings):
    """Log predictions straight into the prediction log, then run the monitoring flow on them."""
    from datetime import UTC, datetime, timedelta

    from flows.monitoring import monitoring_flow
    from nfl_mlops.data import load_corpus, prepare, select
    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.registry.store import Registry
    from tests.served import log_served

    info = Registry.from_settings().get(MODEL, 1)
    model = SentimentModel.load(info.path)
    corpus = prepare(load_corpus())
    held_out = set(v1_train_norms(info))

    def log(frame, at):
        texts = frame["text"].tolist()
        log_served(settings.db_url, MODEL, 1, texts, model.predict(texts), at, f"{at:%H%M%S}")

    now = datetime.now(UTC)
    same = select(corpus[~corpus["norm"].isin(held_out)], topics_exclude=["nfl"], max_rows=300, seed=11)
    log(same, now - timedelta(hours=30))
    calm = monitoring_flow(model_name=MODEL, end=now - timedelta(hours=29), window_hours=2)
    nfl = select(corpus, topics_include=["nfl"], max_rows=300, seed=11)
    served_at = datetime.now(UTC)  # after v1's rollout began: monitoring judges what v1 served since then
    log(nfl, served_at)
    drift = monitoring_flow(model_name=MODEL, end=served_at + timedelta(seconds=1), window_hours=1)

    # one check of in-distribution traffic may see a signal group or two move (300 rows against 200); it
    # never opens a drift episode (the rule wants two alarming checks in a row or a strong share)
    assert calm["episode"]["action"] in ("clear", "pending"), calm
    assert calm["events"] == [] and calm["drift_share"] < 0.75
    assert "topic" not in calm["drifted_columns"] and "n_nfl_entities" not in calm["drifted_columns"]
    assert drift["status"] == "drift", drift
    assert drift["drift_share"] > calm["drift_share"]
    assert "topic" in drift["drifted_columns"] and "n_nfl_entities" in drift["drifted_columns"]
    assert Path(drift["html_path"]).exists()


def v1_train_norms(info):
    from nfl_mlops.data.datasets import TrainingData

    data = TrainingData.load(Path(info.lineage["dataset_dir"]))
    return list(data.train["norm"]) + list(data.test["norm"])
