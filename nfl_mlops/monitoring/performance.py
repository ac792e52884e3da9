"""Model performance on a monitoring window: observed from feedback labels, else estimated without labels.

Observed: accuracy and macro-F1 of the window rows that got a feedback label, with a bootstrap
interval over those rows.

Estimated (in the spirit of NannyML's CBPE, from the logged top-label confidence only):

1. calibrate: an isotonic map confidence -> P(prediction correct), fitted on the version's test set
   (the reference stores each test row's confidence and whether it was correct); the fit is checked
   there (`CalibrationCheck`: expected calibration error before and after, the latter cross-fitted);
2. expected confusion matrix of the window: a row predicted k with calibrated probability p adds p to
   (true k, predicted k) and (1 - p) spread over the other true classes as the test set's errors for
   predicted k were spread;
3. accuracy = mean p; macro-F1 from the expected confusion matrix;
4. interval: a parametric bootstrap that refits step 1-2 on a resampled test set (calibration
   uncertainty) and draws the window's outcomes from the calibrated probabilities (sampling noise).

The estimate is only as good as its assumption: P(correct | confidence) is the same on the window as
on the test set. That holds under covariate shift the model handles, and fails when the model is
confidently wrong on new data (topic drift, changed labelling): then the estimate stays high while
observed metrics fall. The scenario table in bench/README.md shows both cases.

Degradation (pure, `judge`): the metric is more than `PERFORMANCE_MAX_DROP` below the version's test
metric and the upper end of its interval is below the test metric. Observed metrics decide when the
window has at least `MIN_LABELLED` labels; the estimate decides otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nfl_mlops import LABEL2ID, LABELS
from nfl_mlops.monitoring.thresholds import (
    MIN_LABELLED,
    PERFORMANCE_CONFIDENCE,
    PERFORMANCE_MAX_DROP,
    PERFORMANCE_METRIC,
)

METRICS = ("accuracy", "macro_f1")
OBSERVED, ESTIMATED, UNAVAILABLE = "observed", "estimated", "unavailable"
_GRID = 400  # confidence bins of the bootstrap (width 0.0025)


@dataclass(frozen=True)
class MetricValue:
    """A metric with its two-sided interval at `level`."""

    name: str
    value: float
    lower: float
    upper: float
    level: float

    def to_payload(self) -> dict:
        return {"value": _r(self.value), "lower": _r(self.lower), "upper": _r(self.upper), "level": self.level}

    def fmt(self) -> str:
        return f"{self.value:.3f} [{self.lower:.3f}, {self.upper:.3f}]"


@dataclass(frozen=True)
class CalibrationCheck:
    """How well the confidences predict correctness on the version's test set."""

    n: int
    accuracy: float
    mean_confidence: float
    ece_raw: float  # top-label ECE of the raw confidences (10 equal-width bins)
    ece_calibrated: float  # ECE after the isotonic map, cross-fitted (5 folds)

    def to_payload(self) -> dict:
        return {k: _r(v) if isinstance(v, float) else v for k, v in self.__dict__.items()}


class ConfidenceCalibrator:
    """Isotonic map from top-label confidence to P(correct), plus how errors spread per predicted class."""

    def __init__(self, confidence: np.ndarray, predicted: np.ndarray, correct: np.ndarray,
                 true: np.ndarray) -> None:
        from sklearn.isotonic import IsotonicRegression

        self.iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
        self.iso.fit(confidence, correct)
        k = len(LABELS)
        wrong = np.full((k, k), 0.5)  # Laplace-style prior: every other class possible
        np.fill_diagonal(wrong, 0.0)
        miss = correct < 0.5
        np.add.at(wrong, (predicted[miss], true[miss]), 1.0)
        self.error_spread = wrong / wrong.sum(axis=1, keepdims=True)  # [predicted k, true j], j != k

    @classmethod
    def from_reference(cls, frame: pd.DataFrame) -> ConfidenceCalibrator:
        rows = frame[frame["true_label"].notna()]
        return cls(rows["confidence"].to_numpy(float), _ids(rows["predicted_label"]),
                   rows["correct"].to_numpy(float), _ids(rows["true_label"]))

    def p_correct(self, confidence: np.ndarray) -> np.ndarray:
        return self.iso.predict(np.asarray(confidence, dtype=float))

    def expected_confusion(self, predicted: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """Expected confusion counts (rows true, columns predicted) of a set of predictions."""
        k = len(LABELS)
        p = self.p_correct(confidence)
        right = np.bincount(predicted, weights=p, minlength=k)
        wrong = np.bincount(predicted, weights=1.0 - p, minlength=k)
        cm = (wrong[:, None] * self.error_spread).T  # [true j, predicted k]
        cm[np.arange(k), np.arange(k)] = right
        return cm


@dataclass(frozen=True)
class PerformanceResult:
    """Observed and/or estimated performance of a window, compared with the version's test metrics."""

    source: str  # which one the verdict rests on: observed | estimated | unavailable
    metric: str
    reference: dict[str, float]
    observed: dict[str, MetricValue] | None
    estimated: dict[str, MetricValue] | None
    n_window: int
    n_labelled: int
    calibration: CalibrationCheck | None
    reference_estimate: dict[str, float] | None  # the estimator applied to the test set itself (its bias)
    degraded: bool
    drop: float | None
    max_drop: float
    reason: str
    notes: tuple[str, ...] = field(default=())

    @property
    def decisive(self) -> MetricValue | None:
        values = self.observed if self.source == OBSERVED else self.estimated if self.source == ESTIMATED else None
        return values.get(self.metric) if values else None

    def to_payload(self) -> dict:
        decisive = self.decisive
        return {
            "performance_degraded": self.degraded,
            "source": self.source,
            "metric": self.metric,
            "value": _r(decisive.value) if decisive else None,
            "lower": _r(decisive.lower) if decisive else None,
            "upper": _r(decisive.upper) if decisive else None,
            "reference_value": _r(self.reference.get(self.metric)),
            "drop": _r(self.drop),
            "max_drop": self.max_drop,
            "reason": self.reason,
            "n_window": self.n_window,
            "n_labelled": self.n_labelled,
            "observed": {k: v.to_payload() for k, v in (self.observed or {}).items()},
            "estimated": {k: v.to_payload() for k, v in (self.estimated or {}).items()},
            "reference": {k: _r(v) for k, v in self.reference.items()},
            "reference_estimate": {k: _r(v) for k, v in (self.reference_estimate or {}).items()},
            "calibration": self.calibration.to_payload() if self.calibration else None,
            "notes": list(self.notes),
        }

    def to_markdown(self) -> str:
        verdict = "**Performance degraded**" if self.degraded else "Performance holds"
        lines = [f"{verdict}: {self.reason}", "",
                 "| metric | test (reference) | observed (feedback) | estimated (label-free) |",
                 "|---|---:|---:|---:|"]
        for name in METRICS:
            ref = self.reference.get(name)
            obs = (self.observed or {}).get(name)
            est = (self.estimated or {}).get(name)
            lines.append(f"| {name} | {'-' if ref is None else f'{ref:.3f}'} | {obs.fmt() if obs else '-'} "
                         f"| {est.fmt() if est else '-'} |")
        lines += ["", f"Window: {self.n_window} predictions, {self.n_labelled} with feedback labels "
                      f"(observed metrics judged from {MIN_LABELLED}). Intervals: "
                      f"{int(round(100 * PERFORMANCE_CONFIDENCE))} % bootstrap."]
        if self.calibration:
            c = self.calibration
            lines.append(f"Calibration on the test set (n={c.n}): accuracy {c.accuracy:.3f}, mean confidence "
                         f"{c.mean_confidence:.3f}, ECE {c.ece_raw:.3f} raw -> {c.ece_calibrated:.3f} "
                         "isotonic (cross-fitted).")
        if self.reference_estimate:
            lines.append("Estimator on the test set itself: "
                         + ", ".join(f"{k} {v:.3f}" for k, v in self.reference_estimate.items())
                         + " (its bias against the realised test metrics).")
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def observed_metrics(true: Sequence[str], predicted: Sequence[str], level: float = PERFORMANCE_CONFIDENCE,
                     n_boot: int = 500, seed: int = 0) -> dict[str, MetricValue]:
    """Accuracy and macro-F1 of labelled predictions with bootstrap intervals (rows resampled)."""
    t, p = _ids(true), _ids(predicted)
    if len(t) == 0:
        raise ValueError("no labelled rows")
    k = len(LABELS)
    cm = np.zeros((k, k))
    np.add.at(cm, (t, p), 1.0)
    rng = np.random.default_rng(seed)
    boots = rng.multinomial(len(t), (cm / cm.sum()).ravel(), size=n_boot).reshape(n_boot, k, k)
    point = _scores(cm)
    dist = [_scores(b) for b in boots]
    return {name: _interval(name, point[name], [d[name] for d in dist], level) for name in METRICS}


def calibration_check(frame: pd.DataFrame, folds: int = 5, seed: int = 0) -> CalibrationCheck:
    """ECE of the raw confidences on the test set, and of the isotonic map (cross-fitted)."""
    rows = frame[frame["true_label"].notna()].reset_index(drop=True)
    conf, correct = rows["confidence"].to_numpy(float), rows["correct"].to_numpy(float)
    calibrated = np.empty(len(rows))
    order = np.random.default_rng(seed).permutation(len(rows))
    parts = np.array_split(order, min(folds, max(len(rows) // 10, 2)))
    for part in parts:
        train = np.setdiff1d(order, part)
        calibrated[part] = ConfidenceCalibrator.from_reference(rows.iloc[train]).p_correct(conf[part])
    return CalibrationCheck(n=len(rows), accuracy=float(correct.mean()), mean_confidence=float(conf.mean()),
                            ece_raw=_ece(conf, correct), ece_calibrated=_ece(calibrated, correct))


def estimate_metrics(reference: pd.DataFrame, predicted: Sequence[str], confidence: Sequence[float],
                     level: float = PERFORMANCE_CONFIDENCE, n_boot: int = 200, seed: int = 0) -> dict[str, MetricValue]:
    """Label-free accuracy and macro-F1 of a window (CBPE-style), with intervals (see the module docstring)."""
    ref = reference[reference["true_label"].notna()].reset_index(drop=True)
    if len(ref) < 20:
        raise ValueError(f"the reference has {len(ref)} labelled rows; the estimate needs at least 20")
    pred, conf = _ids(predicted), np.asarray(confidence, dtype=float)
    if len(pred) == 0:
        raise ValueError("empty window")
    point = _scores(ConfidenceCalibrator.from_reference(ref).expected_confusion(pred, conf))
    k = len(LABELS)
    # the window on a (predicted class, confidence bin) grid: the bootstrap works on counts, not rows
    bins = np.minimum((conf * _GRID).astype(int), _GRID - 1)
    counts = np.zeros((k, _GRID), dtype=np.int64)
    np.add.at(counts, (pred, bins), 1)
    centres = (np.arange(_GRID) + 0.5) / _GRID
    rng = np.random.default_rng(seed)
    dist = []
    for _ in range(n_boot):
        cal = ConfidenceCalibrator.from_reference(ref.iloc[rng.integers(0, len(ref), len(ref))])
        p = np.clip(cal.p_correct(centres), 0.0, 1.0)
        right = rng.binomial(counts, p[None, :]).sum(axis=1)
        wrong = counts.sum(axis=1) - right
        cm = np.zeros((k, k))
        for c in range(k):
            cm[:, c] = rng.multinomial(wrong[c], cal.error_spread[c])
            cm[c, c] = right[c]
        dist.append(_scores(cm))
    return {name: _interval(name, point[name], [d[name] for d in dist], level) for name in METRICS}


def judge(value: MetricValue, reference: float, max_drop: float = PERFORMANCE_MAX_DROP) -> tuple[bool, float]:
    """(degraded, drop): the drop exceeds `max_drop` and the interval lies wholly below the reference."""
    drop = reference - value.value
    return bool(drop > max_drop and value.upper < reference), float(drop)


def assess_performance(
    reference: pd.DataFrame,
    test_metrics: Mapping[str, Any] | None,
    predicted: Sequence[str],
    confidence: Sequence[float],
    true: Sequence[str | None] | None = None,
    metric: str = PERFORMANCE_METRIC,
    max_drop: float = PERFORMANCE_MAX_DROP,
    min_labelled: int = MIN_LABELLED,
    level: float = PERFORMANCE_CONFIDENCE,
    seed: int = 0,
) -> PerformanceResult:
    """Observed and estimated performance of a window and the degradation verdict.

    Args:
        reference: the reference profile frame (needs `true_label`/`correct` for the estimate).
        test_metrics: the version's registry metrics["test"] (accuracy, macro_f1); None = use the
            reference rows' own correctness.
        predicted, confidence: the window's logged predictions.
        true: the window's feedback labels (None/NaN where none came).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    predicted = list(predicted)
    true = [None] * len(predicted) if true is None else list(true)
    if len(true) != len(predicted):
        raise ValueError(f"{len(predicted)} predictions but {len(true)} feedback entries")
    notes: list[str] = []
    has_ref_labels = "true_label" in reference.columns and reference["true_label"].notna().sum() >= 20
    ref_values = {name: float(test_metrics[name]) for name in METRICS
                  if test_metrics and test_metrics.get(name) is not None}
    if not ref_values and has_ref_labels:
        rows = reference[reference["true_label"].notna()]
        ref_values = {k: v.value for k, v in observed_metrics(rows["true_label"], rows["predicted_label"]).items()}
        notes.append("no registry test metrics: the reference rows' own metrics are the baseline")

    observed = None
    labelled = [i for i, t in enumerate(true) if isinstance(t, str) and t in LABEL2ID]
    if labelled:
        observed = observed_metrics([true[i] for i in labelled], [predicted[i] for i in labelled], level=level,
                                    seed=seed)
    estimated = calibration = reference_estimate = None
    if has_ref_labels and predicted:
        estimated = estimate_metrics(reference, predicted, confidence, level=level, seed=seed)
        calibration = calibration_check(reference, seed=seed)
        cal = ConfidenceCalibrator.from_reference(reference[reference["true_label"].notna()])
        rows = reference[reference["true_label"].notna()]
        reference_estimate = _scores(cal.expected_confusion(_ids(rows["predicted_label"]),
                                                            rows["confidence"].to_numpy(float)))
    elif not has_ref_labels:
        notes.append("the reference profile has no test labels: no label-free estimate")

    if observed and len(labelled) >= min_labelled:
        source, value = OBSERVED, observed[metric]
    elif estimated:
        source, value = ESTIMATED, estimated[metric]
        if observed:
            notes.append(f"only {len(labelled)} feedback labels (< {min_labelled}): the estimate decides")
    else:
        source, value = UNAVAILABLE, None
    if value is None or metric not in ref_values:
        return PerformanceResult(source=UNAVAILABLE if value is None else source, metric=metric,
                                 reference=ref_values, observed=observed, estimated=estimated,
                                 n_window=len(predicted), n_labelled=len(labelled), calibration=calibration,
                                 reference_estimate=reference_estimate, degraded=False, drop=None,
                                 max_drop=max_drop, reason="performance cannot be judged (no labels, no estimate, "
                                                           "or no reference metric)", notes=tuple(notes))
    degraded, drop = judge(value, ref_values[metric], max_drop)
    what = "observed" if source == OBSERVED else "estimated"
    reason = (f"{metric} {what} {value.fmt()} vs {ref_values[metric]:.3f} on the test set "
              f"(drop {drop:+.3f}, limit {max_drop:.3f})")
    return PerformanceResult(source=source, metric=metric, reference=ref_values, observed=observed,
                             estimated=estimated, n_window=len(predicted), n_labelled=len(labelled),
                             calibration=calibration, reference_estimate=reference_estimate, degraded=degraded,
                             drop=drop, max_drop=max_drop, reason=reason, notes=tuple(notes))


def _ids(labels: Sequence[str] | pd.Series) -> np.ndarray:
    return np.asarray([LABEL2ID[str(v)] for v in labels], dtype=np.int64)


def _scores(cm: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (over classes present in truth or predictions) of a confusion matrix."""
    total = cm.sum()
    tp = np.diag(cm)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # 2 TP + FP + FN
    present = denom > 1e-12
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp, dtype=float), where=present)
    return {"accuracy": float(tp.sum() / total) if total else math.nan,
            "macro_f1": float(f1[present].mean()) if present.any() else math.nan}


def _interval(name: str, point: float, values: Sequence[float], level: float) -> MetricValue:
    tail = (1 - level) / 2
    lo, hi = np.quantile(np.asarray(values, dtype=float), [tail, 1 - tail])
    return MetricValue(name=name, value=float(point), lower=float(min(lo, point)), upper=float(max(hi, point)),
                       level=level)


def _ece(prob: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error of `prob` as P(correct) (equal-width bins of `prob`)."""
    bins = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        m = bins == b
        ece += m.mean() * abs(correct[m].mean() - prob[m].mean())
    return float(ece)


def _r(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)
