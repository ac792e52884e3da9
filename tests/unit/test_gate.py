"""Unit tests of the promotion gate (pure): paired bootstrap, McNemar, and the decision rules."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from nfl_mlops.modeling.metrics import evaluate
from nfl_mlops.registry.gate import (
    EvalSet,
    GateParams,
    GoldenFloor,
    confusion_batch,
    independent_gate,
    mcnemar,
    metric_from_confusion,
    paired_bootstrap,
    reported_scores,
)

RNG = np.random.default_rng(7)


def _labels(n: int, rng: np.random.Generator = RNG) -> np.ndarray:
    return rng.choice(3, size=n, p=[0.4, 0.35, 0.25])


def _noisy(y: np.ndarray, error: float, seed: int) -> np.ndarray:
    """Predictions that are wrong on a random `error` share of rows (spread over the other classes)."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(y)) < error
    return np.where(wrong, (y + rng.integers(1, 3, len(y))) % 3, y)


def _onehot(pred: np.ndarray) -> np.ndarray:
    return np.eye(3)[pred]


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


def test_metric_from_confusion_matches_evaluate() -> None:
    y = _labels(300)
    pred = _noisy(y, 0.3, 1)
    pred[pred == 2] = 0  # class 2 never predicted: F1 0 but still present (it has true rows)
    ref = evaluate(y, _onehot(pred))
    cm = confusion_batch(y, pred)
    assert cm.shape == (1, 3, 3) and cm[0].tolist() == ref.confusion
    assert metric_from_confusion(cm, "macro_f1")[0] == pytest.approx(ref.macro_f1)
    assert metric_from_confusion(cm, "accuracy")[0] == pytest.approx(ref.accuracy)


def test_bootstrap_of_identical_models_is_exactly_zero() -> None:
    y = _labels(200)
    pred = _noisy(y, 0.3, 2)
    ci = paired_bootstrap(y, pred, pred, n_bootstrap=200)
    assert ci.diff == ci.low == ci.high == 0.0


def test_bootstrap_interval_contains_the_point_and_is_reproducible() -> None:
    y = _labels(400)
    a, b = _noisy(y, 0.25, 3), _noisy(y, 0.3, 4)
    ci = paired_bootstrap(y, a, b, n_bootstrap=500, seed=11)
    assert ci.low < ci.diff < ci.high
    assert paired_bootstrap(y, a, b, n_bootstrap=500, seed=11) == ci
    assert ci.candidate - ci.champion == pytest.approx(ci.diff)


def test_bootstrap_detects_a_clearly_worse_model_and_not_an_equal_one() -> None:
    y = _labels(1000)
    good, bad = _noisy(y, 0.2, 5), _noisy(y, 0.45, 6)
    worse = paired_bootstrap(y, bad, good, n_bootstrap=500)
    assert worse.high < 0  # the whole interval is below zero
    equal = paired_bootstrap(y, _noisy(y, 0.2, 7), good, n_bootstrap=500)
    assert equal.low < 0 < equal.high


def test_bootstrap_interval_narrows_with_more_rows() -> None:
    widths = []
    for n in (100, 1600):
        y = _labels(n, np.random.default_rng(n))
        ci = paired_bootstrap(y, _noisy(y, 0.25, 8), _noisy(y, 0.25, 9), n_bootstrap=400)
        widths.append(ci.high - ci.low)
    assert widths[1] < widths[0] / 2.5  # about 1/sqrt(16) = 1/4


def test_bootstrap_rejects_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError, match="lengths"):
        paired_bootstrap(np.zeros(3), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="empty"):
        paired_bootstrap(np.zeros(0), np.zeros(0), np.zeros(0))


def test_mcnemar_counts_discordant_rows_and_is_exact() -> None:
    y = np.zeros(20, dtype=int)
    a = np.zeros(20, dtype=int)
    b = np.zeros(20, dtype=int)
    b[:6] = 1  # champion wrong on 6 rows the candidate gets right
    a[19] = 2  # candidate wrong on 1 row the champion gets right
    m = mcnemar(y, a, b)
    assert (m.candidate_only, m.champion_only) == (6, 1)
    assert m.p_value == pytest.approx(2 * (1 + 7) / 2**7)  # two-sided binomial(7, 0.5), k <= 1
    assert mcnemar(y, a, a).p_value == 1.0


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------


def test_gate_params_defaults_and_validation() -> None:
    p = GateParams()
    assert (p.metric, p.margin, p.min_class_f1, p.confidence) == ("macro_f1", 0.02, 0.10, 0.90)
    for field in GateParams.model_fields.values():
        assert field.description
    with pytest.raises(ValidationError):
        GateParams(margin=-0.1)
    with pytest.raises(ValidationError):
        GateParams(metric="f2")


# --------------------------------------------------------------------------------------------
# the decision
# --------------------------------------------------------------------------------------------

FAST = GateParams(n_bootstrap=300)


def _sets(
    n_test: int = 1500,
    n_recent: int = 600,
    cand_err: float = 0.2,
    champ_err: float = 0.2,
    cand_recent_err: float | None = None,
    champ_recent_err: float | None = None,
    champion: bool = True,
):
    y, r = _labels(n_test, np.random.default_rng(1)), _labels(n_recent, np.random.default_rng(2))
    return [
        EvalSet("test", y, _noisy(y, cand_err, 10), _noisy(y, champ_err, 11) if champion else None),
        EvalSet(
            "recent",
            r,
            _noisy(r, cand_recent_err if cand_recent_err is not None else cand_err, 12),
            _noisy(r, champ_recent_err if champ_recent_err is not None else champ_err, 13)
            if champion
            else None,
        ),
    ]


def test_first_version_passes_without_champion() -> None:
    d = independent_gate(_sets(champion=False), FAST)
    assert d.passed, d.reasons
    assert d.deltas == {}
    assert any(r.startswith("test:") and "no champion" in r for r in d.reasons)
    assert d.sets["test"]["passed"] is None and d.sets["test"]["class_f1"]["positive"]["f1"] > 0.5


def test_clearly_better_candidate_passes_with_intervals() -> None:
    d = independent_gate(_sets(cand_err=0.15, champ_err=0.3), FAST)
    assert d.passed, d.reasons
    iv = d.sets["test"]["interval"]
    assert iv["low"] > 0 and iv["low"] < iv["diff"] < iv["high"]
    assert d.sets["test"]["rule"] == "non_inferiority" and d.sets["recent"]["rule"] == "report"
    assert "mcnemar" in d.sets["test"] and d.deltas["test"] == pytest.approx(iv["diff"], abs=1e-4)


def test_clearly_worse_candidate_is_rejected_as_not_non_inferior() -> None:
    d = independent_gate(_sets(cand_err=0.35, champ_err=0.2), FAST)
    assert not d.passed
    assert any(r.startswith("test:") and "not shown non-inferior" in r for r in d.reasons)
    assert d.sets["test"]["passed"] is False


def test_slightly_worse_candidate_within_margin_point_but_uncertain_is_rejected() -> None:
    """The old gate passed 0.005 below the champion; the interval's lower bound is what counts now."""
    d = independent_gate(_sets(n_test=300, cand_err=0.21, champ_err=0.2), FAST)
    assert not d.passed
    low = d.sets["test"]["interval"]["low"]
    assert low <= -FAST.margin


def test_margin_is_the_only_tolerance() -> None:
    sets = _sets(n_test=300, cand_err=0.22, champ_err=0.2)
    assert not independent_gate(sets, FAST).passed
    assert independent_gate(sets, FAST.model_copy(update={"margin": 0.25})).passed


def test_recent_improvement_required_only_when_asked() -> None:
    # equally good, independent errors: the test split needs a wider margin to show non-inferiority
    wide = FAST.model_copy(update={"margin": 0.05})
    sets = _sets(cand_err=0.2, champ_err=0.2, cand_recent_err=0.2, champ_recent_err=0.2)
    assert independent_gate(sets, wide, require_recent_improvement=False).passed
    d = independent_gate(sets, wide, require_recent_improvement=True)
    assert not d.passed and d.sets["recent"]["rule"] == "improvement"
    assert any(r.startswith("recent:") and "not shown better" in r for r in d.reasons)
    better = _sets(cand_err=0.2, champ_err=0.2, cand_recent_err=0.15, champ_recent_err=0.4)
    assert independent_gate(better, wide, require_recent_improvement=True).passed


def test_improvement_may_rest_on_test_when_the_drifted_traffic_is_no_worse() -> None:
    """Better somewhere, worse nowhere: as good on the recent window and clearly better on test passes;
    clearly better on test but worse on the recent window does not."""
    wide = FAST.model_copy(update={"margin": 0.05})
    sets = _sets(n_recent=2000, cand_err=0.12, champ_err=0.3, cand_recent_err=0.2, champ_recent_err=0.2)
    d = independent_gate(sets, wide, require_recent_improvement=True)
    assert d.passed, d.reasons
    recent = next(r for r in d.reasons if r.startswith("recent:"))
    assert d.sets["recent"]["passed"] is True and "better on test" in recent, recent
    assert d.sets["recent"]["interval"]["low"] <= 0 < d.sets["test"]["interval"]["low"]
    worse = _sets(cand_err=0.12, champ_err=0.3, cand_recent_err=0.35, champ_recent_err=0.2)
    d = independent_gate(worse, wide, require_recent_improvement=True)
    assert not d.passed and d.sets["recent"]["passed"] is False


def test_recent_improvement_without_recent_window_fails() -> None:
    d = independent_gate(_sets()[:1], FAST, require_recent_improvement=True)
    assert not d.passed and any("no recent labelled window" in r for r in d.reasons)


def test_collapsed_class_fails_even_when_better_overall() -> None:
    sets = _sets(cand_err=0.1, champ_err=0.3)
    recent = sets[1]
    collapsed = np.where(recent.candidate == 2, 1, recent.candidate)  # never predicts positive
    d = independent_gate([sets[0], EvalSet("recent", recent.y_true, collapsed, recent.champion)], FAST)
    assert not d.passed
    assert any("recent: class positive F1 0.000 < floor 0.10" in r for r in d.reasons)
    assert d.sets["recent"]["class_f1"]["positive"]["passed"] is False


def test_class_floor_skips_classes_without_enough_support() -> None:
    y = np.array([0] * 50 + [1] * 50 + [2] * 3)
    pred = np.where(y == 2, 0, y)  # misses the 3 positives
    d = independent_gate([EvalSet("test", y, pred)], FAST)
    assert d.passed, d.reasons
    assert d.sets["test"]["class_f1"]["positive"] == {"f1": 0.0, "support": 3, "passed": None}
    assert not independent_gate(
        [EvalSet("test", y, pred)], FAST.model_copy(update={"min_class_support": 3})
    ).passed


def test_golden_floor_stops_erosion() -> None:
    y = _labels(800, np.random.default_rng(3))
    base = _sets(champion=False)
    good = EvalSet("golden", y, _noisy(y, 0.2, 20))
    score = independent_gate([base[0], good], FAST, golden=GoldenFloor(1, 0.70)).sets["golden"]["candidate"]
    m = FAST.margin
    ok = independent_gate([base[0], good], FAST, golden=GoldenFloor(1, score + m - 0.001))
    assert ok.passed and ok.sets["golden"]["passed"] is True
    bad = independent_gate([base[0], good], FAST, golden=GoldenFloor(1, score + m + 0.001))
    assert not bad.passed
    assert any(r.startswith("golden:") and "< floor" in r for r in bad.reasons)


def test_golden_set_with_no_rows_left_fails() -> None:
    d = independent_gate(_sets(champion=False), FAST, golden=GoldenFloor(1, 0.7))
    assert not d.passed and any("no golden row" in r for r in d.reasons)


def test_no_test_rows_fails() -> None:
    assert not independent_gate([], FAST).passed
    empty = EvalSet("test", np.zeros(0, dtype=int), np.zeros(0, dtype=int))
    assert not independent_gate([empty], FAST).passed


def test_decision_is_a_json_ready_dict_and_reproducible() -> None:
    import json

    sets = _sets()
    a, b = independent_gate(sets, FAST).as_dict(), independent_gate(sets, FAST).as_dict()
    assert a == b
    json.dumps(a)
    assert set(a) >= {"passed", "reasons", "deltas", "sets", "params"}


def test_reported_scores_are_read_not_trusted() -> None:
    assert reported_scores({"test": {"macro_f1": 0.99}, "n": 3}) == {"test": 0.99, "n": None}
