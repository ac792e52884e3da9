"""Classification metrics computed from labels and class probabilities (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from nfl_mlops import LABEL2ID, LABELS


@dataclass(frozen=True)
class EvalMetrics:
    """Accuracy, macro-F1, per-class F1, confusion matrix (rows true, cols predicted) and ECE."""

    n: int
    accuracy: float
    macro_f1: float
    f1: dict[str, float]
    confusion: list[list[int]]
    ece: float

    def as_dict(self) -> dict:
        return asdict(self)

    def flat(self, prefix: str = "") -> dict[str, float]:
        """Scalar metrics only, for trackers and gates."""
        out = {
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}macro_f1": self.macro_f1,
            f"{prefix}ece": self.ece,
        }
        out.update({f"{prefix}f1_{k}": v for k, v in self.f1.items()})
        return out


def to_ids(labels: Sequence[str] | np.ndarray) -> np.ndarray:
    return np.asarray([LABEL2ID[label] for label in labels], dtype=np.int64)


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE with equal-width bins."""
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(float)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def evaluate(y_true: Sequence[str] | np.ndarray, proba: np.ndarray) -> EvalMetrics:
    """Metrics of predicted class probabilities `proba` (n x 3) against string labels."""
    values = list(y_true)
    y = to_ids(values) if values and isinstance(values[0], str) else np.asarray(values, dtype=np.int64)
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty set")
    pred = proba.argmax(axis=1)
    k = len(LABELS)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    f1 = {}
    for i, name in enumerate(LABELS):
        tp = cm[i, i]
        precision = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        recall = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f1[name] = float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0
    present = [name for i, name in enumerate(LABELS) if cm[i, :].sum() or cm[:, i].sum()]
    macro = float(np.mean([f1[n] for n in present])) if present else 0.0
    return EvalMetrics(
        n=int(len(y)),
        accuracy=float((pred == y).mean()),
        macro_f1=macro,
        f1=f1,
        confusion=cm.tolist(),
        ece=expected_calibration_error(y, proba),
    )
