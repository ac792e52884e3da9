"""The HPO search pieces without training: the space, Optuna studies (resume), the W&B sweep configuration."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from nfl_mlops.modeling.hpo import (
    HPOParams,
    SearchSpace,
    best_train_params,
    open_study,
    optuna_storage_url,
    suggest_params,
    wandb_sweep_config,
)
from nfl_mlops.modeling.params import TrainParams


def test_suggested_params_stay_in_the_space_and_keep_the_rest(tmp_path) -> None:
    space = SearchSpace(learning_rate=(1e-5, 1e-3), batch_size=[8, 64], epochs=(1.0, 1.0))
    base = TrainParams(max_length=48, seed=7)
    study = open_study("space", f"sqlite:///{tmp_path / 'o.db'}", seed=1)
    for _ in range(5):
        trial = study.ask()
        p = suggest_params(trial, space, base)
        assert 1e-5 <= p.learning_rate <= 1e-3 and p.batch_size in (8, 64) and p.epochs == 1.0
        assert (p.max_length, p.seed) == (48, 7)
        trial.set_user_attr("train_params", p.model_dump())
        study.tell(trial, p.learning_rate)  # pretend: a higher learning rate scores better
    number, value, best = best_train_params(study, base)
    assert value == max(t.value for t in study.trials) and best.learning_rate == value
    assert study.trials[number].value == value


def test_a_resumed_study_does_not_repeat_its_draws(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'resume.db'}"
    first = open_study("resume", url, sampler="random", seed=5)
    a = first.ask()
    a_lr = a.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
    first.tell(a, 0.5)
    again = open_study("resume", url, sampler="random", seed=5)
    assert len(again.trials) == 1
    b = again.ask()
    assert b.suggest_float("learning_rate", 1e-5, 1e-3, log=True) != a_lr


def test_best_without_completed_trials_is_an_error(tmp_path) -> None:
    study = open_study("empty", f"sqlite:///{tmp_path / 'e.db'}")
    with pytest.raises(ValueError):
        best_train_params(study, TrainParams())


def test_invalid_spaces_are_rejected() -> None:
    with pytest.raises(ValidationError):
        SearchSpace(learning_rate=(1e-3, 1e-5))
    with pytest.raises(ValidationError):
        SearchSpace(batch_size=[])


def test_wandb_sweep_config_mirrors_the_space() -> None:
    cfg = wandb_sweep_config(HPOParams(n_trials=12), project="nfl")
    assert cfg["method"] == "bayes" and cfg["metric"] == {"name": "val/macro_f1", "goal": "maximize"}
    assert cfg["parameters"]["learning_rate"]["distribution"] == "log_uniform_values"
    assert cfg["parameters"]["batch_size"] == {"values": [16, 32]}
    assert cfg["run_cap"] == 12 and cfg["project"] == "nfl" and "--sweep-trial" in cfg["command"]
    json.dumps(cfg)


def test_cli_prints_the_sweep(capsys) -> None:
    from deployments import cli

    assert cli.main(["hpo", "--print-sweep", "--params", '{"search": {"sampler": "random"}}']) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "random"


def test_postgres_urls_use_psycopg3() -> None:
    assert optuna_storage_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert optuna_storage_url("sqlite:///x.db") == "sqlite:///x.db"


def test_a_trial_that_crashes_is_a_failed_tracked_run_not_a_failed_search(settings, tmp_path):
    """The one tracked trial (the HPO task's and the CLI sweep trial's): a base model that cannot load."""
    from types import SimpleNamespace

    import pandas as pd

    from nfl_mlops.modeling.hpo import tracked_trial
    from nfl_mlops.tracking.records import get_experiment

    rows = pd.DataFrame(
        {"text": ["great game", "awful refs", "kickoff at 8"], "label": ["positive", "negative", "neutral"]}
    )
    dataset = SimpleNamespace(train=rows, val=rows, version="ds-test", sizes={"train": 3, "val": 3})
    result = tracked_trial(
        dataset,
        TrainParams(epochs=1, batch_size=2),
        str(tmp_path / "no-such-base-model"),
        tmp_path / "trial",
        name="crashing-trial",
        tags=["hpo", "test"],
    )
    assert result["value"] is None and result["error"]
    row = get_experiment(settings.db_url, result["experiment_id"])
    assert row.status == "failed" and row.config["dataset_version"] == "ds-test"
    assert not (tmp_path / "trial").exists()  # nothing half-written is left
