"""The HPO flow for real on a temporary Prefect server: Optuna trials as tracked runs, the best configuration
trained through the training flow (feature store, W&B artifacts) and registered through the registration flow
with the Hub mirror switched on but unreachable (the push waits in the queue, the registration succeeds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nfl_mlops.modeling.hpo import HPOParams, SearchSpace
from nfl_mlops.modeling.params import DataParams, TrainParams

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

MODEL = "hpo-test-model"
STUDY = "test-hpo-study"


@pytest.fixture(scope="module")
def hpo_run(settings):
    import os

    from flows.hpo import hpo_flow
    from nfl_mlops.settings import get_settings

    # The mirror is configured, but the suite runs with HF_HUB_OFFLINE=1: every push must wait in the queue.
    os.environ["HUGGINGFACE_TOKEN"] = "hf_test_token"
    os.environ["HUGGINGFACE_REPO"] = "nfl-org/nfl-sentiment"
    get_settings.cache_clear()
    try:
        out = hpo_flow(
            data=DataParams(topics_exclude=["nfl"], max_train_samples=96, max_eval_samples=64, seed=5),
            train=TrainParams(max_length=32, batch_size=16, log_every=5),
            search=HPOParams(
                n_trials=2,
                study_name=STUDY,
                seed=3,
                space=SearchSpace(learning_rate=(1e-4, 5e-4), batch_size=[16, 32], epochs=(0.5, 1.0)),
            ),
            model_name=MODEL,
        )
    finally:
        os.environ.pop("HUGGINGFACE_TOKEN", None)
        os.environ.pop("HUGGINGFACE_REPO", None)
        get_settings.cache_clear()
    return out


def test_each_trial_is_a_tracked_run_in_the_study(hpo_run, settings) -> None:
    import optuna

    from nfl_mlops.db import Experiment, session_scope

    trials = hpo_run["trials"]
    assert [t["number"] for t in trials] == [0, 1]
    assert all(isinstance(t["value"], float) and 0 <= t["value"] <= 1 for t in trials)
    assert trials[0]["params"] != trials[1]["params"]  # the sampler drew two configurations
    with session_scope(settings.db_url) as s:
        for t in trials:
            row = s.get(Experiment, t["experiment_id"])
            assert row.status == "finished" and STUDY in row.tags and "hpo" in row.tags
            assert row.config["trial"] == t["number"] and "val/macro_f1" in row.metrics
            assert list(Path(settings.wandb_dir).rglob(f"offline-run-*-{t['tracker_run_id']}"))
    study = optuna.load_study(study_name=STUDY, storage=settings.optuna_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.best_trial.number == hpo_run["best"]["number"]
    assert not (settings.mlops_home / "hpo" / STUDY / "trial-0").exists()  # trial weights are not kept


def test_best_configuration_is_registered_with_full_lineage(hpo_run, settings) -> None:
    from nfl_mlops.features.store import find_feature_group
    from nfl_mlops.registry.store import Registry

    assert hpo_run["registration"]["passed"] and hpo_run["registration"]["version"] == 1
    info = Registry.from_settings().get(MODEL, 1)
    best = hpo_run["best"]["params"]
    for key in ("learning_rate", "batch_size", "epochs", "warmup_ratio", "weight_decay"):
        assert info.params["train"][key] == best[key], key
    lin = info.lineage
    assert lin["hpo_study"] == STUDY and lin["hpo_best_trial"] == hpo_run["best"]["number"]
    assert lin["hpo_flow_run_id"] and lin["training_flow_run_id"] and lin["registration_flow_run_id"]
    fg = find_feature_group(lin["feature_group"], lin["feature_group_version"], lin["feature_store_backend"])
    assert fg is not None and fg.data_version == lin["dataset_version"]
    assert lin["training_dataset_version"] >= 1
    assert {f"{MODEL}-dataset:{lin['dataset_version']}", f"{MODEL}:candidate"} <= set(lin["wandb_artifacts"])
    folder = Path(info.path)
    card = (folder / "README.md").read_text()
    assert "![Confusion matrix on the test split](confusion_matrix.png)" in card
    assert (folder / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "Optuna study" in card and "Feature-group version" in card


def test_unreachable_hub_queues_the_push_and_lineage_reaches_the_hpo_run(hpo_run, settings) -> None:
    from nfl_mlops.db import Prediction, session_scope
    from nfl_mlops.lineage import lineage_of_prediction
    from nfl_mlops.registry.hub import push_status

    push = push_status(MODEL, 1)
    assert push is not None and push.status == "pending" and "offline" in push.last_error.lower()
    assert push.repo_id == f"nfl-org/nfl-sentiment-{MODEL}" and push.tag == "v1"
    with session_scope(settings.db_url) as s:
        s.add(
            Prediction(
                id="pred-hpo-1",
                request_id="r",
                model_name=MODEL,
                model_version=1,
                text="go pats",
                text_hash="h",
                label="positive",
                confidence=0.8,
                latency_ms=2.0,
            )
        )
    out = lineage_of_prediction("pred-hpo-1")
    assert out["hpo"]["study"] == STUDY and out["flow_runs"]["hpo"] and out["flow_runs"]["training"]
    assert out["feature_group"]["version"] >= 1 and out["experiment"]["status"] == "finished"
    assert out["hub"]["status"] == "pending"
