"""Lineage on demand: from a prediction id back to the version, data, features, tracker run and flow runs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pytest

from nfl_mlops.db import Experiment, ModelVersion, Prediction, RetrainingJob, Rollout, session_scope
from nfl_mlops.features.store import LocalFeatureStore, build_feature_frame
from nfl_mlops.lineage import PredictionNotFound, lineage_of_prediction
from nfl_mlops.registry.hub import HubPushRow

RUN = uuid.uuid4().hex[:6]  # the state DB may outlive the session (PostgreSQL runs)
MODEL = f"lineage-model-{RUN}"
PID = f"pred-lineage-{RUN}"


@pytest.fixture(scope="module")
def prediction_id(settings, tmp_path_factory) -> str:
    store = LocalFeatureStore(tmp_path_factory.mktemp("fs"), settings.db_url)
    frame = build_feature_frame(
        {
            "train": pd.DataFrame(
                {
                    "text": ["Go Pats", "boo refs"],
                    "label": ["positive", "negative"],
                    "norm": ["go pats", "boo refs"],
                }
            )
        }
    )
    fg = store.write_feature_group(f"lineage_features_{RUN}", frame, data_version="data123")
    td = store.create_training_dataset(f"lineage_td_{RUN}", fg)
    with session_scope(settings.db_url) as s:
        exp = Experiment(
            name="train-x",
            tracker="wandb-offline",
            tracker_run_id="run42",
            run_dir="/runs/run42",
            status="finished",
        )
        s.add(exp)
        s.flush()
        s.add(
            ModelVersion(
                model_name=MODEL,
                version=2,
                status="ready",
                path="/models/lineage-model/v2",
                lineage={
                    "dataset_version": "data123",
                    "dataset_dir": "/datasets/data123",
                    "dataset_sizes": {"train": 2},
                    "data_source": "corpus",
                    "split_seed": 42,
                    "feature_store_backend": "local",
                    "feature_group": fg.name,
                    "feature_group_version": fg.version,
                    "training_dataset": td.name,
                    "training_dataset_version": td.version,
                    "experiment_id": exp.id,
                    "tracker_run_id": "run42",
                    "wandb_artifacts": ["lineage-model:candidate"],
                    "training_flow_run_id": "flow-train",
                    "registration_flow_run_id": "flow-reg",
                    "git_sha": "cafe",
                    "base_model": "minilm",
                },
                params={"train": {"epochs": 1}},
            )
        )
        s.add(
            Rollout(
                id=f"ro-{RUN}",
                model_name=MODEL,
                version=2,
                strategy="canary",
                status="active",
                flow_run_id="flow-deploy",
            )
        )
        s.add(
            RetrainingJob(
                model_name=MODEL,
                reason="drift",
                trigger="automation",
                status="completed",
                flow_run_id="flow-retrain",
                result={"version": 2},
            )
        )
        s.add(
            Prediction(
                id=PID,
                request_id="req-1",
                model_name=MODEL,
                model_version=2,
                rollout_id=f"ro-{RUN}",
                arm="candidate",
                text="Go Pats",
                text_hash="h",
                label="positive",
                confidence=0.9,
                latency_ms=3.0,
            )
        )
        s.add(
            HubPushRow(
                model_name=MODEL,
                version=2,
                repo_id=f"org/x-{MODEL}",
                tag="v2",
                path="/m",
                status="pushed",
                attempts=1,
                commit_sha="abc",
            )
        )
    return PID


def test_lineage_of_a_prediction(prediction_id, settings) -> None:
    out = lineage_of_prediction(prediction_id, settings.db_url)
    assert out["prediction"]["model_version"] == 2 and out["prediction"]["arm"] == "candidate"
    assert out["prediction"]["rollout"]["id"] == f"ro-{RUN}"
    assert out["model"]["name"] == MODEL and out["model"]["version"] == 2
    assert out["dataset"]["version"] == "data123" and out["dataset"]["split_seed"] == 42
    assert out["feature_group"]["name"] == f"lineage_features_{RUN}" and out["feature_group"]["version"] == 1
    assert out["feature_group"]["data_version"] == "data123" and out["feature_group"]["backend"] == "local"
    assert out["training_dataset"]["version"] == 1 and out["training_dataset"]["splits"] == {"train": 2}
    assert out["experiment"]["tracker_run_id"] == "run42" and out["experiment"]["status"] == "finished"
    assert out["flow_runs"] == {
        "training": "flow-train",
        "registration": "flow-reg",
        "hpo": None,
        "deployments": ["flow-deploy"],
        "retraining": ["flow-retrain"],
    }
    assert out["hub"]["tag"] == "v2" and out["hub"]["status"] == "pushed"
    assert out["code"]["git_sha"] == "cafe" and out["wandb_artifacts"] == ["lineage-model:candidate"]
    json.dumps(out)  # serialisable as it is (the API returns it)


def test_unknown_prediction_is_a_clear_lookup_error(settings) -> None:
    with pytest.raises(LookupError, match="no prediction with id 'nope'"):
        lineage_of_prediction("nope", settings.db_url)
    assert issubclass(PredictionNotFound, LookupError)


def test_cli_prints_lineage_and_fails_cleanly(prediction_id, capsys) -> None:
    from deployments import cli

    assert cli.main(["lineage", prediction_id]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["version"] == 2
    assert cli.main(["lineage", "missing-id"]) == 2
    assert "no prediction" in capsys.readouterr().err


def test_version_lineage_without_features_or_tracker(settings) -> None:
    with session_scope(settings.db_url) as s:
        s.add(
            ModelVersion(
                model_name=MODEL + "-bare", version=1, status="ready", path=str(Path("/m")), lineage={}
            )
        )
        s.add(
            Prediction(
                id=f"{PID}-bare",
                request_id="r",
                model_name=MODEL + "-bare",
                model_version=1,
                text="x",
                text_hash="h",
                label="neutral",
                confidence=0.5,
                latency_ms=1.0,
            )
        )
    out = lineage_of_prediction(f"{PID}-bare", settings.db_url)
    assert out["feature_group"] is None and out["experiment"] is None and out["hub"] is None
