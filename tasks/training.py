"""Training tasks: fine-tune (never retried) and the baseline."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.data.datasets import TrainingData
from nfl_mlops.modeling.params import TrainParams
from nfl_mlops.modeling.train import TrainResult, fine_tune, progress_line


@task(name="fine-tune", cache_policy=NO_CACHE, retries=0)
def fine_tune_model(
    data: TrainingData, params: TrainParams, base_model: str, output_dir: Path, tracker: Any = None
) -> TrainResult:
    """Fine-tune the base model on the training split, choosing the checkpoint on the validation split;
    per-step loss and the validation scores go to the tracker."""
    logger = get_run_logger()
    texts, labels, repeat = data.fit_rows(params.feedback_repeat, params.feedback_max_share)
    n_feedback = int(data.description.get("feedback_train_rows") or 0)
    logger.info(
        "fine-tuning %s on %d rows (%d base, %d feedback x %d) for %s epoch(s)",
        base_model,
        len(texts),
        len(data.train) - n_feedback,
        n_feedback,
        repeat,
        params.epochs,
    )

    started = time.monotonic()
    total_steps = max(1, math.ceil(math.ceil(len(texts) / params.batch_size) * params.epochs))

    def on_log(step: int, values: dict[str, float]) -> None:
        if tracker is not None:
            tracker.log(values, step=step)
        if "val/macro_f1" in values:
            logger.info(
                "step %d (epoch %.2f): validation macro-F1 %.4f, loss %.4f",
                step,
                values["epoch"],
                values["val/macro_f1"],
                values["val/loss"],
            )
        elif "train_loss" in values and step % (params.log_every * 5) == 0:
            logger.info(
                "%s", progress_line(step, total_steps, time.monotonic() - started, params.batch_size, values)
            )

    result = fine_tune(
        texts,
        labels,
        params,
        output_dir,
        base_model=base_model,
        on_log=on_log,
        val_texts=data.val["text"].tolist(),
        val_labels=data.val["label"].tolist(),
    )
    logger.info(
        "trained %d of %d steps in %.0fs (%.1f examples/s, mixed precision: %s), final loss %.4f; "
        "kept step %s (validation macro-F1 %s)%s",
        result.steps,
        result.planned_steps,
        result.seconds,
        result.examples_per_second,
        result.precision,
        result.final_loss,
        result.best_step,
        f"{result.best_val_macro_f1:.4f}" if result.best_val_macro_f1 is not None else "-",
        ", stopped early" if result.stopped_early else "",
    )
    return result
