"""Unit tests of the promotion quality gate (pure)."""

from __future__ import annotations

import pytest

from nfl_mlops.registry.gate import Comparison, GateDecision, quality_gate


def _cmp(name: str, cand: float | None, champ: float | None, metric: str = "macro_f1") -> Comparison:
    candidate = {} if cand is None else {metric: cand, "accuracy": 0.5}
    champion = None if champ is None else {metric: champ, "accuracy": 0.5}
    return Comparison(name=name, candidate=candidate, champion=champion, n=100)


def test_first_version_without_champion_passes() -> None:
    decision = quality_gate([_cmp("test", 0.42, None)])
    assert isinstance(decision, GateDecision)
    assert decision.passed is True
    assert decision.deltas == {}
    assert len(decision.reasons) == 1 and "no champion" in decision.reasons[0]
    assert decision.reasons[0].startswith("test:")


def test_first_version_below_min_score_fails() -> None:
    decision = quality_gate([_cmp("test", 0.42, None)], min_score=0.5)
    assert decision.passed is False
    assert any("minimum 0.5000" in r and r.startswith("test:") for r in decision.reasons)


def test_min_score_met_passes() -> None:
    assert quality_gate([_cmp("test", 0.55, None)], min_score=0.5).passed is True
    assert quality_gate([_cmp("test", 0.50, None)], min_score=0.5).passed is True  # boundary: not below


def test_min_score_applies_even_when_better_than_champion() -> None:
    decision = quality_gate([_cmp("test", 0.45, 0.40)], min_score=0.5)
    assert decision.passed is False
    assert decision.deltas["test"] == pytest.approx(0.05)


def test_better_candidate_passes() -> None:
    decision = quality_gate([_cmp("test", 0.70, 0.65)])
    assert decision.passed is True
    assert decision.deltas == {"test": pytest.approx(0.05)}


def test_candidate_within_tolerance_passes() -> None:
    decision = quality_gate([_cmp("test", 0.695, 0.70)], tolerance=0.01)
    assert decision.passed is True
    assert decision.deltas["test"] == pytest.approx(-0.005)


def test_candidate_worse_beyond_tolerance_fails_naming_the_set() -> None:
    decision = quality_gate([_cmp("test", 0.68, 0.70)], tolerance=0.01)
    assert decision.passed is False
    assert decision.deltas["test"] == pytest.approx(-0.02)
    [reason] = decision.reasons
    assert reason.startswith("test:")
    assert "below champion" in reason and "0.0200" in reason


def test_tolerance_zero_rejects_any_drop() -> None:
    assert quality_gate([_cmp("test", 0.699, 0.70)], tolerance=0.0).passed is False
    assert quality_gate([_cmp("test", 0.70, 0.70)], tolerance=0.0).passed is True


def test_larger_tolerance_accepts_a_bigger_drop() -> None:
    comps = [_cmp("test", 0.66, 0.70)]
    assert quality_gate(comps, tolerance=0.01).passed is False
    assert quality_gate(comps, tolerance=0.05).passed is True


def test_failing_one_of_several_sets_fails() -> None:
    decision = quality_gate([_cmp("test", 0.72, 0.70), _cmp("recent", 0.50, 0.60)])
    assert decision.passed is False
    assert decision.deltas == {"test": pytest.approx(0.02), "recent": pytest.approx(-0.10)}
    failing = [r for r in decision.reasons if "below champion" in r]
    assert len(failing) == 1 and failing[0].startswith("recent:")
    assert any(r.startswith("test:") and "below" not in r for r in decision.reasons)


def test_order_of_sets_does_not_matter() -> None:
    a, b = _cmp("test", 0.72, 0.70), _cmp("recent", 0.50, 0.60)
    assert quality_gate([a, b]).passed is quality_gate([b, a]).passed is False


def test_all_sets_ok_passes() -> None:
    decision = quality_gate([_cmp("test", 0.72, 0.70), _cmp("recent", 0.61, 0.60)])
    assert decision.passed is True
    assert set(decision.deltas) == {"test", "recent"}
    assert len(decision.reasons) == 2


def test_missing_metric_fails() -> None:
    decision = quality_gate([_cmp("test", None, 0.70)])
    assert decision.passed is False
    assert decision.reasons == ["test: candidate has no macro_f1"]
    assert decision.deltas == {}


def test_missing_metric_on_one_set_fails_even_if_others_pass() -> None:
    decision = quality_gate([_cmp("test", 0.9, 0.7), _cmp("recent", None, 0.7)])
    assert decision.passed is False
    assert "recent: candidate has no macro_f1" in decision.reasons


def test_metric_argument_selects_the_metric() -> None:
    comp = Comparison("test", candidate={"macro_f1": 0.9, "accuracy": 0.6},
                      champion={"macro_f1": 0.5, "accuracy": 0.8})
    assert quality_gate([comp], metric="macro_f1").passed is True
    acc = quality_gate([comp], metric="accuracy")
    assert acc.passed is False
    assert acc.deltas["test"] == pytest.approx(-0.2)
    assert "accuracy" in acc.reasons[0]


def test_champion_without_the_metric_counts_as_no_champion() -> None:
    comp = Comparison("test", candidate={"macro_f1": 0.3}, champion={"accuracy": 0.9})
    decision = quality_gate([comp])
    assert decision.passed is True
    assert decision.deltas == {}
    assert "no champion" in decision.reasons[0]


def test_empty_comparisons_fails() -> None:
    decision = quality_gate([])
    assert decision.passed is False
    assert decision.reasons and "no evaluation set" in decision.reasons[0]


def test_as_dict_round_trips() -> None:
    d = quality_gate([_cmp("test", 0.68, 0.70)]).as_dict()
    assert d["passed"] is False
    assert d["deltas"]["test"] == pytest.approx(-0.02)
    assert isinstance(d["reasons"], list) and len(d["reasons"]) == 1


def test_nan_candidate_metric_fails_like_a_missing_one() -> None:
    nan = float("nan")
    against_champion = quality_gate([Comparison("test", {"macro_f1": nan}, {"macro_f1": 0.7})])
    assert against_champion.passed is False
    assert against_champion.reasons == ["test: candidate has no macro_f1 (NaN)"]
    first_version = quality_gate([Comparison("test", {"macro_f1": nan}, None)], min_score=0.5)
    assert first_version.passed is False
