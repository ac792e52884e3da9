"""Distributed HPO on the state PostgreSQL: the study lives in the state DB (its own schema), so several
processes add trials to one study; the HPO flow's Dask workers (a LocalCluster of two processes) both
contribute, and the best trial's configuration goes through training and the normal registration gate."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nfl_mlops.modeling.hpo import HPOParams, SearchSpace
from nfl_mlops.modeling.params import DataParams, TrainParams

pytestmark = [pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
STUDY = "distributed-study"
MODEL = "hpo-distributed-model"


@pytest.fixture
def state_on_postgres(postgres_url, settings):
    """The state DB switched to a fresh PostgreSQL database for one test (and its Dask workers), then back."""
    from nfl_mlops.db import dispose_engines, get_engine
    from nfl_mlops.settings import get_settings

    old = os.environ.get("MLOPS_DATABASE_URL")
    os.environ["MLOPS_DATABASE_URL"] = postgres_url
    get_settings.cache_clear()
    get_engine(postgres_url)  # the state schema first (its migrations, its alembic_version in `public`)
    try:
        yield get_settings()
    finally:
        if old is None:
            os.environ.pop("MLOPS_DATABASE_URL", None)
        else:
            os.environ["MLOPS_DATABASE_URL"] = old
        get_settings.cache_clear()
        dispose_engines()


WORKER = textwrap.dedent(
    """
    import sys
    from nfl_mlops.modeling.hpo import SearchSpace, open_study, run_search, study_storage, worker_id
    from nfl_mlops.modeling.params import TrainParams
    from nfl_mlops.settings import get_settings

    index = int(sys.argv[1])
    study = open_study("two-processes", study_storage(get_settings()), sampler="random", seed=1, worker=index)
    run_search(
        study, SearchSpace(), TrainParams(), 3,
        lambda number, p: {"number": number, "value": p.learning_rate * 1000},  # no training: the storage is tested
        user_attrs={"worker": worker_id(), "worker_index": index},
    )
    """
)


def test_two_processes_add_trials_to_one_study_in_the_state_db(state_on_postgres) -> None:
    import optuna
    from sqlalchemy import create_engine, inspect, text

    from nfl_mlops.modeling.hpo import OPTUNA_SCHEMA, open_study, study_storage

    storage = study_storage(state_on_postgres)
    assert storage.startswith("postgresql") and f"search_path%3D{OPTUNA_SCHEMA}" in storage
    open_study("two-processes", storage)  # the parent creates it, as the HPO flow does
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(i)], env=env, cwd=ROOT, stderr=subprocess.PIPE)
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    study = optuna.load_study(study_name="two-processes", storage=storage)
    trials = study.trials
    assert len(trials) == 6 and sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in trials)
    by_worker = {t.user_attrs["worker"] for t in trials}
    assert len(by_worker) == 2 and {t.user_attrs["worker_index"] for t in trials} == {0, 1}
    assert (
        len({t.params["learning_rate"] for t in trials}) == 6
    )  # the workers did not draw the same configurations
    # Optuna's tables sit in their own schema; the state DB's migrations still own `public`
    url = state_on_postgres.db_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        assert {"trials", "studies", "alembic_version"} <= set(insp.get_table_names(schema=OPTUNA_SCHEMA))
        assert "trials" not in insp.get_table_names(schema="public")
        assert "model_versions" in insp.get_table_names(schema="public")
        with engine.connect() as conn:
            from nfl_mlops.db import HEAD

            assert conn.execute(text("SELECT version_num FROM public.alembic_version")).scalar() == HEAD
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_two_dask_workers_contribute_and_the_best_is_registered_through_the_gate(state_on_postgres) -> None:
    import optuna

    from flows.hpo import hpo_flow
    from nfl_mlops.modeling.hpo import study_storage
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.tracking.records import get_experiment

    out = hpo_flow(
        data=DataParams(topics_exclude=["nfl"], max_train_samples=96, max_eval_samples=64, seed=5),
        train=TrainParams(max_length=32, batch_size=16, log_every=5),  # tests/flows/test_hpo.py's slice
        search=HPOParams(
            n_trials=2,
            study_name=STUDY,
            seed=3,
            space=SearchSpace(learning_rate=(1e-4, 5e-4), batch_size=[16, 32], epochs=(0.5, 1.0)),
        ),
        model_name=MODEL,
        workers=2,
    )
    study = optuna.load_study(study_name=STUDY, storage=study_storage(state_on_postgres))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2 and os.getpid() not in {int(w.rsplit(":", 1)[1]) for w in workers}
    assert sorted(t["worker"] for t in out["trials"]) == sorted(t.user_attrs["worker"] for t in study.trials)
    for t in out["trials"]:  # each trial is a tracked run in the state PostgreSQL
        row = get_experiment(state_on_postgres.db_url, t["experiment_id"])
        assert row.status == "finished" and row.config["worker"] == t["worker"]
    # the best trial's configuration is the one trained and registered, through the normal gate
    best = study.best_trial
    assert out["best"]["number"] == best.number
    assert out["registration"]["passed"] and out["registration"]["version"] == 1
    info = Registry.from_settings().get(MODEL, 1)
    for key in ("learning_rate", "batch_size", "epochs", "warmup_ratio", "weight_decay"):
        assert info.params["train"][key] == best.user_attrs["train_params"][key], key
    assert info.lineage["hpo_study"] == STUDY and info.lineage["hpo_best_trial"] == best.number
    assert info.lineage["registration_flow_run_id"] and info.status == "ready"
