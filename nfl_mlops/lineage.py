"""Where a model (and each of its predictions) came from.

`git_sha` and `current_flow_run_id` are recorded when a candidate is trained and registered;
`lineage_of_prediction` walks back from one logged prediction to the model version, the training
dataset, the feature-group version, the tracker run and the Prefect flow runs, reading only the
state DB (no call to W&B, the Hub or the feature store).
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The commit of the code that runs (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def current_flow_run_id() -> str | None:
    """The Prefect flow run id of the caller, if it runs inside one."""
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    except Exception:  # not in a flow, or prefect not importable
        return None


def scheduled_start() -> datetime | None:
    """The scheduled start time of the caller's Prefect flow run, if it runs inside one."""
    try:
        from prefect.runtime import flow_run

        scheduled = flow_run.scheduled_start_time
        return None if scheduled is None else datetime.fromisoformat(str(scheduled)).astimezone(UTC)
    except Exception:  # not in a flow, or prefect not importable
        return None


class PredictionNotFound(LookupError):
    """No prediction with that id in the prediction log."""


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def lineage_of_version(model_name: str, version: int, db_url: str | None = None) -> dict[str, Any]:
    """The lineage of a registered version: dataset, features, tracker run, flow runs, code, Hub mirror.

    Raises:
        LookupError: the version is not registered.
    """
    from sqlalchemy import select

    from nfl_mlops.db import Alias, Experiment, ModelVersion, RetrainingJob, Rollout, session_scope
    from nfl_mlops.features.store import find_feature_group, find_training_dataset
    from nfl_mlops.registry.hub import push_status

    with session_scope(db_url) as s:
        mv = s.scalar(
            select(ModelVersion).where(ModelVersion.model_name == model_name, ModelVersion.version == version)
        )
        if mv is None:
            raise LookupError(f"{model_name} has no registered version {version}")
        lin: dict[str, Any] = dict(mv.lineage or {})
        aliases = sorted(
            a.alias
            for a in s.scalars(select(Alias).where(Alias.model_name == model_name, Alias.version == version))
        )
        exp = s.get(Experiment, lin["experiment_id"]) if lin.get("experiment_id") else None
        if exp is None and lin.get("tracker_run_id"):
            exp = s.scalar(select(Experiment).where(Experiment.tracker_run_id == lin["tracker_run_id"]))
        experiment = (
            None
            if exp is None
            else {
                "id": exp.id,
                "name": exp.name,
                "tracker": exp.tracker,
                "tracker_run_id": exp.tracker_run_id,
                "run_dir": exp.run_dir,
                "status": exp.status,
                "created_at": _iso(exp.created_at),
            }
        )
        deployments = [
            {
                "id": r.id,
                "strategy": r.strategy,
                "status": r.status,
                "environment": r.environment,
                "flow_run_id": r.flow_run_id,
                "created_at": _iso(r.created_at),
            }
            for r in s.scalars(
                select(Rollout)
                .where(Rollout.model_name == model_name, Rollout.version == version)
                .order_by(Rollout.created_at)
            )
        ]
        jobs = [
            {"id": j.id, "trigger": j.trigger, "reason": j.reason, "flow_run_id": j.flow_run_id}
            for j in s.scalars(select(RetrainingJob).where(RetrainingJob.model_name == model_name))
            if (j.result or {}).get("version") == version
        ]
        model = {
            "name": mv.model_name,
            "version": mv.version,
            "status": mv.status,
            "path": mv.path,
            "aliases": aliases,
            "created_at": _iso(mv.created_at),
            "base_model": lin.get("base_model"),
            "params": dict(mv.params or {}),
        }

    fg = td = None
    backend = lin.get("feature_store_backend")
    if lin.get("feature_group") and lin.get("feature_group_version") is not None:
        row = find_feature_group(lin["feature_group"], int(lin["feature_group_version"]), backend, db_url)
        fg = (
            row.as_dict()
            if row is not None
            else {"name": lin["feature_group"], "version": lin["feature_group_version"], "backend": backend}
        )
    if lin.get("training_dataset") and lin.get("training_dataset_version") is not None:
        row_td = find_training_dataset(
            lin["training_dataset"], int(lin["training_dataset_version"]), backend, db_url
        )
        td = (
            row_td.as_dict()
            if row_td is not None
            else {"name": lin["training_dataset"], "version": lin["training_dataset_version"]}
        )
    hub = push_status(model_name, version, db_url)
    return {
        "model": model,
        "dataset": {
            "version": lin.get("dataset_version"),
            "dir": lin.get("dataset_dir"),
            "sizes": lin.get("dataset_sizes"),
            "source": lin.get("data_source"),
            "split_seed": lin.get("split_seed"),
        },
        "feature_group": fg,
        "training_dataset": td,
        "experiment": experiment
        or ({"tracker_run_id": lin["tracker_run_id"]} if lin.get("tracker_run_id") else None),
        "wandb_artifacts": lin.get("wandb_artifacts") or [],
        "flow_runs": {
            "training": lin.get("training_flow_run_id"),
            "registration": lin.get("registration_flow_run_id"),
            "hpo": lin.get("hpo_flow_run_id"),
            "deployments": [d["flow_run_id"] for d in deployments if d["flow_run_id"]],
            "retraining": [j["flow_run_id"] for j in jobs if j["flow_run_id"]],
        },
        "hpo": {"study": lin["hpo_study"], "best_trial": lin.get("hpo_best_trial")}
        if lin.get("hpo_study")
        else None,
        "deployments": deployments,
        "retraining_jobs": jobs,
        "hub": hub.as_dict() if hub is not None else None,
        "code": {"git_sha": lin.get("git_sha")},
    }


def lineage_of_prediction(prediction_id: str, db_url: str | None = None) -> dict[str, Any]:
    """From one logged prediction to everything that produced it.

    Returns:
        {"prediction": {...}, "model": {...}, "dataset": {...}, "feature_group": {...} | None,
        "training_dataset": {...} | None, "experiment": {...} | None, "wandb_artifacts": [...],
        "flow_runs": {"training", "registration", "hpo", "deployments", "retraining"}, "hpo",
        "deployments", "retraining_jobs", "hub": {...} | None, "code": {"git_sha"}}; `rollout` in
        "prediction" is the deployment that routed the request.

    Raises:
        PredictionNotFound (a LookupError): no prediction with that id; or the model version it
        names is not in the registry.
    """
    from nfl_mlops.db import Prediction, Rollout, session_scope

    pid = str(prediction_id).strip()
    with session_scope(db_url) as s:
        p = s.get(Prediction, pid) if pid else None
        if p is None:
            raise PredictionNotFound(f"no prediction with id {pid!r} in the prediction log")
        rollout = s.get(Rollout, p.rollout_id) if p.rollout_id else None
        prediction = {
            "id": p.id,
            "request_id": p.request_id,
            "created_at": _iso(p.created_at),
            "model_name": p.model_name,
            "model_version": p.model_version,
            "arm": p.arm,
            "served": p.served,
            "label": p.label,
            "confidence": p.confidence,
            "latency_ms": p.latency_ms,
            "text_hash": p.text_hash,
            "true_label": p.true_label,
            "rollout": None
            if rollout is None
            else {
                "id": rollout.id,
                "strategy": rollout.strategy,
                "status": rollout.status,
                "flow_run_id": rollout.flow_run_id,
            },
        }
        model_name, version = p.model_name, p.model_version
    return {"prediction": prediction, **lineage_of_version(model_name, version, db_url)}
