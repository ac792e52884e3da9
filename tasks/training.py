"""Training tasks: fine-tune (never retried) and the baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.data.datasets import TrainingData
from nfl_mlops.modeling.params import TrainParams
from nfl_mlops.modeling.train import TrainResult, fine_tune


@task(name="fine-tune", cache_policy=NO_CACHE, retries=0)
def fine_tune_model(
    data: TrainingData, params: TrainParams, base_model: str, output_dir: Path, tracker: Any = None
) -> TrainResult:
    """Fine-tune the base model on the training split; per-step loss goes to the tracker."""
    logger = get_run_logger()
    logger.info("fine-tuning %s on %d rows for %s epoch(s)", base_model, len(data.train), params.epochs)

    def on_log(step: int, values: dict[str, float]) -> None:
        if tracker is not None:
            tracker.log(values, step=step)
        if step % (params.log_every * 5) == 0:
            logger.info("step %d: loss %.4f", step, values["train_loss"])

    result = fine_tune(
        data.train["text"].tolist(),
        data.train["label"].tolist(),
        params,
        output_dir,
        base_model=base_model,
        on_log=on_log,
    )
    logger.info(
        "trained %d steps in %.0fs (%.1f examples/s), final loss %.4f",
        result.steps,
        result.seconds,
        result.examples_per_second,
        result.final_loss,
    )
    return result
