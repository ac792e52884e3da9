"""HPO tasks: one tracked trial (fine-tune on a slice, score on the validation split). Never retried."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.data.datasets import TrainingData
from nfl_mlops.modeling.hpo import run_trial
from nfl_mlops.modeling.params import TrainParams
from nfl_mlops.settings import get_settings
from nfl_mlops.tracking.experiments import ExperimentTracker


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
    logger = get_run_logger()
    settings = get_settings()
    tracker = ExperimentTracker()
    config = {
        "train": {**params.model_dump(), "base_model": base_model},
        "dataset_version": dataset.version,
        "sizes": dataset.sizes,
        "study": study,
        "trial": number,
        "metric": f"val/{metric}",
    }
    tracker.start(
        f"{study}-trial-{number}",
        config=config,
        tags=["hpo", "nfl", study],
        job_type="hpo-trial",
        group=study,
    )
    out: dict[str, Any] = {
        "number": number,
        "experiment_id": tracker.experiment_id,
        "tracker_run_id": tracker.tracker_run_id,
        "params": params.model_dump(),
    }
    try:
        result = run_trial(
            dataset.train["text"].tolist(),
            dataset.train["label"].tolist(),
            dataset.val["text"].tolist(),
            dataset.val["label"].tolist(),
            params,
            base_model,
            settings.mlops_home / "hpo" / study / f"trial-{number}",
            tracker=tracker,
            metric=metric,
        )
    except Exception as exc:  # a trial that crashes is a failed trial, not a failed search
        logger.warning("trial %d failed: %s: %s", number, type(exc).__name__, exc)
        tracker.finish({"error": f"{type(exc).__name__}: {exc}"[:500]}, status="failed")
        return {**out, "value": None, "error": f"{type(exc).__name__}: {exc}"}
    tracker.finish({**result["metrics"], "train_seconds": result["seconds"], "objective": result["value"]})
    logger.info(
        "trial %d: val %s %.4f (lr %.2e, bs %d, epochs %.2f) in %.0fs",
        number,
        metric,
        result["value"],
        params.learning_rate,
        params.batch_size,
        params.epochs,
        result["seconds"],
    )
    return {**out, **result}
