"""Evaluation tasks: score a model folder and the TF-IDF baseline on named evaluation sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.modeling.baseline import TfidfBaseline
from nfl_mlops.modeling.metrics import evaluate


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(model_dir: Path | str, eval_sets: dict[str, pd.DataFrame]) -> tuple[dict, dict]:
    """Metrics per non-empty set, and the class probabilities (for the reference profile)."""
    from nfl_mlops.modeling.predictor import SentimentModel

    model = SentimentModel.load(model_dir)
    metrics, probas = {}, {}
    for name, frame in eval_sets.items():
        if len(frame):
            proba = model.predict_proba(frame["text"].tolist())
            metrics[name] = evaluate(frame["label"].tolist(), proba).as_dict()
            probas[name] = proba
    get_run_logger().info(
        "model %s: %s", Path(model_dir).name, {k: round(v["macro_f1"], 4) for k, v in metrics.items()}
    )
    return metrics, probas


@task(name="explain-mistakes", cache_policy=NO_CACHE)
def explain_mistakes(
    model_dir: Path | str, test: pd.DataFrame, proba: Any, k: int = 5
) -> tuple[list[str], list[list[Any]]]:
    """Explain the `k` most confident test mistakes (occlusion) and save them beside the weights, so the
    version's model card shows them; returns (columns, rows) for the tracker's table. Never fails the
    training: an explanation is an aid."""
    from nfl_mlops.modeling.explain import explain_test_mistakes

    try:
        explained = explain_test_mistakes(model_dir, test["text"].tolist(), test["label"].tolist(), proba, k)
    except Exception as exc:
        get_run_logger().warning("mistakes not explained: %s: %s", type(exc).__name__, exc)
        return [], []
    return list(explained.columns), [list(r) for r in explained.rows()]


@task(name="baseline", cache_policy=NO_CACHE)
def train_baseline(train: pd.DataFrame, eval_sets: dict[str, pd.DataFrame], seed: int = 42) -> dict:
    """TF-IDF + logistic regression trained on the same rows, scored on the same sets."""
    model = TfidfBaseline(seed=seed).fit(train["text"], train["label"])
    out = {
        name: model.evaluate(f["text"].tolist(), f["label"].tolist()).as_dict()
        for name, f in eval_sets.items()
        if len(f)
    }
    get_run_logger().info("baseline: %s", {k: round(v["macro_f1"], 4) for k, v in out.items()})
    return out
