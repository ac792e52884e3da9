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

Degradation (pure, `judge`): a metric (any of `PERFORMANCE_METRICS`) is more than
`PERFORMANCE_MAX_DROP` below its baseline and the drop is real: the baseline is itself a metric of a few
hundred test rows, so its bootstrap noise and the window's are combined into an interval of the
difference (two independent bootstrap distributions), which must lie wholly above 0. Observed metrics decide when the window has at
least `MIN_LABELLED` labels, against the version's test metrics (registry `metrics["test"]`). The
estimate decides otherwise, against the same estimator applied to the test set, so that the
estimator's own bias (reported as `reference_estimate`) cancels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from nfl_mlops import LABEL2ID, LABELS
from nfl_mlops.monitoring.thresholds import (
    MIN_LABELLED,
    PERFORMANCE_CONFIDENCE,
    PERFORMANCE_JUDGE_LEVEL,
    PERFORMANCE_MAX_DROP,
    PERFORMANCE_METRICS,
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
    samples: tuple[float, ...] = field(default=(), repr=False, compare=False)  # the bootstrap distribution

    def to_payload(self) -> dict:
        return {
            "value": _r(self.value),
            "lower": _r(self.lower),
            "upper": _r(self.upper),
            "level": self.level,
        }

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
    """Isotonic maps from top-label confidence to P(correct), plus how errors spread per predicted class.

    One map per predicted class when the test set holds at least `min_class_rows` predictions of that
    class with both right and wrong ones (models are calibrated differently per class: pooling them
    biased the macro-F1 estimate by -0.07 on an airline model), else the pooled map.
    """

    def __init__(
        self,
        confidence: np.ndarray,
        predicted: np.ndarray,
        correct: np.ndarray,
        true: np.ndarray,
        min_class_rows: int = 30,
    ) -> None:
        k = len(LABELS)
        self.pooled = _isotonic(confidence, correct)
        self.per_class = []
        for c in range(k):
            m = predicted == c
            ok = m.sum() >= min_class_rows and 0 < correct[m].sum() < m.sum()
            self.per_class.append(_isotonic(confidence[m], correct[m]) if ok else self.pooled)
        wrong = np.full((k, k), 0.5)  # Laplace-style prior: every other class possible
        np.fill_diagonal(wrong, 0.0)
        miss = correct < 0.5
        np.add.at(wrong, (predicted[miss], true[miss]), 1.0)
        self.error_spread = wrong / wrong.sum(axis=1, keepdims=True)  # [predicted k, true j], j != k

    @classmethod
    def from_reference(cls, frame: pd.DataFrame) -> ConfidenceCalibrator:
        rows = frame[frame["true_label"].notna()]
        return cls(
            rows["confidence"].to_numpy(float),
            _ids(rows["predicted_label"]),
            rows["correct"].to_numpy(float),
            _ids(rows["true_label"]),
        )

    def p_correct(self, confidence: np.ndarray, predicted: np.ndarray | int | None = None) -> np.ndarray:
        """P(correct) of predictions with these confidences (and predicted classes; None = pooled map)."""
        conf = np.asarray(confidence, dtype=float)
        if predicted is None:
            return self.pooled.predict(conf)
        if np.isscalar(predicted):
            return self.per_class[int(cast(int, predicted))].predict(conf)
        out = np.empty(len(conf))
        for c, iso in enumerate(self.per_class):
            m = cast(np.ndarray, predicted == c)
            if m.any():
                out[m] = iso.predict(conf[m])
        return out

    def expected_confusion(self, predicted: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """Expected confusion counts (rows true, columns predicted) of a set of predictions."""
        k = len(LABELS)
        p = self.p_correct(confidence, predicted)
        right = np.bincount(predicted, weights=p, minlength=k)
        wrong = np.bincount(predicted, weights=1.0 - p, minlength=k)
        cm = (wrong[:, None] * self.error_spread).T  # [true j, predicted k]
        cm[np.arange(k), np.arange(k)] = right
        return cm


class _Isotonic:
    """A non-decreasing step map fitted by pool-adjacent-violators, evaluated by linear interpolation.

    What sklearn's `IsotonicRegression(out_of_bounds="clip")` computes, without its per-call validation
    overhead (the bootstrap fits it hundreds of times).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        from sklearn.isotonic import isotonic_regression

        xs, inverse, counts = np.unique(np.asarray(x, dtype=float), return_inverse=True, return_counts=True)
        means = np.bincount(inverse, weights=np.asarray(y, dtype=float), minlength=len(xs)) / counts
        self.x = xs
        self.y = (
            isotonic_regression(
                means, sample_weight=counts.astype(float), y_min=0.0, y_max=1.0, increasing=True
            )
            if len(xs)
            else np.zeros(0)
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if len(self.x) == 0:
            return np.full(len(x), np.nan)
        return np.interp(x, self.x, self.y)  # clips to the end values outside the fitted range


def _isotonic(x: np.ndarray, y: np.ndarray) -> _Isotonic:
    return _Isotonic(x, y)


@dataclass(frozen=True)
class PerformanceResult:
    """Observed and/or estimated performance of a window, compared with the version's test metrics.

    `source` says which values the verdict rests on (observed | estimated | unavailable); `baselines`
    what each judged metric was compared with; `drops` baseline - value per judged metric; `metric`
    the headline metric (the degraded one with the largest drop, else the first judged).
    """

    source: str
    metric: str
    reference: dict[str, float]  # the version's test metrics (registry metrics["test"])
    observed: dict[str, MetricValue] | None
    estimated: dict[str, MetricValue] | None
    n_window: int
    n_labelled: int
    calibration: CalibrationCheck | None
    reference_estimate: dict[str, float] | None  # the estimator applied to the test set itself (its bias)
    degraded: bool
    degraded_metrics: tuple[str, ...]
    drops: dict[str, float]
    baselines: dict[str, float]
    max_drop: float
    reason: str
    notes: tuple[str, ...] = field(default=())

    @property
    def decisive(self) -> MetricValue | None:
        values = (
            self.observed if self.source == OBSERVED else self.estimated if self.source == ESTIMATED else None
        )
        return values.get(self.metric) if values else None

    @property
    def drop(self) -> float | None:
        return self.drops.get(self.metric)

    def to_payload(self) -> dict:
        decisive = self.decisive
        return {
            "performance_degraded": self.degraded,
            "source": self.source,
            "metric": self.metric,
            "degraded_metrics": list(self.degraded_metrics),
            "value": _r(decisive.value) if decisive else None,
            "lower": _r(decisive.lower) if decisive else None,
            "upper": _r(decisive.upper) if decisive else None,
            "reference_value": _r(self.reference.get(self.metric)),
            "baseline": _r(self.baselines.get(self.metric)),
            "drop": _r(self.drop),
            "drops": {k: _r(v) for k, v in self.drops.items()},
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
        lines = [
            f"{verdict} ({self.source}): {self.reason}",
            "",
            "| metric | test | observed (feedback) | estimated (label-free) | estimator on test | drop | judged on |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name in METRICS:
            ref = self.reference.get(name)
            obs = (self.observed or {}).get(name)
            est = (self.estimated or {}).get(name)
            ref_est = (self.reference_estimate or {}).get(name)
            drop = self.drops.get(name)
            lines.append(
                f"| {name} | {_f(ref)} | {obs.fmt() if obs else '-'} | {est.fmt() if est else '-'} "
                f"| {_f(ref_est)} | {'-' if drop is None else f'{drop:+.3f}'} "
                f"| {'**degraded**' if name in self.degraded_metrics else self.source if drop is not None else '-'} |"
            )
        lines += [
            "",
            f"Window: {self.n_window} predictions, {self.n_labelled} with feedback labels "
            f"(observed metrics decide from {MIN_LABELLED}). Intervals: "
            f"{int(round(100 * PERFORMANCE_CONFIDENCE))} % bootstrap. Degraded: drop > {self.max_drop:.2f} "
            "and the interval of baseline - window (both bootstrapped) wholly above 0 (the test metric for observed values, the "
            "estimator on the test set for estimates).",
        ]
        if self.calibration:
            c = self.calibration
            lines.append(
                f"Calibration on the test set (n={c.n}): accuracy {c.accuracy:.3f}, mean confidence "
                f"{c.mean_confidence:.3f}, ECE {c.ece_raw:.3f} raw -> {c.ece_calibrated:.3f} "
                "isotonic (cross-fitted)."
            )
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def observed_metrics(
    true: Sequence[str],
    predicted: Sequence[str],
    level: float = PERFORMANCE_CONFIDENCE,
    n_boot: int = 500,
    seed: int = 0,
) -> dict[str, MetricValue]:
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
        calibrated[part] = ConfidenceCalibrator.from_reference(rows.iloc[train]).p_correct(
            conf[part], _ids(rows["predicted_label"].iloc[part])
        )
    return CalibrationCheck(
        n=len(rows),
        accuracy=float(correct.mean()),
        mean_confidence=float(conf.mean()),
        ece_raw=_ece(conf, correct),
        ece_calibrated=_ece(calibrated, correct),
    )


def estimate_metrics(
    reference: pd.DataFrame,
    predicted: Sequence[str],
    confidence: Sequence[float],
    level: float = PERFORMANCE_CONFIDENCE,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, MetricValue]:
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
    r_conf, r_pred = ref["confidence"].to_numpy(float), _ids(ref["predicted_label"])
    r_correct, r_true = ref["correct"].to_numpy(float), _ids(ref["true_label"])
    dist = []
    for _ in range(n_boot):
        i = rng.integers(0, len(ref), len(ref))
        cal = ConfidenceCalibrator(r_conf[i], r_pred[i], r_correct[i], r_true[i])
        p = np.clip(np.stack([cal.p_correct(centres, c) for c in range(k)]), 0.0, 1.0)
        right = rng.binomial(counts, p).sum(axis=1)
        wrong = counts.sum(axis=1) - right
        cm = np.zeros((k, k))
        for c in range(k):
            cm[:, c] = rng.multinomial(wrong[c], cal.error_spread[c])
            cm[c, c] = right[c]
        dist.append(_scores(cm))
    return {name: _interval(name, point[name], [d[name] for d in dist], level) for name in METRICS}


def judge(
    value: MetricValue,
    reference: float,
    max_drop: float = PERFORMANCE_MAX_DROP,
    reference_noise: Sequence[float] | np.ndarray | None = None,
    seed: int = 0,
    level: float | None = None,
) -> tuple[bool, float]:
    """(degraded, drop): the drop exceeds `max_drop` and is real.

    Real means, with `reference_noise` (the baseline's own bootstrap deviations, e.g. of the test metric
    over its few hundred rows) and the window's bootstrap samples: the two-sided interval at the window
    value's level of the difference baseline - window (two independent bootstrap distributions) lies
    wholly above 0. Without them: the window's interval lies wholly below the baseline taken as exact.
    """
    drop = reference - value.value
    if reference_noise is not None and len(reference_noise) and value.samples:
        window = np.asarray(value.samples, dtype=float)
        noise = np.asarray(reference_noise, dtype=float)
        n = max(len(window), len(noise))
        rng = np.random.default_rng(seed)
        diff = (reference + rng.choice(noise, n)) - rng.choice(window, n)
        lower = float(np.quantile(diff, (1 - (level or value.level)) / 2))
        return bool(drop > max_drop and lower > 0), float(drop)
    return bool(drop > max_drop and value.upper < reference), float(drop)


def judge_reported(
    reported: Mapping[str, Any],
    reference: Mapping[str, float | None],
    max_drop: float = PERFORMANCE_MAX_DROP,
    max_error_rate: float | None = None,
) -> list[str]:
    """Why performance measured elsewhere (point values: `accuracy`, `f1_score`, `error_rate`) counts as
    degraded against the registered `reference`; empty when it does not. The same rule as `judge` for a
    value without an interval: a drop of more than `max_drop`.
    """
    reasons = []
    for name in ("accuracy", "f1_score"):
        now, ref = reported.get(name), reference.get(name)
        if now is not None and ref is not None and ref - now > max_drop:
            reasons.append(
                f"{name} {now:.3f} is {ref - now:.3f} below the registered {ref:.3f} "
                f"(allowed drop {max_drop:.3f})"
            )
    error_rate = reported.get("error_rate")
    if error_rate is not None and max_error_rate is not None and error_rate > max_error_rate:
        reasons.append(f"error rate {error_rate:.3f} is above {max_error_rate:.3f}")
    return reasons


def baseline_noise(
    reference: pd.DataFrame, level: float = PERFORMANCE_CONFIDENCE, n_boot: int = 500, seed: int = 0
) -> dict[str, np.ndarray] | None:
    """Bootstrap deviations of the test metrics over the reference's labelled test rows (None without them)."""
    if "true_label" not in reference.columns:
        return None
    rows = reference[reference["true_label"].notna()]
    if len(rows) < 20:
        return None
    boot = observed_metrics(
        rows["true_label"], rows["predicted_label"], level=level, n_boot=n_boot, seed=seed + 1
    )
    return {m: np.asarray(v.samples) - v.value for m, v in boot.items()}


def assess_performance(
    reference: pd.DataFrame,
    test_metrics: Mapping[str, Any] | None,
    predicted: Sequence[str],
    confidence: Sequence[float],
    true: Sequence[str | None] | None = None,
    metrics: Sequence[str] = PERFORMANCE_METRICS,
    max_drop: float = PERFORMANCE_MAX_DROP,
    min_labelled: int = MIN_LABELLED,
    level: float = PERFORMANCE_CONFIDENCE,
    seed: int = 0,
    judge_level: float = PERFORMANCE_JUDGE_LEVEL,
) -> PerformanceResult:
    """Observed and estimated performance of a window and the degradation verdict.

    Args:
        reference: the reference profile frame (needs `true_label`/`correct` for the estimate).
        test_metrics: the version's registry metrics["test"] (accuracy, macro_f1); None = the
            reference rows' own metrics.
        predicted, confidence: the window's logged predictions.
        true: the window's feedback labels (None/NaN where none came).
        metrics: the metrics judged; degraded when any of them is (see `judge`).
    """
    metrics = tuple(metrics)
    if not metrics or any(m not in METRICS for m in metrics):
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}, got {metrics!r}")
    predicted = list(predicted)
    true = [None] * len(predicted) if true is None else list(true)
    if len(true) != len(predicted):
        raise ValueError(f"{len(predicted)} predictions but {len(true)} feedback entries")
    notes: list[str] = []
    ref_rows = (
        reference[reference["true_label"].notna()]
        if "true_label" in reference.columns
        else reference.iloc[0:0]
    )
    has_ref_labels = len(ref_rows) >= 20
    ref_values = {
        name: float(test_metrics[name])
        for name in METRICS
        if test_metrics and test_metrics.get(name) is not None
    }
    if not ref_values and has_ref_labels:
        ref_values = {
            k: v.value
            for k, v in observed_metrics(ref_rows["true_label"], ref_rows["predicted_label"]).items()
        }
        notes.append("no registry test metrics: the reference rows' own metrics are the baseline")

    observed = None
    labelled = [i for i, t in enumerate(true) if isinstance(t, str) and t in LABEL2ID]
    if labelled:
        observed = observed_metrics(
            [cast(str, true[i]) for i in labelled], [predicted[i] for i in labelled], level=level, seed=seed
        )
    estimated = calibration = reference_estimate = None
    if has_ref_labels and predicted:
        estimated = estimate_metrics(reference, predicted, confidence, level=level, seed=seed)
        calibration = calibration_check(reference, seed=seed)
        cal = ConfidenceCalibrator.from_reference(ref_rows)
        reference_estimate = _scores(
            cal.expected_confusion(_ids(ref_rows["predicted_label"]), ref_rows["confidence"].to_numpy(float))
        )
    elif not has_ref_labels:
        notes.append("the reference profile has no test labels: no label-free estimate")

    if observed and len(labelled) >= min_labelled:
        source, values, baselines = OBSERVED, observed, ref_values
    elif estimated:
        # the estimator's own bias cancels in the difference with its value on the test set
        source, values, baselines = ESTIMATED, estimated, reference_estimate or {}
        if observed:
            notes.append(f"only {len(labelled)} feedback labels (< {min_labelled}): the estimate decides")
    else:
        source, values, baselines = UNAVAILABLE, {}, {}
    judged = [
        m for m in metrics if m in values and baselines.get(m) is not None and math.isfinite(baselines[m])
    ]
    common: dict[str, Any] = dict(
        reference=ref_values,
        observed=observed,
        estimated=estimated,
        n_window=len(predicted),
        n_labelled=len(labelled),
        calibration=calibration,
        reference_estimate=reference_estimate,
        max_drop=max_drop,
    )
    if not judged:
        return PerformanceResult(
            source=UNAVAILABLE,
            metric=metrics[0],
            degraded=False,
            degraded_metrics=(),
            drops={},
            baselines={},
            notes=tuple(notes),
            reason="cannot be judged (no feedback labels, no estimate, or no test metrics)",
            **common,
        )
    noise = baseline_noise(reference, level=level, seed=seed) or {}
    verdicts = {
        m: judge(values[m], baselines[m], max_drop, noise.get(m), seed=seed, level=judge_level)
        for m in judged
    }
    drops = {m: v[1] for m, v in verdicts.items()}
    degraded = tuple(m for m in judged if verdicts[m][0])
    headline = max(degraded, key=lambda m: drops[m]) if degraded else judged[-1]
    against = "on the test set" if source == OBSERVED else "estimated the same way on the test set"
    reason = "; ".join(
        f"{m} {source} {values[m].fmt()} vs {baselines[m]:.3f} {against} (drop {drops[m]:+.3f})"
        for m in (degraded or judged)
    )
    if source == OBSERVED:
        reason += f"; {len(labelled)} labelled predictions"
    return PerformanceResult(
        source=source,
        metric=headline,
        degraded=bool(degraded),
        degraded_metrics=degraded,
        drops=drops,
        baselines={m: baselines[m] for m in judged},
        reason=reason,
        notes=tuple(notes),
        **common,
    )


def _ids(labels: Sequence[str] | pd.Series) -> np.ndarray:
    return np.asarray([LABEL2ID[str(v)] for v in labels], dtype=np.int64)


def _scores(cm: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (over classes present in truth or predictions) of a confusion matrix."""
    total = cm.sum()
    tp = np.diag(cm)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # 2 TP + FP + FN
    present = denom > 1e-12
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp, dtype=float), where=present)
    return {
        "accuracy": float(tp.sum() / total) if total else math.nan,
        "macro_f1": float(f1[present].mean()) if present.any() else math.nan,
    }


def _interval(name: str, point: float, values: Sequence[float] | np.ndarray, level: float) -> MetricValue:
    tail = (1 - level) / 2
    values = np.asarray(values, dtype=float)
    lo, hi = np.quantile(values, [tail, 1 - tail])
    return MetricValue(
        name=name,
        value=float(point),
        lower=float(min(lo, point)),
        upper=float(max(hi, point)),
        level=level,
        samples=tuple(float(v) for v in values),
    )


def _ece(prob: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error of `prob` as P(correct) (equal-width bins of `prob`)."""
    bins = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        m = bins == b
        ece += m.mean() * abs(correct[m].mean() - prob[m].mean())
    return float(ece)


def _f(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _r(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)
