"""HPO flow: Optuna trials on a small slice, each a tracked run -> the best configuration, registered."""

from __future__ import annotations

import time
import uuid
from typing import Any

from prefect import flow, get_run_logger

from flows.registration import registration_flow
from flows.training import training_flow
from nfl_mlops.lineage import current_flow_run_id
from nfl_mlops.modeling.hpo import (
    HPO_EVAL_SAMPLES,
    HPO_TRAIN_SAMPLES,
    HPOParams,
    best_train_params,
    open_study,
    suggest_params,
)
from nfl_mlops.modeling.params import DataParams, TrainParams
from nfl_mlops.settings import get_settings
from tasks.data import build_dataset
from tasks.hpo import tracked_trial


@flow(name="hpo", log_prints=True)
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
    import optuna

    study = open_study(study_name, settings.optuna_url, sampler=search.sampler, seed=search.seed)
    started, trials = time.monotonic(), []
    for _ in range(search.n_trials):
        if search.timeout_minutes is not None and time.monotonic() - started > search.timeout_minutes * 60:
            logger.info("timeout reached after %d trials", len(trials))
            break
        trial = study.ask()
        params = suggest_params(trial, search.space, train)
        trial.set_user_attr("train_params", params.model_dump())
        result = tracked_trial(dataset, params, base_model, study_name, trial.number, search.metric)
        for key in ("experiment_id", "tracker_run_id"):
            trial.set_user_attr(key, result.get(key))
        if result["value"] is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, result["value"])
        trials.append(result)
    number, value, best = best_train_params(study, train)
    logger.info(
        "best trial %d of %s: val %s %.4f with %s",
        number,
        study_name,
        search.metric,
        value,
        {
            k: getattr(best, k)
            for k in ("learning_rate", "batch_size", "epochs", "warmup_ratio", "weight_decay")
        },
    )
    out: dict[str, Any] = {
        "study": study_name,
        "metric": f"val/{search.metric}",
        "trials": [
            {k: t.get(k) for k in ("number", "value", "params", "experiment_id", "tracker_run_id", "error")}
            for t in trials
        ],
        "best": {"number": number, "value": value, "params": best.model_dump()},
    }

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
