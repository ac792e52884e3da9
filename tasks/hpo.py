"""HPO tasks: one tracked trial (fine-tune on a slice, score on the validation split). Never retried."""

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
