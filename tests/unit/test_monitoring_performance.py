"""Observed and label-free (CBPE-style and ATC) performance, calibration, the label mix and the degradation verdict
(pure, synthetic where the truth is known by construction)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nfl_mlops import LABELS
from nfl_mlops.monitoring.performance import (
    ATC,
    ESTIMATED,
    ESTIMATORS,
    OBSERVED,
    UNAVAILABLE,
    UNTRUSTED_REASON,
    ConfidenceCalibrator,
    MetricValue,
    ThresholdedConfidence,
    _Isotonic,
    assess_performance,
    calibration_check,
    estimate,
    estimate_metrics,
    estimate_trust,
    fit_atc_threshold,
    judge,
    observed_metrics,
    reestimate_prior,
)

OTHER = {
    "negative": ["neutral", "positive"],
    "neutral": ["negative", "positive"],
    "positive": ["negative", "neutral"],
}


def predictions(
    n: int,
    seed: int,
    conf_low: float = 0.4,
    conf_high: float = 1.0,
    overconfidence: float = 0.0,
    mix=(0.5, 0.3, 0.2),
) -> pd.DataFrame:
    """Predictions whose correctness follows P(correct) = confidence - overconfidence (a known truth)."""
    r = np.random.default_rng(seed)
    pred = r.choice(LABELS, n, p=list(mix))
    conf = r.uniform(conf_low, conf_high, n)
    correct = r.uniform(size=n) < np.clip(conf - overconfidence, 0, 1)
    wrong_choice = r.integers(0, 2, n)
    true = np.where(correct, pred, [OTHER[p][w] for p, w in zip(pred, wrong_choice, strict=True)])
    return pd.DataFrame(
        {
            "predicted_label": pred,
            "confidence": conf,
            "true_label": true,
            "correct": (true == pred).astype(float),
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return predictions(600, seed=1)


def test_observed_metrics_match_the_confusion_matrix():
    true = ["negative"] * 6 + ["neutral"] * 3 + ["positive"]
    pred = ["negative"] * 5 + ["neutral"] + ["neutral"] * 2 + ["negative"] + ["positive"]
    out = observed_metrics(true, pred)
    assert out["accuracy"].value == pytest.approx(8 / 10)
    f1 = [2 * 5 / (2 * 5 + 1 + 1), 2 * 2 / (2 * 2 + 1 + 1), 1.0]
    assert out["macro_f1"].value == pytest.approx(np.mean(f1))
    for v in out.values():
        assert v.lower <= v.value <= v.upper and v.level == 0.9


def test_isotonic_matches_sklearn():
    from sklearn.isotonic import IsotonicRegression

    r = np.random.default_rng(0)
    x = np.round(r.uniform(0.3, 1, 300), 2)  # ties on purpose
    y = (r.uniform(size=300) < x).astype(float)
    grid = np.linspace(0, 1, 501)
    expected = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(x, y).predict(grid)
    np.testing.assert_allclose(_Isotonic(x, y).predict(grid), expected, atol=1e-12)


def test_estimate_tracks_the_realised_accuracy_of_a_calibrated_window(reference):
    window = predictions(5000, seed=2)
    est = estimate_metrics(reference, window["predicted_label"], window["confidence"])
    realised = observed_metrics(window["true_label"], window["predicted_label"])
    for name in ("accuracy", "macro_f1"):
        assert est[name].lower <= realised[name].value <= est[name].upper, name
        assert est[name].upper - est[name].lower < 0.15


def test_estimate_follows_a_shift_to_low_confidence(reference):
    high = predictions(3000, seed=3, conf_low=0.8)
    low = predictions(3000, seed=3, conf_low=0.4, conf_high=0.6)
    est_high = estimate_metrics(reference, high["predicted_label"], high["confidence"])["accuracy"].value
    est_low = estimate_metrics(reference, low["predicted_label"], low["confidence"])["accuracy"].value
    assert est_high == pytest.approx(0.9, abs=0.05)
    assert est_low == pytest.approx(0.5, abs=0.06)


def test_calibration_check_sees_overconfidence():
    calibrated = calibration_check(predictions(800, seed=4))
    overconfident = calibration_check(predictions(800, seed=4, overconfidence=0.25))
    assert calibrated.ece_raw < 0.06
    assert overconfident.ece_raw > 0.2
    assert overconfident.ece_calibrated < 0.08  # the isotonic map repairs it (cross-fitted)
    assert calibrated.n == 800


def test_per_class_calibration_falls_back_to_pooled_for_rare_classes():
    ref = predictions(300, seed=5, mix=(0.9, 0.07, 0.03))
    cal = ConfidenceCalibrator.from_reference(ref)
    assert cal.per_class[0] is not cal.pooled  # negative: enough rows
    assert cal.per_class[2] is cal.pooled  # positive: 9 rows
    np.testing.assert_allclose(cal.error_spread.sum(axis=1), 1.0)
    assert (np.diag(cal.error_spread) == 0).all()


@pytest.mark.parametrize(
    ("value", "upper", "reference", "expected"),
    [
        (0.60, 0.65, 0.70, True),  # drop 0.10, interval below the reference
        (0.60, 0.72, 0.70, False),  # drop 0.10 but the interval reaches the reference (not significant)
        (0.67, 0.68, 0.70, False),  # significant but small (0.03 <= 0.05)
        (0.80, 0.85, 0.70, False),
    ],  # better
)
def test_judge(value, upper, reference, expected):
    degraded, drop = judge(MetricValue("accuracy", value, value - 0.05, upper, 0.9), reference, max_drop=0.05)
    assert degraded is expected
    assert drop == pytest.approx(reference - value)


def test_observed_decides_with_enough_labels(reference):
    window = predictions(400, seed=6, overconfidence=0.3)  # the window is much worse than its confidences say
    result = assess_performance(
        reference,
        {"accuracy": 0.72, "macro_f1": 0.70},
        window["predicted_label"],
        window["confidence"],
        window["true_label"],
    )
    assert result.source == OBSERVED and result.n_labelled == 400
    assert result.degraded and "accuracy" in result.degraded_metrics
    assert result.baselines["accuracy"] == 0.72
    assert result.estimated is not None  # the estimate is reported beside the observed value
    payload = json.loads(json.dumps(result.to_payload()))
    assert payload["performance_degraded"] is True and payload["source"] == "observed"
    assert payload["drop"] > 0.05 and payload["reason"]
    assert "| accuracy |" in result.to_markdown()


def test_estimate_decides_without_enough_labels(reference):
    window = predictions(400, seed=7, conf_low=0.4, conf_high=0.55)
    true = [t if i < 10 else None for i, t in enumerate(window["true_label"])]
    result = assess_performance(
        reference, {"accuracy": 0.7, "macro_f1": 0.69}, window["predicted_label"], window["confidence"], true
    )
    assert result.source == ESTIMATED and result.n_labelled == 10
    assert result.degraded  # confidences ~0.47: estimated accuracy ~0.47 vs ~0.7 estimated on the test set
    assert result.baselines["accuracy"] == pytest.approx(result.reference_estimate["accuracy"])
    assert any("only 10 feedback labels" in n for n in result.notes)


def test_same_distribution_is_not_degraded(reference):
    window = predictions(2000, seed=8)
    test = observed_metrics(reference["true_label"], reference["predicted_label"])
    result = assess_performance(
        reference, {k: v.value for k, v in test.items()}, window["predicted_label"], window["confidence"]
    )
    assert result.source == ESTIMATED and not result.degraded


def test_unavailable_without_reference_labels_or_feedback():
    ref = predictions(100, seed=9).drop(columns=["true_label", "correct"])
    window = predictions(50, seed=10)
    result = assess_performance(ref, None, window["predicted_label"], window["confidence"])
    assert result.source == UNAVAILABLE and not result.degraded and result.estimated is None
    assert any("no test labels" in n for n in result.notes)


def test_bad_arguments(reference):
    with pytest.raises(ValueError, match="metrics"):
        assess_performance(reference, None, ["negative"], [0.9], metrics=("auc",))
    with pytest.raises(ValueError, match="feedback entries"):
        assess_performance(reference, None, ["negative"], [0.9], true=["negative", "neutral"])


def test_judge_compares_two_uncertain_quantities() -> None:
    """A drop of 0.06 from a test metric of few rows: real only when it beats both sides' noise."""
    import numpy as np

    from nfl_mlops.monitoring.performance import MetricValue, judge

    rng = np.random.default_rng(0)
    window = rng.normal(0.70, 0.01, 500)  # a large window: a tight interval around 0.70
    value = MetricValue(
        "accuracy",
        0.70,
        float(np.quantile(window, 0.05)),
        float(np.quantile(window, 0.95)),
        0.90,
        samples=tuple(window),
    )
    assert judge(value, 0.76, 0.05)[0] is True  # the baseline taken as exact: "degraded"
    wide = rng.normal(0.0, 0.04, 500)  # the baseline's own noise: ~200 test rows
    assert judge(value, 0.76, 0.05, reference_noise=wide)[0] is False
    tight = rng.normal(0.0, 0.01, 500)  # a well-measured baseline: the drop is real
    assert judge(value, 0.76, 0.05, reference_noise=tight)[0] is True
    assert judge(value, 0.74, 0.05, reference_noise=tight)[0] is False  # real, but under max_drop


def test_baseline_noise_comes_from_the_reference_test_rows() -> None:
    import pandas as pd

    from nfl_mlops.monitoring.performance import baseline_noise

    frame = pd.DataFrame(
        {
            "true_label": ["positive", "negative", "neutral", "positive"] * 25,
            "predicted_label": ["positive", "negative", "positive", "neutral"] * 25,
        }
    )
    noise = baseline_noise(frame)
    assert set(noise) == {"accuracy", "macro_f1"} and abs(float(noise["accuracy"].mean())) < 0.02
    assert 0.02 < float(noise["accuracy"].std()) < 0.08  # ~sqrt(0.25/100)
    assert (
        baseline_noise(frame.iloc[:10]) is None and baseline_noise(frame.drop(columns="true_label")) is None
    )


# ATC and the label mix (issue 13.3)


def separable(n: int, seed: int, easy_share: float, mix=(0.5, 0.3, 0.2)) -> pd.DataFrame:
    """Predictions whose correctness is known by construction: "easy" rows (confidence 0.75-1.0) are right,
    "hard" rows (0.35-0.65) wrong, so accuracy = the share of easy rows, whatever the mix (a covariate
    shift that ATC's assumption covers)."""
    r = np.random.default_rng(seed)
    pred = r.choice(LABELS, n, p=list(mix))
    easy = r.uniform(size=n) < easy_share
    conf = np.where(easy, r.uniform(0.75, 1.0, n), r.uniform(0.35, 0.65, n))
    wrong_choice = r.integers(0, 2, n)
    true = np.where(easy, pred, [OTHER[p][w] for p, w in zip(pred, wrong_choice, strict=True)])
    return pd.DataFrame(
        {
            "predicted_label": pred,
            "confidence": conf,
            "true_label": true,
            "correct": (true == pred).astype(float),
        }
    )


def test_atc_threshold_puts_the_reference_accuracy_above_it():
    r = np.random.default_rng(11)
    scores, correct = r.uniform(0.3, 1.0, 501), (r.uniform(size=501) < 0.66).astype(float)
    t = fit_atc_threshold(scores, correct)
    assert abs(np.mean(scores > t) - correct.mean()) <= 1 / 501
    assert fit_atc_threshold(scores, np.ones(501)) < scores.min()  # all right: everything above
    assert fit_atc_threshold(scores, np.zeros(501)) == scores.max()  # all wrong: nothing above


@pytest.mark.parametrize("easy_share", [0.35, 0.9])
def test_atc_recovers_the_accuracy_of_a_shifted_window(easy_share):
    reference = separable(800, seed=12, easy_share=0.65)
    window = separable(1500, seed=13, easy_share=easy_share, mix=(0.2, 0.5, 0.3))
    truth = observed_metrics(window["true_label"], window["predicted_label"])
    est = estimate_metrics(reference, window["predicted_label"], window["confidence"], method=ATC)
    assert est["accuracy"].value == pytest.approx(truth["accuracy"].value, abs=0.02)
    assert est["accuracy"].lower <= truth["accuracy"].value <= est["accuracy"].upper
    assert est["macro_f1"].value == pytest.approx(truth["macro_f1"].value, abs=0.05)
    atc = ThresholdedConfidence.from_reference(reference)
    assert all(0.65 <= t <= 0.75 for t in atc.per_class)  # each class's threshold falls in the gap


def label_shifted(n: int, seed: int, prior) -> pd.DataFrame:
    """Predictions under pure label shift: the true class is drawn from `prior`, then the model's
    (prediction, confidence) from a distribution that depends on the true class only."""
    r = np.random.default_rng(seed)
    true = r.choice(len(LABELS), n, p=list(prior))
    right = r.uniform(size=n) < np.array([0.85, 0.6, 0.75])[true]
    pred = np.where(right, true, (true + r.integers(1, 3, n)) % 3)
    conf = np.where(right, r.uniform(0.55, 1.0, n), r.uniform(0.35, 0.8, n))
    return pd.DataFrame(
        {
            "predicted_label": [LABELS[i] for i in pred],
            "confidence": conf,
            "true_label": [LABELS[i] for i in true],
            "correct": right.astype(float),
        }
    )


def test_em_recovers_a_shifted_label_mix():
    reference = label_shifted(4000, seed=14, prior=(0.6, 0.25, 0.15))
    window = label_shifted(4000, seed=15, prior=(0.15, 0.35, 0.5))
    e = estimate(reference, window["predicted_label"], window["confidence"], method=ATC, n_boot=20)
    assert e.prior is not None
    for name, want in zip(LABELS, (0.15, 0.35, 0.5), strict=True):
        assert e.prior[name] == pytest.approx(want, abs=0.05), (name, e.prior)
        assert e.reference_prior[name] == pytest.approx(
            float((reference["true_label"] == name).mean()), abs=0.03
        )
    # the same estimator on the reference itself finds the reference's mix: nothing to adjust
    post = ConfidenceCalibrator.from_reference(reference)
    ref_post = post.posteriors(
        np.asarray([LABELS.index(v) for v in reference["predicted_label"]]),
        reference["confidence"].to_numpy(),
    )
    np.testing.assert_allclose(
        reestimate_prior(ref_post, ref_post.mean(axis=0)), ref_post.mean(axis=0), atol=1e-3
    )
    # and the label-shift-adjusted CBPE follows the window's accuracy there
    truth = observed_metrics(window["true_label"], window["predicted_label"])["accuracy"].value
    adjusted = estimate_metrics(reference, window["predicted_label"], window["confidence"], prior_shift=True)
    assert adjusted["accuracy"].value == pytest.approx(truth, abs=0.03)


def test_untrusted_estimate_does_not_decide_alone(reference):
    window = predictions(400, seed=7, conf_low=0.4, conf_high=0.55)  # degraded by both estimates
    args = (reference, {"accuracy": 0.7, "macro_f1": 0.69}, window["predicted_label"], window["confidence"])
    separable_ = assess_performance(*args, separability=0.99)
    assert separable_.source == ESTIMATED and separable_.trusted is False
    assert not separable_.degraded and separable_.degraded_metrics == ()
    assert UNTRUSTED_REASON in separable_.reason and "would call" in separable_.reason
    payload = json.loads(json.dumps(separable_.to_payload()))
    assert payload["trusted"] is False and UNTRUSTED_REASON in payload["trust_reason"]
    assert payload["separability"] == 0.99 and payload["performance_degraded"] is False
    assert "**Estimate not trusted**" in separable_.to_markdown()

    overlapping = assess_performance(*args, separability=0.7)
    assert overlapping.trusted is True and overlapping.degraded
    unknown = assess_performance(*args)  # no embeddings: the estimate decides, and says it could not check
    assert unknown.trusted is None and unknown.degraded and "unknown" in unknown.trust_reason
    # feedback labels decide whatever the separability
    labelled = assess_performance(*args, true=window["true_label"], separability=0.99)
    assert labelled.source == OBSERVED and labelled.degraded
    assert estimate_trust(0.95) == (False, estimate_trust(0.97)[1].replace("0.970", "0.950"))


def test_both_estimates_are_reported_and_the_chosen_one_decides(reference):
    window = predictions(600, seed=16)
    for chosen in ESTIMATORS:
        result = assess_performance(
            reference, None, window["predicted_label"], window["confidence"], estimator=chosen
        )
        assert result.estimator == chosen and set(result.estimates) == set(ESTIMATORS)
        other = [m for m in ESTIMATORS if m != chosen][0]
        for m, v in result.estimated.items():  # the chosen value, an interval over both bootstraps
            own, beside = result.estimates[chosen].metrics[m], result.estimates[other].metrics[m]
            assert v.value == own.value
            assert v.lower <= min(own.lower, beside.lower) and v.upper >= max(own.upper, beside.upper)
            assert len(v.samples) == len(own.samples) + len(beside.samples)
        assert result.reference_estimate == result.reference_estimates[chosen]
        payload = json.loads(json.dumps(result.to_payload()))
        assert payload["estimator"] == chosen and set(payload["estimates"]) == set(ESTIMATORS)
        for method in ESTIMATORS:
            assert {"accuracy", "macro_f1", "baseline"} <= set(payload["estimates"][method])
        for method in ESTIMATORS:  # the re-estimated label mix is reported, not applied by default
            assert sum(payload["estimates"][method]["prior"].values()) == pytest.approx(1.0, abs=1e-3)
            assert payload["estimates"][method]["prior_applied"] is False
        assert f"Beside it, {other}:" in result.to_markdown()
    with pytest.raises(ValueError, match="estimator"):
        assess_performance(reference, None, ["negative"], [0.9], estimator="nannyml")


def test_monitor_payload_carries_both_estimates_and_the_trust_verdict():
    from nfl_mlops.monitoring.monitor import monitor_window
    from nfl_mlops.monitoring.reference import build_reference
    from tests.unit.test_monitoring_monitor import AIRLINE, NFL, texts
    from tests.unit.test_monitoring_monitor import window as log_window
    from tests.unit.test_monitoring_reference import HashEncoder

    r = np.random.default_rng(0)
    proba = r.dirichlet([4, 1, 1], 300)
    agree = r.uniform(size=300) < proba.max(axis=1)
    truth = [
        LABELS[p] if a else LABELS[(p + 1) % 3] for p, a in zip(proba.argmax(axis=1), agree, strict=True)
    ]
    ref = build_reference(
        texts(AIRLINE, 600, 2),
        texts(AIRLINE, 300, 1),
        proba,
        truth,
        encoder=HashEncoder(),
        embedding_sample=200,
    )
    result, _ = monitor_window(
        log_window(texts(NFL, 300, 4), 4), ref, {"accuracy": 0.72, "macro_f1": 0.6}, encoder=HashEncoder()
    )
    payload = json.loads(json.dumps(result.payload()))["performance"]
    assert payload["estimator"] == ATC and set(payload["estimates"]) == set(ESTIMATORS)
    assert payload["separability"] == pytest.approx(result.embedding.score, abs=1e-4)
    assert result.embedding.score >= 0.95 and payload["trusted"] is False  # NFL vs airline texts: separable
    event = json.loads(json.dumps(result.event_payload()))["performance"]
    assert event["trusted"] is False and event["estimator"] == ATC
    assert "label the queue" in result.to_markdown()
