"""What the registration gate scores: both models on the same rows, and the model's golden set.

The golden set is fixed once per model: the test split of the first version that passes the
gate, saved under MLOPS_HOME/golden/<model>.parquet with that version's score beside it
(<model>.json). Every later candidate is held to that score minus the margin there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nfl_mlops.data.datasets import TrainingData
from nfl_mlops.modeling.metrics import evaluate, to_ids
from nfl_mlops.registry.gate import EvalSet, GoldenFloor, Metric, confusion_batch, metric_from_confusion

GOLDEN_COLUMNS = ["text", "label", "norm"]


def golden_paths(home: Path, model_name: str) -> tuple[Path, Path]:
    folder = Path(home) / "golden"
    return folder / f"{model_name}.parquet", folder / f"{model_name}.json"


@dataclass(frozen=True)
class Golden:
    """A model's golden set and the first version's score on it."""

    rows: pd.DataFrame
    reference_version: int
    metric: str
    reference_score: float
    meta: dict[str, Any] = field(default_factory=dict)


def load_golden(home: Path, model_name: str) -> Golden | None:
    data, meta = golden_paths(home, model_name)
    if not (data.exists() and meta.exists()):
        return None
    info = json.loads(meta.read_text())
    return Golden(
        pd.read_parquet(data),
        int(info["reference_version"]),
        info["metric"],
        float(info["reference_score"]),
        info,
    )


def save_golden(
    home: Path,
    model_name: str,
    rows: pd.DataFrame,
    version: int,
    metric: str,
    score: float,
    dataset_version: str | None = None,
) -> Golden:
    """Write the golden set once; an existing one is kept (and returned) whatever is passed."""
    data, meta = golden_paths(home, model_name)
    existing = load_golden(home, model_name)
    if existing is not None:
        return existing
    data.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "reference_version": version,
        "metric": metric,
        "reference_score": score,
        "n": len(rows),
        "dataset_version": dataset_version,
    }
    tmp = data.with_name(f".{data.name}.{os.getpid()}.tmp")
    rows[GOLDEN_COLUMNS].reset_index(drop=True).to_parquet(tmp, index=False)
    tmp.replace(data)
    tmp_meta = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps(info, indent=2))
    tmp_meta.replace(meta)  # the JSON last: a golden set counts only once both files are there
    return Golden(rows[GOLDEN_COLUMNS].reset_index(drop=True), version, metric, score, info)


def score(y_true: np.ndarray, pred: np.ndarray, metric: Metric) -> float:
    return float(metric_from_confusion(confusion_batch(y_true, pred), metric)[0])


@dataclass
class GateEvidence:
    """Everything the gate decides on, measured by registration itself."""

    sets: list[EvalSet]
    candidate_metrics: dict[str, dict[str, Any]]  # full EvalMetrics per set, measured here
    champion_metrics: dict[str, dict[str, Any]]
    golden: GoldenFloor | None = None
    golden_info: dict[str, Any] = field(default_factory=dict)


class _Scorer:
    """Class probabilities of one model, each distinct text predicted once."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.cache: dict[str, np.ndarray] = {}

    def proba(self, texts: list[str]) -> np.ndarray:
        todo = sorted({t for t in texts if t not in self.cache})
        if todo:
            for t, p in zip(todo, self.model.predict_proba(todo), strict=True):
                self.cache[t] = p
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 3), dtype=np.float32)


def gather_evidence(
    candidate_model: Any,
    champion_model: Any | None,
    data: TrainingData,
    golden: Golden | None,
    metric: Metric,
    load_reference: Callable[[], Any] | None = None,
) -> GateEvidence:
    """Score both models on the dataset's test split and recent window, and the candidate on the golden set.

    Golden rows the candidate trained or tuned on (same normalised text in its train/val splits)
    are left out; when any are (or the recorded score is of another metric), the reference
    version is rescored on the rows kept through `load_reference`, so the floor compares like
    with like. Without it the recorded score is used on the rows kept, or (other metric) the
    floor is skipped and says so.
    """
    cand, champ = _Scorer(candidate_model), _Scorer(champion_model) if champion_model is not None else None
    sets, cand_metrics, champ_metrics = [], {}, {}
    for name in ("test", "recent"):
        frame = getattr(data, name)
        if not len(frame):
            continue
        texts, y = frame["text"].tolist(), to_ids(frame["label"].tolist())
        p_cand = cand.proba(texts)
        cand_metrics[name] = evaluate(y, p_cand).as_dict()
        p_champ = None
        if champ is not None:
            p_champ = champ.proba(texts)
            champ_metrics[name] = evaluate(y, p_champ).as_dict()
        sets.append(
            EvalSet(name, y, p_cand.argmax(axis=1), None if p_champ is None else p_champ.argmax(axis=1))
        )
    floor, info = None, {}
    if golden is not None:
        seen = set(data.train["norm"]) | set(data.val["norm"])
        rows = golden.rows[~golden.rows["norm"].isin(seen)]
        dropped = len(golden.rows) - len(rows)
        info = {
            "n": len(rows),
            "dropped_seen_in_training": dropped,
            "metric": golden.metric,
            "reference_version": golden.reference_version,
            "recorded_score": round(golden.reference_score, 4),
        }
        ref: float | None = golden.reference_score if golden.metric == metric else None
        if not len(rows):  # the gate fails a candidate whose training covers the whole golden set
            floor = GoldenFloor(golden.reference_version, golden.reference_score)
        else:
            texts, y = rows["text"].tolist(), to_ids(rows["label"].tolist())
            p = cand.proba(texts)
            cand_metrics["golden"] = evaluate(y, p).as_dict()
            sets.append(EvalSet("golden", y, p.argmax(axis=1)))
            reference = load_reference() if (dropped or ref is None) and load_reference is not None else None
            if reference is not None:
                ref = score(y, _Scorer(reference).proba(texts).argmax(axis=1), metric)
                info["rescored_on_kept_rows"] = round(ref, 4)
            if ref is None:
                info["skipped"] = f"recorded score is {golden.metric}, gate metric is {metric}"
            else:
                floor = GoldenFloor(golden.reference_version, ref)
    return GateEvidence(sets, cand_metrics, champ_metrics, floor, info)
