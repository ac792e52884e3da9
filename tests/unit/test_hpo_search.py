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


def test_the_study_lives_in_the_state_postgresql_in_its_own_schema(tmp_path) -> None:
    """SQLite state DB: the SQLite study file (as before); PostgreSQL state DB: that database, schema `optuna`
    (Optuna's own alembic_version would meet the state DB's); MLOPS_OPTUNA_STORAGE always wins."""
    from types import SimpleNamespace

    from pydantic import SecretStr

    from nfl_mlops.modeling.hpo import OPTUNA_SCHEMA, _search_path, study_storage

    sqlite_study = f"sqlite:///{tmp_path / 'optuna.db'}"
    local = SimpleNamespace(
        optuna_storage=None, db_url=f"sqlite:///{tmp_path / 'mlops.db'}", optuna_url=sqlite_study
    )
    assert study_storage(local) == sqlite_study
    pg = SimpleNamespace(
        optuna_storage=None, db_url="postgresql://u:p%40ss@db:5432/state", optuna_url=sqlite_study
    )
    url = study_storage(pg)
    assert url.startswith("postgresql://u:p%40ss@db:5432/state?") and _search_path(url) == OPTUNA_SCHEMA
    explicit = SimpleNamespace(
        optuna_storage=SecretStr("postgresql://o@h/optuna"),
        db_url=pg.db_url,
        optuna_url="postgresql://o@h/optuna",
    )
    assert (
        study_storage(explicit) == "postgresql://o@h/optuna"
        and _search_path("postgresql://o@h/optuna") is None
    )


def test_trials_are_shared_among_workers() -> None:
    from nfl_mlops.modeling.hpo import split_trials

    assert split_trials(5, 2) == [3, 2] and split_trials(2, 2) == [1, 1]
    assert split_trials(1, 3) == [1]  # a worker with nothing to do is not started
    assert sum(split_trials(17, 4)) == 17


def test_workers_opening_a_study_together_draw_different_configurations(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    a = open_study("w", url, sampler="random", seed=5, worker=0).ask()
    b = open_study("w", url, sampler="random", seed=5, worker=1).ask()  # both see 0 trials so far
    draw = [t.suggest_float("learning_rate", 1e-5, 1e-3, log=True) for t in (a, b)]
    assert draw[0] != draw[1]


def test_run_search_marks_each_trial_with_its_worker(tmp_path) -> None:
    from nfl_mlops.modeling.hpo import run_search

    study = open_study("marks", f"sqlite:///{tmp_path / 'm.db'}", seed=1)
    out = run_search(
        study,
        SearchSpace(),
        TrainParams(),
        2,
        lambda number, p: {"number": number, "value": 0.5},
        user_attrs={"worker": "host:1", "worker_index": 0},
    )
    assert [t["worker"] for t in out] == ["host:1", "host:1"]
    assert all(t.user_attrs["worker"] == "host:1" for t in study.trials)
