"""Data tasks: build and persist the training dataset (base data + labelled feedback)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.data.datasets import TrainingData, build_training_data, load_base
from nfl_mlops.modeling.params import DataParams
from nfl_mlops.monitoring.feedback import labelled_feedback
from nfl_mlops.settings import get_settings


@task(name="build-dataset", cache_policy=NO_CACHE)
def build_dataset(params: DataParams, model_name: str) -> tuple[TrainingData, Path]:
    """Load, clean, split and save the dataset; returns it and its immutable folder."""
    settings = get_settings()
    logger = get_run_logger()
    base = load_base(params.source)
    feedback = labelled_feedback(model_name, db_url=settings.db_url) if params.include_feedback else None
    data = build_training_data(params, base, feedback)
    folder = data.save(settings.datasets_path)
    logger.info(
        "dataset %s: %s (feedback rows %s) -> %s",
        data.version,
        data.sizes,
        data.description.get("feedback_rows"),
        folder,
    )
    return data, folder
