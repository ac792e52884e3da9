"""W&B depth, offline and for real: dataset and model artifacts, the confusion matrix, the misclassified
table, a run `wandb sync` would send, and the experiment row in the state DB."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nfl_mlops import LABELS
from nfl_mlops.db import Experiment, session_scope
from nfl_mlops.tracking.experiments import ExperimentTracker, _artifact_name, offline_runs


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "train.parquet").write_bytes(b"PAR1 not really parquet")
    (data / "manifest.json").write_text('{"version": "abc"}')
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\0" * 1024)
    return data, model


def test_offline_run_with_artifacts_confusion_matrix_and_table(settings, folders) -> None:
    data, model = folders
    tracker = ExperimentTracker()
    tracker.start(
        "depth-test",
        config={"lr": 1e-4, "hf_token": "never-logged"},
        tags=["test"],
        job_type="train",
        group="depth-group",
    )
    ds_ref = tracker.log_artifact(
        "depth-model-dataset", "dataset", data, metadata={"version": "abc"}, aliases=["abc"], as_input=True
    )
    model_ref = tracker.log_artifact(
        "depth-model",
        "model",
        model,
        metadata={"dataset_version": "abc", "api_key": "never-logged"},
        aliases=["candidate"],
    )
    tracker.log_confusion_matrix("test/confusion_matrix", [0, 1, 2, 1], [0, 2, 2, 1], LABELS)
    tracker.log_table(
        "misclassified", ["text", "true", "predicted", "confidence"], [["meh", "neutral", "positive", 0.6]]
    )
    run_id = tracker.tracker_run_id
    tracker.finish({"test/macro_f1": 0.5})

    assert (ds_ref, model_ref) == ("depth-model-dataset:abc", "depth-model:candidate")
    assert tracker.artifacts == [ds_ref, model_ref]
    run_dir = next(p for p in offline_runs(settings) if p.name.endswith(run_id))
    record = (run_dir / f"run-{run_id}.wandb").read_bytes()
    # the run's record log holds both artifacts (offline: as outputs), the chart and the table
    for needle in (
        b"depth-model-dataset",
        b"depth-model",
        b"dataset",
        b"model",
        b"candidate",
        b"test/confusion_matrix",
        b"misclassified",
        b"depth-group",
    ):
        assert needle in record, needle
    assert b"never-logged" not in record  # secrets scrubbed from config and metadata
    # the experiment row the API lists without W&B
    with session_scope(settings.db_url) as s:
        row = s.get(Experiment, tracker.experiment_id)
        assert row.status == "finished" and row.tracker_run_id == run_id and row.tracker == "wandb-offline"
        assert row.metrics["test/macro_f1"] == 0.5 and "hf_token" not in row.config
    # artifact staging stays under MLOPS_HOME
    assert not any(Path.home().joinpath(".local/share/wandb/artifacts/staging").glob(f"*{run_id}*"))


@pytest.mark.skipif(
    shutil.which("wandb") is None and not Path(".venv/bin/wandb").exists(), reason="wandb CLI not on PATH"
)
def test_wandb_sync_sees_the_offline_run(settings, folders) -> None:
    """`wandb sync --dry-run` (no network) lists the offline run as one it would upload."""
    tracker = ExperimentTracker()
    tracker.start("sync-test", config={}, tags=[])
    tracker.log_artifact("sync-model", "model", folders[1])
    run_id = tracker.tracker_run_id
    tracker.finish({})
    run_dir = next(p for p in offline_runs(settings) if p.name.endswith(run_id))
    exe = shutil.which("wandb") or str(Path(".venv/bin/wandb").resolve())
    out = subprocess.run(
        [exe, "sync", "--dry-run", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "WANDB_SILENT": "false", "HOME": str(settings.mlops_home)},
        check=False,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "Would sync 1 run" in text and run_id in text


def test_without_wandb_artifacts_are_skipped_and_the_row_is_still_written(settings, folders) -> None:
    tracker = ExperimentTracker(use_wandb=False)
    tracker.start("no-wandb", config={"a": 1})
    assert tracker.log_artifact("x", "model", folders[1]) is None
    tracker.log_confusion_matrix("cm", [0], [0], LABELS)  # a no-op, not an error
    tracker.finish({"m": 1.0})
    with session_scope(settings.db_url) as s:
        assert s.get(Experiment, tracker.experiment_id).tracker == "wandb-disabled"


def test_artifact_names_are_sanitised() -> None:
    assert _artifact_name("nfl sentiment/v1") == "nfl-sentiment-v1"
    assert _artifact_name("///") == "artifact"
