"""Training flow: dataset -> feature store -> fine-tune -> evaluate beside the baseline -> candidate."""

from __future__ import annotations

import uuid

from prefect import flow
from prefect.runtime import flow_run as this_run

from nfl_mlops.lineage import current_flow_run_id, git_sha
from nfl_mlops.modeling.candidate import Candidate
from nfl_mlops.modeling.params import DataParams, TrainParams
from nfl_mlops.modeling.report import (
    artifact_specs,
    build_candidate,
    confusion_ids,
    feature_lineage_of,
    misclassified,
    tracker_summary,
)
from nfl_mlops.naming import run_name
from nfl_mlops.reports import training_markdown
from nfl_mlops.settings import get_settings
from tasks.alerts import publish_markdown
from tasks.data import build_dataset
from tasks.drift import save_reference_profile
from tasks.evaluation import evaluate_model, explain_mistakes, train_baseline
from tasks.features import create_training_dataset, write_feature_group
from tasks.tracking import draw_model_plots, finish_tracking, start_tracking
from tasks.training import fine_tune_model


@flow(name="training", log_prints=True, flow_run_name=lambda: run_name("training", this_run.parameters))
def training_flow(
    data: DataParams = DataParams(),
    train: TrainParams = TrainParams(),
    model_name: str | None = None,
    run_name: str | None = None,
) -> Candidate:
    """Fine-tune the sentiment model and return an evaluated, tracked candidate."""
    settings = get_settings()
    model_name = model_name or settings.model_name
    base_model = train.base_model or settings.base_model
    flow_run_id = current_flow_run_id()
    run_name = run_name or f"train-{(flow_run_id or uuid.uuid4().hex)[:8]}"
    output_dir = settings.mlops_home / "candidates" / run_name

    # Data
    dataset, dataset_dir = build_dataset(data, model_name)
    eval_sets = {"test": dataset.test, "recent": dataset.recent}

    # Features
    feature_group = write_feature_group(dataset)
    training_set = create_training_dataset(feature_group)
    feature_lineage = feature_lineage_of(feature_group, training_set)

    # Train
    params = {
        "data": data.model_dump(mode="json"),
        "train": {**train.model_dump(mode="json"), "base_model": base_model},
    }
    tracker = start_tracking(
        run_name,
        {**params, "dataset_version": dataset.version, "sizes": dataset.sizes, **feature_lineage},
        ["sentiment", "nfl", "training"],
    )
    result = fine_tune_model(dataset, train, base_model, output_dir, tracker)

    # Evaluate
    metrics, probas = evaluate_model(output_dir, eval_sets)
    baseline = train_baseline(dataset.train, eval_sets, seed=data.seed)
    save_reference_profile(dataset, probas, base_model, output_dir)
    explained = explain_mistakes(output_dir, dataset.test, probas["test"])
    recent = (dataset.recent["label"].tolist(), probas["recent"]) if "recent" in probas else None
    plots = draw_model_plots(
        output_dir,
        dataset.test["label"].tolist(),
        probas["test"],
        result.losses,
        f"{model_name} {run_name}",
        f1={**metrics["test"]["f1"], "macro": metrics["test"]["macro_f1"]},
        baseline_f1={**baseline["test"]["f1"], "macro": baseline["test"]["macro_f1"]}
        if "test" in baseline
        else None,
        recent=recent,
        val_history=result.val_curve,
        best_step=result.best_step,
    )

    # Track
    artifacts = artifact_specs(
        model_name,
        run_name,
        dataset.version,
        dataset_dir,
        dataset.sizes,
        output_dir,
        base_model,
        feature_lineage,
        metrics["test"],
    )
    wandb_artifacts = finish_tracking(
        tracker,
        tracker_summary(metrics, baseline, train_seconds=result.seconds),
        misclassified(dataset.test["text"].tolist(), dataset.test["label"].tolist(), probas["test"]),
        confusion=confusion_ids(dataset.test["label"].tolist(), probas["test"]),
        artifacts=artifacts,
        images=plots,
        tables={"test/explained_mistakes": explained},
    )

    # Hand over
    candidate = build_candidate(
        model_name,
        output_dir,
        dataset_dir,
        metrics,
        baseline,
        params,
        {
            "dataset_version": dataset.version,
            "dataset_sizes": dataset.sizes,
            "data_source": data.source,
            "split_seed": data.seed,
            **feature_lineage,
            "experiment_id": tracker.experiment_id,
            "tracker_run_id": tracker.tracker_run_id,
            "wandb_artifacts": wandb_artifacts,
            "training_flow_run_id": flow_run_id,
            "git_sha": git_sha(),
            "base_model": base_model,
            "train_seconds": round(result.seconds, 1),
        },
    )

    # Report
    publish_markdown("training-report", training_markdown(candidate), f"Training run {run_name}")
    return candidate
