"""Feature tasks: the feature pipeline into the feature store (local by default, Hopsworks by settings)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.data.datasets import SPLITS, TrainingData
from nfl_mlops.features.store import (
    FEATURE_GROUP,
    TRAINING_DATASET,
    FeatureGroupVersion,
    TrainingDatasetVersion,
    build_feature_frame,
    get_feature_store,
)

# Feature-store calls go over the network with Hopsworks; both steps are idempotent (content hash).
_RETRY = {"retries": 3, "retry_delay_seconds": [2, 5, 15]}


@task(name="write-feature-group", cache_policy=NO_CACHE, **_RETRY)
def write_feature_group(dataset: TrainingData, name: str = FEATURE_GROUP) -> FeatureGroupVersion:
    """Compute the text features of every split and store them as a feature-group version."""
    frame = build_feature_frame({split: getattr(dataset, split) for split in SPLITS})
    store = get_feature_store()
    fg = store.write_feature_group(
        name,
        frame,
        data_version=dataset.version,
        description=f"Text features of dataset {dataset.version} ({dataset.description.get('source')})",
    )
    get_run_logger().info(
        "feature group %s v%d (%s, %d rows, data %s)",
        fg.name,
        fg.version,
        fg.backend,
        fg.n_rows,
        fg.data_version,
    )
    return fg


@task(name="create-training-dataset", cache_policy=NO_CACHE, **_RETRY)
def create_training_dataset(fg: FeatureGroupVersion, name: str = TRAINING_DATASET) -> TrainingDatasetVersion:
    """Snapshot the feature-group version as an immutable training dataset with its split."""
    td = get_feature_store().create_training_dataset(name, fg)
    get_run_logger().info(
        "training dataset %s v%d from %s v%d: %s", td.name, td.version, fg.name, fg.version, td.splits
    )
    return td
