"""Unit tests of the evaluation metrics and the TF-IDF baseline."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from nfl_mlops import LABELS
from nfl_mlops.modeling.baseline import TfidfBaseline
from nfl_mlops.modeling.metrics import EvalMetrics, evaluate, expected_calibration_error, to_ids


def _random_case(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    proba = rng.dirichlet(np.ones(3), size=n)
    # make predictions better than chance so the per-class F1s differ
    proba[np.arange(n), y] += rng.uniform(0, 0.6, size=n)
    proba /= proba.sum(axis=1, keepdims=True)
    return y, proba


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_matches_sklearn(seed: int) -> None:
    y, proba = _random_case(seed)
    pred = proba.argmax(axis=1)
    m = evaluate(y, proba)
    assert isinstance(m, EvalMetrics)
    assert m.n == len(y)
    assert m.accuracy == pytest.approx(accuracy_score(y, pred))
    assert m.macro_f1 == pytest.approx(f1_score(y, pred, average="macro"))
    per_class = f1_score(y, pred, average=None, labels=[0, 1, 2])
    assert [m.f1[name] for name in LABELS] == pytest.approx(list(per_class))
    assert m.confusion == confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()
    assert sum(map(sum, m.confusion)) == len(y)


def test_evaluate_accepts_string_labels_same_as_ids() -> None:
    y, proba = _random_case(3, n=60)
    names = [LABELS[i] for i in y]
    assert evaluate(names, proba) == evaluate(y, proba)
    assert evaluate(np.asarray(names), proba) == evaluate(y, proba)


def test_evaluate_perfect_predictions() -> None:
    y = np.array([0, 1, 2, 2, 1, 0])
    proba = np.eye(3)[y]
    m = evaluate(y, proba)
    assert m.accuracy == 1.0 and m.macro_f1 == 1.0
    assert m.confusion == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert m.ece == pytest.approx(0.0)


def test_evaluate_confusion_rows_are_true_columns_predicted() -> None:
    y = np.array([0, 0, 0])  # all negative
    proba = np.tile([0.1, 0.1, 0.8], (3, 1))  # all predicted positive
    m = evaluate(y, proba)
    assert m.confusion == [[0, 0, 3], [0, 0, 0], [0, 0, 0]]
    assert m.accuracy == 0.0
    assert m.f1 == {"negative": 0.0, "neutral": 0.0, "positive": 0.0}
    # neutral never appears in truth or prediction: macro-F1 averages the two classes that do
    assert m.macro_f1 == pytest.approx(f1_score(y, proba.argmax(axis=1), average="macro"))


def test_evaluate_macro_f1_ignores_absent_class_like_sklearn() -> None:
    y = np.array([0, 0, 2, 2, 2])
    proba = np.eye(3)[[0, 2, 2, 2, 0]]
    m = evaluate(y, proba)
    assert m.f1["neutral"] == 0.0
    assert m.macro_f1 == pytest.approx(f1_score(y, proba.argmax(axis=1), average="macro"))
    assert m.macro_f1 == pytest.approx(np.mean([m.f1["negative"], m.f1["positive"]]))


def test_evaluate_empty_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        evaluate([], np.zeros((0, 3)))
    with pytest.raises(ValueError, match="empty"):
        evaluate(np.array([], dtype=np.int64), np.zeros((0, 3)))


def test_to_ids_rejects_unknown_label() -> None:
    assert to_ids(["positive", "negative", "neutral"]).tolist() == [2, 0, 1]
    with pytest.raises(KeyError):
        to_ids(["great"])


def test_flat_has_prefixed_scalars_only() -> None:
    y, proba = _random_case(4, n=50)
    m = evaluate(y, proba)
    flat = m.flat("test_")
    assert set(flat) == {
        "test_accuracy",
        "test_macro_f1",
        "test_ece",
        "test_f1_negative",
        "test_f1_neutral",
        "test_f1_positive",
    }
    assert flat["test_macro_f1"] == m.macro_f1
    assert all(isinstance(v, float) for v in flat.values())
    assert m.as_dict()["confusion"] == m.confusion


# --------------------------------------------------------------------------------------------
# Expected calibration error
# --------------------------------------------------------------------------------------------


def test_ece_of_perfectly_calibrated_predictions_is_zero() -> None:
    # 1000 predictions at confidence 0.75, exactly 75% of them correct; 1000 at 0.45 with 45% correct
    n = 1000
    y = np.zeros(2 * n, dtype=np.int64)
    proba = np.zeros((2 * n, 3))
    proba[:n] = [0.75, 0.15, 0.10]
    proba[n:] = [0.45, 0.30, 0.25]
    y[:n][int(0.75 * n) :] = 1  # 25% wrong
    y[n:][int(0.45 * n) :] = 2  # 55% wrong
    assert expected_calibration_error(y, proba) == pytest.approx(0.0, abs=1e-9)
    assert evaluate(y, proba).ece == pytest.approx(0.0, abs=1e-9)


def test_ece_of_overconfident_predictions_is_the_gap() -> None:
    n = 1000
    proba = np.tile([0.99, 0.005, 0.005], (n, 1))
    y = np.zeros(n, dtype=np.int64)
    y[n // 2 :] = 1  # only half right at 99% confidence
    assert expected_calibration_error(y, proba) == pytest.approx(0.49)


def test_ece_is_weighted_by_bin_size() -> None:
    # 900 perfectly calibrated at 0.8 (bin 8), 100 at confidence 1.0 all wrong (bin 9, gap 1.0)
    proba = np.vstack([np.tile([0.8, 0.1, 0.1], (900, 1)), np.tile([1.0, 0.0, 0.0], (100, 1))])
    y = np.zeros(1000, dtype=np.int64)
    y[720:900] = 1  # 180 of 900 wrong -> 80% correct in bin 8
    y[900:] = 2
    assert expected_calibration_error(y, proba) == pytest.approx(0.1)


def test_ece_underconfident_is_also_positive() -> None:
    proba = np.tile([0.4, 0.3, 0.3], (100, 1))
    y = np.zeros(100, dtype=np.int64)  # always right at 40% confidence
    assert expected_calibration_error(y, proba) == pytest.approx(0.6)


# --------------------------------------------------------------------------------------------
# TF-IDF baseline on real corpus rows
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_slice():
    from nfl_mlops.data import load_corpus, prepare, select

    rows = select(prepare(load_corpus()), max_rows=3000, seed=7)
    train, test = rows.iloc[:2400], rows.iloc[2400:]
    return train["text"].tolist(), train["label"].tolist(), test["text"].tolist(), test["label"].tolist()


@pytest.fixture(scope="module")
def fitted_baseline(corpus_slice):
    x_train, y_train, _, _ = corpus_slice
    return TfidfBaseline(seed=0).fit(x_train, y_train)


def test_baseline_beats_majority_class(corpus_slice, fitted_baseline) -> None:
    _, y_train, x_test, y_test = corpus_slice
    majority = max(set(y_train), key=y_train.count)
    majority_acc = float(np.mean([label == majority for label in y_test]))
    m = fitted_baseline.evaluate(x_test, y_test)
    assert m.n == len(y_test) == 600
    assert m.accuracy > majority_acc + 0.15, (m.accuracy, majority_acc)  # ~0.71 vs ~0.45
    # the majority-class predictor scores macro-F1 of about 0.2; the baseline ~0.67
    assert m.macro_f1 > 0.55


def test_baseline_predict_proba_shape_and_rows_sum_to_one(corpus_slice, fitted_baseline) -> None:
    _, _, x_test, _ = corpus_slice
    proba = fitted_baseline.predict_proba(x_test[:50])
    assert proba.shape == (50, 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert (proba >= 0).all() and (proba <= 1).all()


def test_baseline_direction_on_obvious_texts(fitted_baseline) -> None:
    proba = fitted_baseline.predict_proba(
        ["love it, great awesome amazing, thank you", "worst terrible awful service, hate it"]
    )
    pos, neg = LABELS.index("positive"), LABELS.index("negative")
    assert proba[0, pos] > proba[1, pos]
    assert proba[1, neg] > proba[0, neg]


def test_baseline_with_a_class_missing_from_training_keeps_three_columns() -> None:
    texts = [
        "great game love it",
        "love this team great",
        "awesome great win love",
        "terrible refs hate it",
        "hate this awful loss",
        "awful terrible hate",
    ] * 3
    labels = ["positive", "positive", "positive", "negative", "negative", "negative"] * 3
    model = TfidfBaseline().fit(texts, labels)  # no "neutral" row
    proba = model.predict_proba(["great love", "hate awful", "unrelated words"])
    assert proba.shape == (3, 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert (proba[:, LABELS.index("neutral")] == 0).all()
    assert proba[0].argmax() == LABELS.index("positive")
    assert proba[1].argmax() == LABELS.index("negative")
    m = model.evaluate(["great love", "hate awful"], ["positive", "negative"])
    assert m.accuracy == 1.0 and m.confusion[1] == [0, 0, 0]
