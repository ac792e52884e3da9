"""HPO flow: Optuna trials on a small slice, each a tracked run -> the best configuration, registered."""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as this_run

from flows.registration import registration_flow
from flows.training import training_flow
from nfl_mlops.lineage import current_flow_run_id
from nfl_mlops.modeling.hpo import (
    HPO_EVAL_SAMPLES,
    HPO_TRAIN_SAMPLES,
    HPOParams,
    best_train_params,
    open_study,
    run_search,
    search_summary,
)
from nfl_mlops.modeling.params import DataParams, TrainParams
from nfl_mlops.naming import run_name
from nfl_mlops.settings import get_settings
from tasks.data import build_dataset
from tasks.hpo import tracked_trial


@flow(name="hpo", log_prints=True, flow_run_name=lambda: run_name("hpo", this_run.parameters))
def hpo_flow(
    data: DataParams = DataParams(max_train_samples=HPO_TRAIN_SAMPLES, max_eval_samples=HPO_EVAL_SAMPLES),
    train: TrainParams = TrainParams(),
    search: HPOParams = HPOParams(),
    final_data: DataParams | None = None,
    register_best: bool = True,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Search hyperparameters with Optuna, then train the best configuration and send it through registration.

    Args:
        data: the trials' data (a small slice by default); trials are scored on its validation split.
        train: the base TrainParams; `search.space` decides which fields are searched.
        final_data: data of the final training run (default: the trials' data).
        register_best: train the best configuration as a candidate and run the registration flow.
    """
    settings = get_settings()
    logger = get_run_logger()
    model_name = model_name or settings.model_name
    base_model = train.base_model or settings.base_model
    flow_run_id = current_flow_run_id()
    study_name = search.study_name or f"hpo-{(flow_run_id or uuid.uuid4().hex)[:8]}"

    # Data
    dataset, _dataset_dir = build_dataset(data, model_name)

    # Search (Optuna ask-and-tell; each trial is a task and a tracked run)
    study = open_study(study_name, settings.optuna_url, sampler=search.sampler, seed=search.seed)
    trials = run_search(
        study,
        search.space,
        train,
        search.n_trials,
        lambda number, params: tracked_trial(dataset, params, base_model, study_name, number, search.metric),
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
