"""Hyperparameter search: the search space, Optuna studies, one tracked trial, W&B sweep config.

Optuna is the embedded default: a study in a SQLite file under MLOPS_HOME, in the state PostgreSQL when the
state DB is PostgreSQL (its own schema `optuna`, so trials from several processes, Prefect workers or Dask
workers share one study), or wherever MLOPS_OPTUNA_STORAGE says; each trial fine-tunes on a small slice, is scored on the validation split (never the test split,
which stays for the gate) and is a tracked run (W&B offline + a row in `experiments`). The same
space converts to a W&B sweep configuration for the online option (`wandb sweep`).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from nfl_mlops import LABELS
from nfl_mlops.modeling.params import TrainParams

log = logging.getLogger(__name__)

HPO_TRAIN_SAMPLES = 800
"""Default training rows per trial (a small stratified slice)."""

HPO_EVAL_SAMPLES = 400
"""Default cap on the validation/test rows of the trials' dataset."""


class SearchSpace(BaseModel):
    """Ranges searched for each hyperparameter (the rest come from the base TrainParams)."""

    learning_rate: tuple[float, float] = Field(
        (2e-5, 5e-4), description="Log-uniform range of the peak learning rate."
    )
    batch_size: list[int] = Field([16, 32], description="Batch sizes to choose from.")
    epochs: tuple[float, float] = Field((1.0, 3.0), description="Uniform range of epochs.")
    warmup_ratio: tuple[float, float] = Field((0.0, 0.2), description="Uniform range of the warm-up share.")
    weight_decay: tuple[float, float] = Field((0.0, 0.1), description="Uniform range of the weight decay.")

    @model_validator(mode="after")
    def _ordered(self) -> SearchSpace:
        for name in ("learning_rate", "epochs", "warmup_ratio", "weight_decay"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: low {lo} > high {hi}")
        if self.learning_rate[0] <= 0:
            raise ValueError("learning_rate must be positive")
        if not self.batch_size:
            raise ValueError("batch_size needs at least one choice")
        return self


class HPOParams(BaseModel):
    """How the search runs."""

    n_trials: int = Field(4, ge=1, le=500, description="Trials to run (in this flow run).")
    metric: Literal["macro_f1", "accuracy"] = Field("macro_f1", description="Validation metric to maximise.")
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler.")
    seed: int = Field(42, description="Seed of the sampler.")
    study_name: str | None = Field(None, description="Resume or name the study; default hpo-<flow run id>.")
    timeout_minutes: float | None = Field(None, gt=0, description="Start no new trial after this long.")
    space: SearchSpace = Field(default_factory=SearchSpace)


def suggest_params(trial: Any, space: SearchSpace, base: TrainParams) -> TrainParams:
    """The TrainParams of an Optuna trial: `base` with the searched fields drawn from `space`."""

    def uniform(name: str, bounds: tuple[float, float], log: bool = False) -> float:
        lo, hi = bounds
        return lo if lo == hi else trial.suggest_float(name, lo, hi, log=log)

    return base.model_copy(
        update={
            "learning_rate": uniform("learning_rate", space.learning_rate, log=True),
            "batch_size": int(trial.suggest_categorical("batch_size", list(space.batch_size))),
            "epochs": uniform("epochs", space.epochs),
            "warmup_ratio": uniform("warmup_ratio", space.warmup_ratio),
            "weight_decay": uniform("weight_decay", space.weight_decay),
        }
    )


OPTUNA_SCHEMA = "optuna"
"""The PostgreSQL schema of the studies in the state DB: Optuna's tables (and its own `alembic_version`)
would otherwise meet the state DB's migrations in `public`."""


def study_storage(settings: Any) -> str:
    """Where studies live: MLOPS_OPTUNA_STORAGE when set; else the state DB when it is PostgreSQL (schema
    `optuna`: concurrent trials from several processes or hosts); else the SQLite file under MLOPS_HOME."""
    if settings.optuna_storage is None and settings.db_url.startswith("postgresql"):
        return with_search_path(settings.db_url, OPTUNA_SCHEMA)
    return str(settings.optuna_url)


def with_search_path(url: str, schema: str) -> str:
    """A PostgreSQL URL whose connections use `schema` (libpq `options=-csearch_path=...`)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return u.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


def _search_path(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    options = make_url(url).query.get("options") or ""
    if isinstance(options, tuple):
        options = " ".join(options)
    for part in options.split():
        if part.startswith("-csearch_path="):
            return part.split("=", 1)[1].split(",")[0]
    return None


def _ensure_schema(url: str) -> None:
    """Create the study schema named by the URL's search_path (two workers may race: both succeed)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    schema = _search_path(url)
    if not schema or not url.startswith("postgresql"):
        return
    plain = make_url(url).difference_update_query(["options"])
    engine = create_engine(plain, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            try:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            except DBAPIError:  # created by another worker at the same moment
                if not conn.execute(
                    text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"), {"s": schema}
                ).scalar():
                    raise
    finally:
        engine.dispose()


def worker_id() -> str:
    """hostname:pid of this process: which worker ran a trial (a trial's user attribute `worker`)."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def split_trials(n_trials: int, workers: int) -> list[int]:
    """Trials per worker: `n_trials` shared as evenly as possible; a worker with none is not started."""
    workers = max(1, workers)
    return [n for i in range(workers) if (n := n_trials // workers + (i < n_trials % workers))]


def optuna_storage_url(url: str) -> str:
    """SQLAlchemy URL for Optuna (PostgreSQL through psycopg 3, which this project installs)."""
    return (
        url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url
    )


def open_study(
    name: str, storage_url: str, sampler: str = "tpe", seed: int | None = 42, worker: int = 0
) -> Any:
    """Create or resume an Optuna study that maximises the validation metric.

    The sampler's seed is offset by the number of trials already in the study, so a resumed study
    does not draw the same configurations again, and by the `worker` index, so workers that open the
    study at the same moment do not draw the same ones either.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage_url.startswith("sqlite:///"):
        Path(storage_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    _ensure_schema(storage_url)
    storage = optuna.storages.RDBStorage(
        optuna_storage_url(storage_url), engine_kwargs={"pool_pre_ping": True}
    )
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    offset = len(study.trials)
    seed_ = None if seed is None else seed + offset + 7919 * worker
    study.sampler = (
        optuna.samplers.RandomSampler(seed=seed_)
        if sampler == "random"
        else optuna.samplers.TPESampler(seed=seed_)
    )
    return study


def best_train_params(study: Any, base: TrainParams) -> tuple[int, float, TrainParams]:
    """(number, value, TrainParams) of the study's best completed trial."""
    best = study.best_trial  # raises ValueError when no trial completed
    params = best.user_attrs.get("train_params")
    return (
        best.number,
        float(best.value),
        TrainParams(**params) if params else base.model_copy(update=best.params),
    )


TrialRunner = Callable[[int, TrainParams], dict[str, Any]]
"""Runs trial `number` with these parameters; returns at least `value` (None when the trial failed)."""


def run_search(
    study: Any,
    space: SearchSpace,
    base: TrainParams,
    n_trials: int,
    run: TrialRunner,
    timeout_minutes: float | None = None,
    user_attrs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Optuna's ask-and-tell loop: suggest, run (a tracked trial), tell; stops early at `timeout_minutes`.

    A trial whose `value` is None is told as FAIL, so the study never picks it. `user_attrs` (e.g. the
    worker) are set on every trial; each result carries them too.
    """
    import optuna

    started, results = time.monotonic(), list[dict[str, Any]]()
    for _ in range(n_trials):
        if timeout_minutes is not None and time.monotonic() - started > timeout_minutes * 60:
            log.info("timeout reached after %d trials", len(results))
            break
        trial = study.ask()
        params = suggest_params(trial, space, base)
        trial.set_user_attr("train_params", params.model_dump())
        for key, value in (user_attrs or {}).items():
            trial.set_user_attr(key, value)
        result = {**run(trial.number, params), **(user_attrs or {})}
        for key in ("experiment_id", "tracker_run_id"):
            trial.set_user_attr(key, result.get(key))
        if result.get("value") is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, result["value"])
        results.append(result)
    return results


def search_summary(
    study_name: str, metric: str, trials: list[dict[str, Any]], number: int, value: float, best: TrainParams
) -> dict[str, Any]:
    """What the HPO flow returns: the trials (scores, tracked runs, errors) and the best configuration."""
    return {
        "study": study_name,
        "metric": f"val/{metric}",
        "trials": [
            {
                k: t.get(k)
                for k in ("number", "value", "params", "experiment_id", "tracker_run_id", "error", "worker")
            }
            for t in trials
        ],
        "best": {"number": number, "value": value, "params": best.model_dump()},
    }


def run_trial(
    train_texts: list[str],
    train_labels: list[str],
    val_texts: list[str],
    val_labels: list[str],
    params: TrainParams,
    base_model: str,
    work_dir: Path,
    tracker: Any = None,
    metric: str = "macro_f1",
    keep_model: bool = False,
) -> dict[str, Any]:
    """Fine-tune with `params` (the checkpoint chosen on the validation rows, as the training flow does),
    score on the validation rows; the model folder is removed unless kept.

    Returns:
        {"value": validation metric, "metrics": flat validation metrics, "seconds", "steps", "final_loss"}.
    """
    from nfl_mlops.modeling.metrics import evaluate
    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.modeling.train import fine_tune

    started = time.perf_counter()

    def on_log(step: int, values: dict[str, float]) -> None:
        if tracker is not None:
            tracker.log(values, step=step)

    try:
        result = fine_tune(
            train_texts,
            train_labels,
            params,
            work_dir,
            base_model=base_model,
            on_log=on_log,
            val_texts=val_texts,
            val_labels=val_labels,
        )
        model = SentimentModel.load(work_dir)
        m = evaluate(val_labels, model.predict_proba(val_texts))
    finally:
        if not keep_model:
            shutil.rmtree(work_dir, ignore_errors=True)
    flat = {f"val/{k}": v for k, v in m.flat().items()}
    value = float(getattr(m, metric))
    if not math.isfinite(value):
        raise ValueError(f"validation {metric} is not finite: {value}")
    return {
        "value": value,
        "metrics": flat,
        "seconds": round(time.perf_counter() - started, 2),
        "steps": result.steps,
        "final_loss": result.final_loss,
        "n_val": m.n,
        "labels": list(LABELS),
    }


def tracked_trial(
    dataset: Any,
    params: TrainParams,
    base_model: str,
    work_dir: Path,
    name: str,
    config: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    group: str | None = None,
    metric: str = "macro_f1",
    logger: Any = None,
) -> dict[str, Any]:
    """One trial as its own tracked run (W&B + a row in `experiments`): fine-tune on `dataset.train`, score
    on `dataset.val` (`run_trial`). A trial that crashes is a failed trial, not a failed search: its run
    ends `failed` and the result has value None and the error. The HPO flow's task and the CLI's W&B
    sweep trial both call this.
    """
    from nfl_mlops.tracking.experiments import ExperimentTracker

    logger = logger or log
    tracker = ExperimentTracker()
    tracker.start(
        name,
        config={
            "train": {**params.model_dump(), "base_model": base_model},
            "dataset_version": dataset.version,
            "sizes": dataset.sizes,
            "metric": f"val/{metric}",
            **(config or {}),
        },
        tags=tags or ["hpo"],
        job_type="hpo-trial",
        group=group,
    )
    out: dict[str, Any] = {
        "experiment_id": tracker.experiment_id,
        "tracker_run_id": tracker.tracker_run_id,
        "params": params.model_dump(),
    }
    try:
        texts, labels, _ = dataset.fit_rows(params.feedback_repeat, params.feedback_max_share)
        result = run_trial(
            texts,
            labels,
            dataset.val["text"].tolist(),
            dataset.val["label"].tolist(),
            params,
            base_model,
            work_dir,
            tracker=tracker,
            metric=metric,
        )
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        logger.warning("trial %s failed: %s", name, error)
        tracker.finish({"error": error[:500]}, status="failed")
        return {**out, "value": None, "error": error}
    tracker.finish({**result["metrics"], "train_seconds": result["seconds"], "objective": result["value"]})
    logger.info(
        "trial %s: val %s %.4f (lr %.2e, bs %d, epochs %.2f) in %.0fs",
        name,
        metric,
        result["value"],
        params.learning_rate,
        params.batch_size,
        params.epochs,
        result["seconds"],
    )
    return {**out, **result}


def wandb_sweep_config(search: HPOParams, project: str | None = None) -> dict[str, Any]:
    """The same search as a W&B sweep (the online option): `wandb sweep` this, then `wandb agent`.

    Each agent run executes `nfl-mlops hpo --sweep-trial '<params json>'`, which trains and scores
    one configuration and logs to the sweep's run.
    """
    s = search.space
    cfg: dict[str, Any] = {
        "method": "bayes" if search.sampler == "tpe" else "random",
        "metric": {"name": f"val/{search.metric}", "goal": "maximize"},
        "parameters": {
            "learning_rate": {
                "distribution": "log_uniform_values",
                "min": s.learning_rate[0],
                "max": s.learning_rate[1],
            },
            "batch_size": {"values": list(s.batch_size)},
            "epochs": {"distribution": "uniform", "min": s.epochs[0], "max": s.epochs[1]},
            "warmup_ratio": {"distribution": "uniform", "min": s.warmup_ratio[0], "max": s.warmup_ratio[1]},
            "weight_decay": {"distribution": "uniform", "min": s.weight_decay[0], "max": s.weight_decay[1]},
        },
        "run_cap": search.n_trials,
        "command": ["${env}", "nfl-mlops", "hpo", "--sweep-trial", "${args_json}"],
    }
    if project:
        cfg["project"] = project
    return cfg
