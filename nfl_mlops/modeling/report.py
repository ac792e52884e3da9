"""What a finished training run reports: tracker summary, misclassified examples, artifact specs, the candidate.

Plain functions of the run's results, so the training flow only wires tasks and these are unit-tested.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nfl_mlops import LABELS
from nfl_mlops.modeling.candidate import Candidate

MAX_MISCLASSIFIED = 200
"""Rows of the misclassified-examples table logged per run."""


def misclassified(
    texts: Sequence[str], labels: Sequence[str], proba: np.ndarray, limit: int = MAX_MISCLASSIFIED
) -> list[tuple[str, str, str, float]]:
    """(text, true, predicted, confidence) of the first `limit` test rows the model got wrong."""
    out: list[tuple[str, str, str, float]] = []
    for text, true, p in zip(texts, labels, proba, strict=True):
        predicted = LABELS[int(np.argmax(p))]
        if predicted != true:
            out.append((text, true, predicted, float(np.max(p))))
            if len(out) >= limit:
                break
    return out


def confusion_ids(labels: Sequence[str], proba: np.ndarray) -> tuple[list[int], list[int]]:
    """(true class ids, predicted class ids), for a confusion matrix."""
    return [LABELS.index(y) for y in labels], [int(np.argmax(p)) for p in proba]


def tracker_summary(
    metrics: Mapping[str, Mapping[str, Any]], baseline: Mapping[str, Mapping[str, Any]], **extra: float
) -> dict[str, float]:
    """Flat `set/metric` numbers (and `baseline/set/metric`) for the tracker's run summary."""
    summary = {f"{name}/{k}": v for name, m in metrics.items() for k, v in m.items() if isinstance(v, float)}
    summary.update(
        {
            f"baseline/{name}/{k}": v
            for name, m in baseline.items()
            for k, v in m.items()
            if isinstance(v, float)
        }
    )
    summary.update(extra)
    return summary


def artifact_specs(
    model_name: str,
    run_name: str,
    dataset_version: str,
    dataset_dir: Path,
    dataset_sizes: Mapping[str, int],
    model_dir: Path,
    base_model: str,
    feature_lineage: Mapping[str, Any],
    test_metrics: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The dataset (input) and model (output) artifacts of a training run, as `log_artifact` arguments."""
    return [
        {
            "name": f"{model_name}-dataset",
            "type": "dataset",
            "path": dataset_dir,
            "as_input": True,
            "aliases": [dataset_version],
            "metadata": {"version": dataset_version, "sizes": dict(dataset_sizes), **feature_lineage},
        },
        {
            "name": model_name,
            "type": "model",
            "path": model_dir,
            "aliases": ["candidate", run_name],
            "metadata": {
                "dataset_version": dataset_version,
                "base_model": base_model,
                **feature_lineage,
                "test": {k: v for k, v in test_metrics.items() if isinstance(v, float)},
            },
        },
    ]


def build_candidate(
    model_name: str,
    model_dir: Path,
    dataset_dir: Path,
    metrics: dict[str, Any],
    baseline: dict[str, Any],
    params: dict[str, Any],
    lineage: Mapping[str, Any],
) -> Candidate:
    """The candidate handed to registration (absolute folders; lineage as given)."""
    return Candidate(
        model_name=model_name,
        model_dir=str(model_dir.resolve()),
        dataset_dir=str(dataset_dir.resolve()),
        metrics=metrics,
        baseline_metrics=baseline,
        params=params,
        lineage={"dataset_dir": str(dataset_dir.resolve()), **lineage},
    )


def feature_lineage_of(feature_group: Any, training_set: Any) -> dict[str, Any]:
    """The feature-store lineage of a run: feature-group and training-dataset names, versions, hash."""
    return {
        "feature_store_backend": feature_group.backend,
        "feature_group": feature_group.name,
        "feature_group_version": feature_group.version,
        "feature_group_hash": feature_group.content_hash,
        "training_dataset": training_set.name,
        "training_dataset_version": training_set.version,
    }
