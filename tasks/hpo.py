"""HPO tasks: one tracked trial (fine-tune on a slice, score on the validation split), and one worker of a
distributed search (its own ask-and-tell loop on the shared study). Never retried."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.data.datasets import TrainingData
from nfl_mlops.modeling import hpo
from nfl_mlops.modeling.params import TrainParams
from nfl_mlops.settings import get_settings


@task(name="hpo-trial", cache_policy=NO_CACHE, retries=0)
def tracked_trial(
    dataset: TrainingData,
    params: TrainParams,
    base_model: str,
    study: str,
    number: int,
    metric: str = "macro_f1",
) -> dict[str, Any]:
    """Run trial `number` of `study` as its own tracked run; a failed trial returns value None."""
    result = hpo.tracked_trial(
        dataset,
        params,
        base_model,
        get_settings().mlops_home / "hpo" / study / f"trial-{number}",
        name=f"{study}-trial-{number}",
        config={"study": study, "trial": number},
        tags=["hpo", "nfl", study],
        group=study,
        metric=metric,
        logger=get_run_logger(),
    )
    return {"number": number, **result}


@task(name="hpo-worker", cache_policy=NO_CACHE, retries=0)
def hpo_worker(
    dataset: TrainingData,
    train: TrainParams,
    search: hpo.HPOParams,
    base_model: str,
    study: str,
    worker: int,
    n_trials: int,
) -> list[dict[str, Any]]:
    """Run `n_trials` trials of the shared `study` in this process (a Dask worker, or any process with the same
    settings); each trial is a tracked run and carries this worker's id (`hostname:pid`) in its user attributes.
    The study's storage comes from this process's settings: no connection string travels in task parameters."""
    settings = get_settings()
    logger = get_run_logger()
    opened = hpo.open_study(
        study, hpo.study_storage(settings), sampler=search.sampler, seed=search.seed, worker=worker
    )
    me = hpo.worker_id()
    logger.info("worker %d (%s): %d trial(s) of %s", worker, me, n_trials, study)

    def run(number: int, params: TrainParams) -> dict[str, Any]:
        result = hpo.tracked_trial(
            dataset,
            params,
            base_model,
            settings.mlops_home / "hpo" / study / f"trial-{number}",
            name=f"{study}-trial-{number}",
            config={"study": study, "trial": number, "worker": me},
            tags=["hpo", "nfl", study],
            group=study,
            metric=search.metric,
            logger=logger,
        )
        return {"number": number, **result}

    return hpo.run_search(
        opened,
        search.space,
        train,
        n_trials,
        run,
        timeout_minutes=search.timeout_minutes,
        user_attrs={"worker": me, "worker_index": worker},
    )
