"""A/B statistics (pure): z-test, verdicts, the Bayesian probability, the end-of-test decision; outcomes from the log."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from nfl_mlops.rollout.abtest import (
    ArmOutcome,
    ab_decision,
    ab_verdict,
    diff_interval,
    prob_b_better,
    two_proportion_ztest,
)
from nfl_mlops.rollout.strategies import ABTestParams

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def arm(name: str, labelled: int, correct: int, version: int | None = None) -> ArmOutcome:
    return ArmOutcome(name, version or (1 if name == "a" else 2), labelled + 10, labelled, correct)


def test_ztest_known_value_and_agrees_with_chi_square():
    from scipy.stats import chi2_contingency

    z, p = two_proportion_ztest(50, 100, 65, 100)
    assert z == pytest.approx(2.1456, abs=1e-3)
    assert p == pytest.approx(0.0319, abs=1e-3)
    chi = chi2_contingency(np.array([[50, 50], [65, 35]]), correction=False)
    assert p == pytest.approx(chi.pvalue, rel=1e-9)
    assert chi.statistic == pytest.approx(z * z, rel=1e-9)
    z2, p2 = two_proportion_ztest(65, 100, 50, 100)
    assert z2 == pytest.approx(-z) and p2 == pytest.approx(p)


def test_ztest_degenerate_inputs():
    assert two_proportion_ztest(0, 0, 5, 10) == (0.0, 1.0)
    assert two_proportion_ztest(10, 10, 20, 20) == (0.0, 1.0)  # both perfect: no variance
    assert two_proportion_ztest(0, 10, 0, 20) == (0.0, 1.0)


def test_diff_interval_contains_the_difference_and_narrows_with_n():
    lo, hi = diff_interval(50, 100, 65, 100, 0.05)
    assert lo < 0.15 < hi and lo > 0  # significant at 5 %: the interval excludes 0
    lo2, hi2 = diff_interval(500, 1000, 650, 1000, 0.05)
    assert hi2 - lo2 < hi - lo


def test_prob_b_better():
    assert prob_b_better(50, 100, 50, 100) == pytest.approx(0.5, abs=1e-3)
    assert prob_b_better(50, 100, 80, 100) > 0.999
    assert prob_b_better(80, 100, 50, 100) < 0.001
    # the normal approximation (large n) and the grid agree near the switch
    grid = prob_b_better(1000, 1990, 1040, 2000)
    normal = prob_b_better(1010, 2010, 1050, 2010)
    assert abs(grid - normal) < 0.05 and 0.5 < grid < 1


def test_verdict_needs_min_samples_per_arm():
    v = ab_verdict(arm("a", 20, 10), arm("b", 20, 19), alpha=0.05, min_samples=30)
    assert v.decision == "no_difference_yet" and v.winner is None and not v.enough_data
    assert "30 per arm" in v.reason
    final = ab_verdict(arm("a", 20, 10), arm("b", 20, 19), alpha=0.05, min_samples=30, final=True)
    assert final.decision == "no_difference" and final.final


@pytest.mark.parametrize(
    ("ca", "cb", "decision", "winner"),
    [
        (50, 80, "b_better", "b"),
        (80, 50, "a_better", "a"),
        (60, 64, "no_difference_yet", None),
    ],
)
def test_verdict_declares_a_winner_only_when_significant(ca, cb, decision, winner):
    v = ab_verdict(arm("a", 100, ca), arm("b", 100, cb), alpha=0.05, min_samples=50)
    assert v.decision == decision and v.winner == winner
    assert v.enough_data and v.significant == (winner is not None)
    assert v.accuracy_diff == pytest.approx((cb - ca) / 100)
    assert v.ci[0] < v.accuracy_diff < v.ci[1]
    assert (v.p_value < 0.05) == v.significant
    d = v.as_dict()
    assert set(d) >= {"decision", "winner", "p_value", "z", "ci", "prob_b_better", "reason"}
    assert all(isinstance(x, float) for x in d["ci"])


def test_verdict_false_positive_rate_is_about_alpha():
    """Under H0 (both arms 70 % accurate) a 5 % test declares a winner in about 5 % of experiments."""
    rng = np.random.default_rng(0)
    wins = 0
    trials = 2000
    for _ in range(trials):
        xa, xb = rng.binomial(200, 0.7), rng.binomial(200, 0.7)
        wins += (
            ab_verdict(
                ArmOutcome("a", 1, 200, 200, int(xa)), ArmOutcome("b", 2, 200, 200, int(xb)), 0.05, 100
            ).winner
            is not None
        )
    assert 0.03 < wins / trials < 0.07


def test_ab_decision_holds_until_the_end_then_the_winner_takes_all():
    params = ABTestParams(traffic_split=50, duration_days=7, min_samples=50)
    ends = T0 + timedelta(days=7)
    b_wins = {"a": arm("a", 100, 50), "b": arm("b", 100, 80)}
    d = ab_decision(params, ends, T0 + timedelta(days=1), b_wins)
    assert d.action == "hold" and "B is better" in d.reason
    d = ab_decision(params, ends, ends, b_wins)
    assert d.action == "promote" and d.arms == {"stable": {"version": 2, "weight": 100.0}}
    assert d.extra["winner"] == "b" and d.extra["verdict"]["decision"] == "b_better"
    d = ab_decision(params.model_copy(update={"promote_winner": False}), ends, ends, b_wins)
    assert d.action == "finish" and "promote_winner is false" in d.reason
    a_wins = {"a": arm("a", 100, 80), "b": arm("b", 100, 50)}
    d = ab_decision(params, ends, ends, a_wins)
    assert d.action == "finish" and d.extra["winner"] == "a" and "v1 (A) keeps serving" in d.reason
    d = ab_decision(params, ends, ends, {"a": arm("a", 10, 5), "b": arm("b", 10, 9)})
    assert d.action == "finish" and d.extra["verdict"]["decision"] == "no_difference"


def test_outcomes_count_served_labelled_and_correct_predictions(settings):
    from nfl_mlops.db import Prediction, session_scope, utcnow
    from nfl_mlops.rollout import abtest, controller
    from nfl_mlops.rollout import state as rollouts

    name = f"ab-{uuid.uuid4().hex[:6]}"
    rollouts.activate(name, 1)
    r = controller.start_rollout(
        name, 2, "ab_test", params=ABTestParams(traffic_split=30, duration_days=1), test_name=f"t-{name}"
    )
    assert r.arms == {"a": {"version": 1, "weight": 70.0}, "b": {"version": 2, "weight": 30.0}}
    test = abtest.ab_test_for_rollout(r.id)
    assert test.test_name == f"t-{name}" and test.status == "running"
    assert test.ends_at - test.created_at == timedelta(days=1)
    assert r.config["ab_test_id"] == test.id and r.previous_version == 1
    plan = [
        ("a", "neutral", "neutral", True),
        ("a", "neutral", "positive", True),
        ("a", "neutral", None, True),
        ("b", "positive", "positive", True),
        ("b", "positive", "positive", True),
        ("b", "negative", None, False),  # a failed B attempt: not served, not counted
        ("stable", "neutral", "neutral", True),
    ]  # another arm name: ignored
    with session_scope() as s:
        for arm_name, label, truth, served in plan:
            rid = uuid.uuid4().hex
            s.add(
                Prediction(
                    id=rid[:16],
                    request_id=rid,
                    created_at=utcnow(),
                    model_name=name,
                    model_version=1,
                    rollout_id=r.id,
                    arm=arm_name,
                    served=served,
                    text="x",
                    text_hash="h",
                    label=label,
                    confidence=0.9,
                    latency_ms=5.0,
                    true_label=truth,
                )
            )
    got = abtest.outcomes(test)
    assert got["a"] == ArmOutcome("a", 1, 3, 2, 1)
    assert got["b"] == ArmOutcome("b", 2, 2, 2, 2)
    assert math.isclose(got["b"].accuracy, 1.0)
    rep = abtest.report(test)
    assert rep["arms"]["a"]["accuracy"] == 0.5 and rep["verdict"]["decision"] == "no_difference_yet"
    assert rep["duration_over"] is False
    # the start is confirmed at once (no API replica heartbeats here), then the gates judge it
    first = controller.tick(r.id)
    assert first.applied and first.decision.action == "confirm" and first.rollout.config["awaiting"] is None
    # after the duration the controller ends it: too few labels -> A keeps serving
    out = controller.tick(r.id, now=test.ends_at + timedelta(seconds=1))
    assert out.applied and out.decision.action == "finish" and out.event == "rollout.completed"
    assert out.rollout.status == "completed" and out.serving.version == 1
    done = abtest.get_ab_test(test.id)
    assert done.status == "completed" and done.winner is None and done.finished_at is not None
