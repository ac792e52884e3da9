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

Estimated, second method (ATC, Garg et al., ICLR 2022), `ThresholdedConfidence`: per predicted class, a
confidence threshold fitted on the test set so that the share of its predictions above it equals its
precision there; on the window, the share above the threshold is the estimated precision, and the test
set's error spread gives the expected confusion matrix and macro-F1. The window's label mix is
re-estimated by EM on the calibrated posteriors (Saerens et al. 2002, `reestimate_prior`) and reported;
adjusting the estimates for it (`prior_shift`) is measured in the bench but off by default (it helped
under a pure label shift and hurt more on topic subpopulations). Both methods are computed and
reported; `PERFORMANCE_ESTIMATOR`'s value decides, with an interval over both bootstraps (`combined`).
Neither is trustworthy on a window that shares nothing with the test set: when the domain classifier of
the embedding-drift signal separates them almost perfectly (`ESTIMATE_MAX_SEPARABILITY`), the estimate is
marked untrusted and cannot call degradation alone (`estimate_trust`): label the queue instead.

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
CBPE, ATC = "cbpe", "atc"
ESTIMATORS = (CBPE, ATC)
PERFORMANCE_ESTIMATOR = ATC
"""The label-free estimate whose value decides degradation when feedback labels are too few (its interval
spans both estimators' bootstraps, `combined`); the other is reported beside it. ATC had the smaller
error on the corpus's shift scenarios (bench/README.md, label-free estimates)."""
ESTIMATE_MAX_SEPARABILITY = 0.95
"""The estimate is not trusted when a domain classifier tells window from reference with ROC AUC at or above
this (the monitor's embedding-drift AUC): no label-free method transfers what it learnt on the reference to
data that share nothing with it, so the estimate alone does not decide degradation (drift still alarms)."""
UNTRUSTED_REASON = "windows are almost perfectly separable; label the queue"
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
        self.error_spread = error_spread(predicted, correct, true)  # [predicted k, true j], j != k

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

    def posteriors(self, predicted: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """P(true class | predicted class, confidence) per row (n x classes), under the reference's label mix.

        What the log allows: the calibrated P(correct) on the predicted class, the rest spread as the
        reference's errors of that predicted class were.
        """
        predicted = np.asarray(predicted, dtype=np.int64)
        p = np.clip(self.p_correct(confidence, predicted), 0.0, 1.0)
        post = (1.0 - p)[:, None] * self.error_spread[predicted]
        post[np.arange(len(predicted)), predicted] = p
        return post


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


def error_spread(predicted: np.ndarray, correct: np.ndarray, true: np.ndarray) -> np.ndarray:
    """How the reference's errors of each predicted class spread over the true classes ([predicted, true]).

    Laplace-style: every other class gets half a count, so a class never seen as an error stays possible.
    """
    k = len(LABELS)
    wrong = np.full((k, k), 0.5)
    np.fill_diagonal(wrong, 0.0)
    miss = np.asarray(correct) < 0.5
    np.add.at(wrong, (np.asarray(predicted)[miss], np.asarray(true)[miss]), 1.0)
    return wrong / wrong.sum(axis=1, keepdims=True)


def fit_atc_threshold(scores: np.ndarray, correct: np.ndarray) -> float:
    """ATC's threshold (Garg et al., ICLR 2022): the share of reference scores above it equals the reference accuracy.

    The accuracy of a new window is then estimated as the share of its scores above the threshold.
    """
    s = np.sort(np.asarray(scores, dtype=float))
    if len(s) == 0:
        raise ValueError("no reference scores")
    n = len(s)
    m = int(round(float(np.mean(correct)) * n))  # how many reference rows must lie above
    if m >= n:
        return float(np.nextafter(s[0], -np.inf))
    if m <= 0:
        return float(s[-1])
    return float((s[n - m - 1] + s[n - m]) / 2)


class ThresholdedConfidence:
    """Average Thresholded Confidence (ATC) on the logged top-label confidence, one threshold per predicted class.

    Why a threshold instead of a calibration map: the map says how often a prediction of confidence c
    was right on the reference, which shifts with the data; ATC only assumes that the share of
    confident predictions moves with accuracy, which held better under natural shift (Garg et al.;
    bench/README.md, label-free estimates). Per predicted class, the threshold matches that class's
    reference precision (the share above it estimates the class's precision on the window), so the
    estimated confusion matrix gives macro-F1 too; a class with fewer than `min_class_rows` reference
    predictions, or none right or none wrong, uses the pooled threshold. Only the top-label confidence
    is logged, so the score is the maximum confidence (ATC-MC), not the negative entropy.
    """

    def __init__(
        self,
        confidence: np.ndarray,
        predicted: np.ndarray,
        correct: np.ndarray,
        true: np.ndarray,
        min_class_rows: int = 30,
    ) -> None:
        self.threshold = fit_atc_threshold(confidence, correct)
        self.per_class = []
        for c in range(len(LABELS)):
            m = predicted == c
            ok = m.sum() >= min_class_rows and 0 < correct[m].sum() < m.sum()
            self.per_class.append(fit_atc_threshold(confidence[m], correct[m]) if ok else self.threshold)
        self.error_spread = error_spread(predicted, correct, true)

    @classmethod
    def from_reference(cls, frame: pd.DataFrame) -> ThresholdedConfidence:
        rows = frame[frame["true_label"].notna()]
        return cls(
            rows["confidence"].to_numpy(float),
            _ids(rows["predicted_label"]),
            rows["correct"].to_numpy(float),
            _ids(rows["true_label"]),
        )

    def precision(self, predicted: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """Estimated precision per predicted class: the share of its predictions above its threshold."""
        k = len(LABELS)
        n = np.bincount(predicted, minlength=k).astype(float)
        above = np.bincount(
            predicted, weights=confidence > np.asarray(self.per_class)[predicted], minlength=k
        )
        return np.divide(above, n, out=np.zeros(k), where=n > 0)


def reestimate_prior(
    posteriors: np.ndarray,
    prior: np.ndarray,
    weights: np.ndarray | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> np.ndarray:
    """The class prior of a window by EM (Saerens, Latinne & Decaestecker 2002).

    `posteriors` (rows x classes) were calibrated under `prior`; each step reweights them by the
    current estimate's ratio to `prior`, renormalises and averages. Under pure label shift this
    converges to the window's label mix; `weights` are row counts (for binned rows).
    """
    post = np.asarray(posteriors, dtype=float)
    prior = np.clip(np.asarray(prior, dtype=float), 1e-6, None)
    w = np.ones(len(post)) if weights is None else np.asarray(weights, dtype=float)
    if w.sum() <= 0:
        return prior / prior.sum()
    q = prior / prior.sum()
    for _ in range(max_iter):
        r = _reweight(post, q / prior)
        new = (w[:, None] * r).sum(axis=0) / w.sum()
        if np.abs(new - q).max() < tol:
            return new
        q = new
    return q


def _reweight(posteriors: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    r = posteriors * np.asarray(ratio)[None, :]
    return r / np.maximum(r.sum(axis=1, keepdims=True), 1e-12)


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
    estimator: str = CBPE  # which label-free method `estimated` holds (the decisive one)
    estimates: dict[str, Estimate] = field(default_factory=dict)  # every method, for comparison
    reference_estimates: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # per method, on the test set
    separability: float | None = None  # domain-classifier ROC AUC of window vs. reference (None: unknown)
    trusted: bool | None = (
        None  # False: the estimate may not decide (see `estimate_trust`); None: no estimate
    )
    trust_reason: str = ""

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
            "estimator": self.estimator,
            "estimates": {
                name: {
                    **{k: v.to_payload() for k, v in e.metrics.items()},
                    "baseline": {k: _r(v) for k, v in self.reference_estimates.get(name, {}).items()},
                    "prior": {k: _r(v) for k, v in e.prior.items()},
                    "prior_applied": e.prior_applied,
                }
                for name, e in self.estimates.items()
            },
            "separability": _r(self.separability),
            "trusted": self.trusted,
            "trust_reason": self.trust_reason,
            "notes": list(self.notes),
        }

    def to_markdown(self) -> str:
        verdict = "**Performance degraded**" if self.degraded else "Performance holds"
        lines = [
            f"{verdict} ({self.source}): {self.reason}",
            "",
            f"| metric | test | observed (feedback) | estimated (label-free, {self.estimator}) | estimator on test "
            "| drop | judged on |",
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
        for name, e in self.estimates.items():
            if name != self.estimator:
                base = self.reference_estimates.get(name, {})
                lines.append(
                    f"Beside it, {name}: "
                    + ", ".join(f"{m} {v.fmt()} (on test {_f(base.get(m))})" for m, v in e.metrics.items())
                    + "."
                )
        decisive = self.estimates.get(self.estimator)
        if decisive:
            lines.append(
                f"The estimate's value is {self.estimator}'s; its interval spans every estimator's bootstrap."
            )
            lines.append(
                "Label mix re-estimated (EM, if only the mix moved): "
                + "/".join(f"{100 * decisive.prior[n]:.0f}" for n in LABELS)
                + " vs. "
                + "/".join(f"{100 * decisive.reference_prior[n]:.0f}" for n in LABELS)
                + " on the test set (negative/neutral/positive %)."
            )
        if self.trusted is False:
            lines.append(f"**Estimate not trusted**: {self.trust_reason}.")
        elif self.trust_reason:
            lines.append(f"Estimate trusted: {self.trust_reason}.")
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
    method: str = CBPE,
    prior_shift: bool | None = None,
) -> dict[str, MetricValue]:
    """Label-free accuracy and macro-F1 of a window, with intervals (see the module docstring).

    Args:
        method: `cbpe` (calibrated confidence) or `atc` (thresholded confidence, `ThresholdedConfidence`).
        prior_shift: adjust for the window's label mix re-estimated by EM (`reestimate_prior`); None = no
            (measured on the corpus, the adjustment helped under a pure label shift and hurt more on topic
            subpopulations, where EM runs to the boundary: bench/README.md, label-free estimates).
    """
    return estimate(reference, predicted, confidence, level, n_boot, seed, method, prior_shift).metrics


@dataclass(frozen=True)
class Estimate:
    """One label-free estimate of a window: its metrics and the label mix it assumed."""

    method: str
    metrics: dict[str, MetricValue]
    prior: dict[str, float]  # the window's label mix re-estimated by EM (assumes a pure label shift)
    reference_prior: dict[str, float]
    prior_applied: bool = False  # whether the metrics were adjusted for `prior`


def estimate(
    reference: pd.DataFrame,
    predicted: Sequence[str],
    confidence: Sequence[float],
    level: float = PERFORMANCE_CONFIDENCE,
    n_boot: int = 200,
    seed: int = 0,
    method: str = CBPE,
    prior_shift: bool | None = None,
) -> Estimate:
    """`estimate_metrics` with the re-estimated label mix (the bootstrap refits everything per draw).

    Interval: each draw resamples the reference rows (the fit's uncertainty: isotonic maps, thresholds,
    error spread, the EM prior) and draws the window's outcomes from the fitted P(right) per (predicted
    class, confidence bin) (sampling noise of the window's own accuracy).
    """
    from sklearn import config_context

    if method not in ESTIMATORS:
        raise ValueError(f"method must be one of {ESTIMATORS}, got {method!r}")
    shift = bool(prior_shift)
    ref = reference[reference["true_label"].notna()].reset_index(drop=True)
    if len(ref) < 20:
        raise ValueError(f"the reference has {len(ref)} labelled rows; the estimate needs at least 20")
    pred, conf = _ids(predicted), np.asarray(confidence, dtype=float)
    if len(pred) == 0:
        raise ValueError("empty window")
    r = _reference_arrays(ref)
    k = len(LABELS)
    point, prior, ref_prior = _point_estimate(method, shift, r, pred, conf)
    # the window on a (predicted class, confidence bin) grid: the bootstrap works on counts, not rows
    bins = np.minimum((conf * _GRID).astype(int), _GRID - 1)
    counts = np.zeros((k, _GRID), dtype=np.int64)
    np.add.at(counts, (pred, bins), 1)
    cls, cell = np.nonzero(counts)  # only the occupied (class, bin) cells: a window of n rows has at most n
    g_conf, g_n = (cell + 0.5) / _GRID, counts[cls, cell]
    rng = np.random.default_rng(seed)
    dist = []
    for _ in range(n_boot):
        i = rng.integers(0, len(ref), len(ref))
        with config_context(skip_parameter_validation=True, assume_finite=True):  # hundreds of small fits
            p, sp, _, _ = _estimator_parts(
                method, shift, r[0][i], r[1][i], r[2][i], r[3][i], cls, g_conf, g_n.astype(float)
            )
        right_n = np.bincount(cls, weights=rng.binomial(g_n, np.clip(p, 0.0, 1.0)), minlength=k).astype(
            np.int64
        )
        wrong_n = np.bincount(cls, weights=g_n, minlength=k).astype(np.int64) - right_n
        draw = np.zeros((k, k))
        for c in range(k):
            m = cls == c
            mass = ((g_n[m] * (1.0 - p[m]))[:, None] * sp[m]).sum(axis=0)
            if mass.sum() > 0:  # clipped: one class alone can come out 1 + 1e-16, which numpy refuses
                draw[:, c] = rng.multinomial(wrong_n[c], np.clip(mass / mass.sum(), 0.0, 1.0))
            draw[c, c] = right_n[c]
        dist.append(_scores(draw))
    metrics = {name: _interval(name, point[name], [d[name] for d in dist], level) for name in METRICS}
    if prior is None:  # reported either way: how the label mix moved, if only the mix moved
        _, _, prior, _ = _estimator_parts(CBPE, True, *r, pred, conf, np.ones(len(pred)))
    named = lambda v: {name: float(x) for name, x in zip(LABELS, v, strict=True)}  # noqa: E731
    return Estimate(
        method=method,
        metrics=metrics,
        prior=named(prior),
        reference_prior=named(ref_prior),
        prior_applied=shift,
    )


def combined(decisive: MetricValue, *others: MetricValue) -> MetricValue:
    """The decisive estimate's value with an interval over every estimator's bootstrap (their mixture).

    Why: each interval covers only its own estimator's sampling noise, not the bias its assumption brings
    under shift; where two estimators with different assumptions disagree, the truth was found between or
    near them (bench/README.md), so the verdict should be that much less sure.
    """
    samples = np.concatenate([np.asarray(v.samples, dtype=float) for v in (decisive, *others)])
    if not len(samples):
        return decisive
    tail = (1 - decisive.level) / 2
    lo, hi = np.quantile(samples, [tail, 1 - tail])
    return MetricValue(
        name=decisive.name,
        value=decisive.value,
        lower=float(min(lo, decisive.lower, *(v.lower for v in others))),
        upper=float(max(hi, decisive.upper, *(v.upper for v in others))),
        level=decisive.level,
        samples=tuple(float(v) for v in samples),
    )


def _point_estimate(
    method: str, prior_shift: bool, ref: tuple[np.ndarray, ...], pred: np.ndarray, conf: np.ndarray
) -> tuple[dict[str, float], np.ndarray | None, np.ndarray]:
    """Estimated metrics of a window's rows, its re-estimated label mix and the reference's (no interval)."""
    k = len(LABELS)
    right, spread, prior, ref_prior = _estimator_parts(
        method, prior_shift, ref[0], ref[1], ref[2], ref[3], pred, conf, np.ones(len(pred))
    )
    cm = np.zeros((k, k))
    for c in range(k):
        m = pred == c
        cm[:, c] = ((1.0 - right[m])[:, None] * spread[m]).sum(axis=0)
        cm[c, c] = right[m].sum()
    return _scores(cm), prior, ref_prior


def reference_estimate_of(
    reference: pd.DataFrame, method: str = CBPE, prior_shift: bool | None = None
) -> dict[str, float]:
    """The estimator applied to the labelled reference rows themselves: its own bias, the baseline a
    window's estimate is judged against (so that the bias cancels)."""
    ref = reference[reference["true_label"].notna()].reset_index(drop=True)
    r = _reference_arrays(ref)
    return _point_estimate(method, bool(prior_shift), r, r[1], r[0])[0]


def _reference_arrays(ref: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The labelled reference rows as the estimators read them: (confidence, predicted id, correct, true id)."""
    return (
        ref["confidence"].to_numpy(float),
        _ids(ref["predicted_label"]),
        ref["correct"].to_numpy(float),
        _ids(ref["true_label"]),
    )


def _estimator_parts(
    method: str,
    prior_shift: bool,
    r_conf: np.ndarray,
    r_pred: np.ndarray,
    r_correct: np.ndarray,
    r_true: np.ndarray,
    pred: np.ndarray,
    conf: np.ndarray,
    weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Per window row (or weighted bin): P(right), how its wrong mass spreads over the true classes, the
    window's re-estimated label mix (None without `prior_shift`) and the reference's."""
    cal = ConfidenceCalibrator(r_conf, r_pred, r_correct, r_true)
    ref_prior = cal.posteriors(r_pred, r_conf).mean(axis=0)
    post = cal.posteriors(pred, conf)
    prior = ratio = None
    if prior_shift:
        prior = reestimate_prior(post, ref_prior, weights)
        ratio = prior / np.clip(ref_prior, 1e-6, None)
    # a wrong prediction of class k is of true class j as on the reference, in the window's label mix
    base = cal.error_spread if ratio is None else cal.error_spread * ratio[None, :]
    spread = base[pred] / np.maximum(base[pred].sum(axis=1, keepdims=True), 1e-12)
    if method == CBPE:
        right = (
            post[np.arange(len(pred)), pred]
            if ratio is None
            else _reweight(post, ratio)[np.arange(len(pred)), pred]
        )
    else:
        atc = ThresholdedConfidence(r_conf, r_pred, r_correct, r_true)
        right = (conf > np.asarray(atc.per_class)[pred]).astype(float)
    return right, spread, prior, ref_prior


def estimate_trust(
    separability: float | None, max_separability: float = ESTIMATE_MAX_SEPARABILITY
) -> tuple[bool | None, str]:
    """(trusted, why): whether a label-free estimate may decide, from the domain classifier's ROC AUC.

    None when the separability is unknown (no embeddings): the estimate decides as before, and says so.
    """
    if separability is None or not math.isfinite(separability):
        return None, "separability unknown (no embedding drift score)"
    if separability >= max_separability:
        return (
            False,
            f"{UNTRUSTED_REASON} (domain classifier AUC {separability:.3f} >= {max_separability:.2f})",
        )
    return True, f"domain classifier AUC {separability:.3f} < {max_separability:.2f}"


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
    estimator: str = PERFORMANCE_ESTIMATOR,
    separability: float | None = None,
    max_separability: float = ESTIMATE_MAX_SEPARABILITY,
) -> PerformanceResult:
    """Observed and estimated performance of a window and the degradation verdict.

    Args:
        reference: the reference profile frame (needs `true_label`/`correct` for the estimate).
        test_metrics: the version's registry metrics["test"] (accuracy, macro_f1); None = the
            reference rows' own metrics.
        predicted, confidence: the window's logged predictions.
        true: the window's feedback labels (None/NaN where none came).
        metrics: the metrics judged; degraded when any of them is (see `judge`).
        estimator: the label-free method that decides (`ESTIMATORS`); every method is computed and reported.
        separability: the domain classifier's ROC AUC of window vs. reference (the embedding-drift score);
            at or above `max_separability` the estimate is not trusted and cannot call degradation alone.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
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
    estimates: dict[str, Estimate] = {}
    reference_estimates: dict[str, dict[str, float]] = {}
    trusted, trust_reason = None, ""
    if has_ref_labels and predicted:
        for name in ESTIMATORS:
            estimates[name] = estimate(reference, predicted, confidence, level=level, seed=seed, method=name)
            reference_estimates[name] = reference_estimate_of(ref_rows, name)
        others = [e for name, e in estimates.items() if name != estimator]
        estimated = {
            m: combined(v, *(e.metrics[m] for e in others)) for m, v in estimates[estimator].metrics.items()
        }
        reference_estimate = reference_estimates[estimator]
        calibration = calibration_check(reference, seed=seed)
        trusted, trust_reason = estimate_trust(separability, max_separability)
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
        estimator=estimator,
        estimates=estimates,
        reference_estimates=reference_estimates,
        separability=separability,
        trusted=trusted,
        trust_reason=trust_reason,
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
    vetoed: tuple[str, ...] = ()
    if source == ESTIMATED and trusted is False:
        # an estimate that cannot be trusted does not call degradation alone (drift still alarms)
        vetoed, degraded = degraded, ()
        notes.append(f"estimate not trusted: {trust_reason}")
    headline = max(degraded, key=lambda m: drops[m]) if degraded else judged[-1]
    against = "on the test set" if source == OBSERVED else "estimated the same way on the test set"
    reason = "; ".join(
        f"{m} {source} {values[m].fmt()} vs {baselines[m]:.3f} {against} (drop {drops[m]:+.3f})"
        for m in (degraded or judged)
    )
    if source == OBSERVED:
        reason += f"; {len(labelled)} labelled predictions"
    if source == ESTIMATED and trusted is False:
        reason = (
            f"estimate not trusted, {UNTRUSTED_REASON}"
            + (f" (alone it would call {', '.join(vetoed)} degraded)" if vetoed else "")
            + f": {reason}"
        )
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
