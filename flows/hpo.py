"""HPO flow: Optuna trials on a small slice, each a tracked run -> the best configuration, registered."""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as this_run

from flows.registration import registration_flow
from flows.training import training_flow
from nfl_mlops.data.datasets import TrainingData
from nfl_mlops.lineage import current_flow_run_id
from nfl_mlops.modeling.hpo import (
    HPO_EVAL_SAMPLES,
    HPO_TRAIN_SAMPLES,
    HPOParams,
    best_train_params,
    open_study,
    run_search,
    search_summary,
    split_trials,
    study_storage,
)
from nfl_mlops.modeling.params import DataParams, TrainParams
from nfl_mlops.naming import run_name
from nfl_mlops.settings import get_settings
from tasks.data import build_dataset
from tasks.hpo import hpo_worker, tracked_trial
from tasks.runners import task_runner


@flow(name="hpo-workers")
def hpo_workers_flow(
    dataset: TrainingData,
    train: TrainParams,
    search: HPOParams,
    base_model: str,
    study_name: str,
    counts: list[int],
) -> list[dict[str, Any]]:
    """One `hpo-worker` task per worker on this flow's task runner (set by the HPO flow), all on one study."""
    futures = [
        hpo_worker.submit(dataset, train, search, base_model, study_name, i, n) for i, n in enumerate(counts)
    ]
    return sorted((t for f in futures for t in f.result()), key=lambda t: t["number"])


@flow(name="hpo", log_prints=True, flow_run_name=lambda: run_name("hpo", this_run.parameters))
def hpo_flow(
    data: DataParams = DataParams(max_train_samples=HPO_TRAIN_SAMPLES, max_eval_samples=HPO_EVAL_SAMPLES),
    train: TrainParams = TrainParams(),
    search: HPOParams = HPOParams(),
    final_data: DataParams | None = None,
    register_best: bool = True,
    model_name: str | None = None,
    workers: int = 1,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Search hyperparameters with Optuna, then train the best configuration and send it through registration.

    Args:
        data: the trials' data (a small slice by default); trials are scored on its validation split.
        train: the base TrainParams; `search.space` decides which fields are searched.
        final_data: data of the final training run (default: the trials' data).
        register_best: train the best configuration as a candidate and run the registration flow.
        workers: concurrent trial workers. 1: trials run one after another in this flow run; more: a Dask
            LocalCluster of that many processes, each running its share of `search.n_trials` on the one
            study (the state PostgreSQL, when it is the state DB). Several flow runs with the same
            `search.study_name` (e.g. on several Prefect workers) also add to one study.
        dask_address: a running Dask scheduler (tcp://host:8786) to run the `workers` trial workers on.
    """
    settings = get_settings()
    logger = get_run_logger()
    model_name = model_name or settings.model_name
    base_model = train.base_model or settings.base_model
    flow_run_id = current_flow_run_id()
    study_name = search.study_name or f"hpo-{(flow_run_id or uuid.uuid4().hex)[:8]}"

    # Data
    dataset, _dataset_dir = build_dataset(data, model_name)

    # Search (Optuna ask-and-tell; each trial is a tracked run)
    storage = study_storage(settings)
    if dask_address and storage.startswith("sqlite"):
        raise ValueError(
            "HPO on a Dask cluster needs a study storage every worker reaches: a PostgreSQL state DB "
            "(MLOPS_DATABASE_URL) or MLOPS_OPTUNA_STORAGE, not the local SQLite file"
        )
    study = open_study(study_name, storage, sampler=search.sampler, seed=search.seed)  # creates it once
    if workers > 1 or dask_address:
        if storage.startswith("sqlite"):
            logger.warning(
                "%d workers share a SQLite study: fine on one host, use PostgreSQL at scale", workers
            )
        trials = hpo_workers_flow.with_options(task_runner=task_runner("dask", workers, dask_address))(
            dataset, train, search, base_model, study_name, split_trials(search.n_trials, workers)
        )
    else:
        trials = run_search(
            study,
            search.space,
            train,
            search.n_trials,
            lambda number, params: tracked_trial(
                dataset, params, base_model, study_name, number, search.metric
            ),
            timeout_minutes=search.timeout_minutes,
        )
    number, value, best = best_train_params(study, train)
    logger.info(
        "best trial %d of %s: val %s %.4f with %s",
        number,
        study_name,
        search.metric,
        value,
        best.model_dump(include={"learning_rate", "batch_size", "epochs", "warmup_ratio", "weight_decay"}),
    )
    out = search_summary(study_name, search.metric, trials, number, value, best)

    # Register the best configuration
    if register_best:
        candidate = training_flow(
            data=final_data or data, train=best, model_name=model_name, run_name=f"{study_name}-best"
        )
        candidate = candidate.model_copy(
            update={
                "lineage": {
                    **candidate.lineage,
                    "hpo_study": study_name,
                    "hpo_best_trial": number,
                    "hpo_best_value": value,
                    "hpo_flow_run_id": flow_run_id,
                }
            }
        )
        registration = registration_flow(candidate)
        out["registration"] = {
            "version": registration.version,
            "status": registration.status,
            "passed": registration.passed,
            "reasons": registration.reasons,
        }
    return out
