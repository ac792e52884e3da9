"""Rollout gates and strategy decisions (pure), and the controller's state changes on the state DB."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from pydantic import ValidationError

from nfl_mlops.rollout.gates import (
    GateParams,
    agreement_gate,
    canary_gates,
    error_rate_gate,
    label_shift_gate,
    latency_gate,
    overall,
    total_variation,
    wilson_lower,
)
from nfl_mlops.rollout.strategies import (
    ABTestParams,
    CanaryParams,
    ShadowParams,
    canary_decision,
    initial_arms,
    shadow_decision,
)

P = GateParams()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rows(
    arm: str,
    n: int,
    label: str | list[str] = "neutral",
    latency: float | list[float] = 10.0,
    error: str | None = None,
    served: bool = True,
    prefix: str | None = None,
) -> list[dict]:
    labels = label if isinstance(label, list) else [label] * n
    lats = latency if isinstance(latency, list) else [latency] * n
    prefix = prefix or arm
    return [
        dict(
            request_id=f"{prefix}-{i}",
            arm=arm,
            served=served and error is None,
            label="" if error else labels[i],
            latency_ms=lats[i],
            error=error,
            text_hash=f"h{i}",
            model_version=1,
        )
        for i in range(n)
    ]


def frame(*parts: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([r for p in parts for r in p])


# Error rate
def test_error_rate_waits_for_min_n_then_passes():
    f = frame(rows("candidate", 9), rows("stable", 50))
    g = error_rate_gate(f, "candidate", P, min_n=10)
    assert g.passed is None and g.n == 9
    f = frame(rows("candidate", 10), rows("stable", 50))
    g = error_rate_gate(f, "candidate", P, min_n=10)
    assert g.passed is True and g.value == 0.0


def test_error_rate_fails_early_on_a_candidate_that_always_raises():
    f = frame(rows("candidate", 4, error="RuntimeError: size mismatch"), rows("stable", 40))
    g = error_rate_gate(f, "candidate", P, min_n=50)
    assert g.passed is False, g
    assert "4 of 4" in g.detail and "size mismatch" in g.detail


def test_error_rate_fails_at_min_n_above_the_limit_and_tolerates_one_error_in_100():
    bad = frame(rows("candidate", 90), rows("candidate", 10, error="boom", prefix="x"))
    assert error_rate_gate(bad, "candidate", P, min_n=100).passed is False
    ok = frame(rows("candidate", 99), rows("candidate", 1, error="boom", prefix="x"))
    g = error_rate_gate(ok, "candidate", P, min_n=100)
    assert g.passed is True and g.value == pytest.approx(0.01)


def test_wilson_lower_bound():
    assert wilson_lower(0, 10) == pytest.approx(0.0, abs=1e-12)
    assert wilson_lower(10, 10) > 0.5
    assert wilson_lower(1, 1000) < 0.001 < 1 / 1000 + 1e-9
    assert wilson_lower(0, 0) == 0.0


# Latency
def test_latency_gate_ratio_slack_and_ceiling():
    same = frame(rows("candidate", 30, latency=20.0), rows("stable", 30, latency=20.0))
    assert latency_gate(same, "candidate", "stable", P, 20).passed is True
    slow = frame(rows("candidate", 30, latency=400.0), rows("stable", 30, latency=100.0))
    g = latency_gate(slow, "candidate", "stable", P, 20)
    assert g.passed is False and "x4.00" in g.detail
    # twice as slow but within the 50 ms slack: tiny latencies are noise
    tiny = frame(rows("candidate", 30, latency=4.0), rows("stable", 30, latency=2.0))
    assert latency_gate(tiny, "candidate", "stable", P, 20).passed is True
    # above the absolute ceiling even though stable is as slow
    both_slow = frame(rows("candidate", 30, latency=3000.0), rows("stable", 30, latency=3000.0))
    assert latency_gate(both_slow, "candidate", "stable", P, 20).passed is False
    assert (
        latency_gate(frame(rows("candidate", 5), rows("stable", 30)), "candidate", "stable", P, 20).passed
        is None
    )


def test_latency_gate_counts_requests_not_rows_and_ignores_failed_rows():
    # one slow batch request of 50 texts must not outweigh 30 fast single requests
    batch = [dict(r, request_id="batch") for r in rows("candidate", 50, latency=900.0, prefix="b")]
    f = frame(rows("candidate", 30, latency=20.0), batch, rows("stable", 40, latency=20.0))
    g = latency_gate(f, "candidate", "stable", P, 20)
    assert g.n == 31 and g.passed is True, g
    errors = rows("candidate", 30, latency=5000.0, error="boom", prefix="e")
    f = frame(rows("candidate", 30, latency=20.0), errors, rows("stable", 30, latency=20.0))
    assert latency_gate(f, "candidate", "stable", P, 20).passed is True


# Label shift
def test_label_shift_same_distribution_passes_and_a_flip_fails():
    mix = ["negative"] * 30 + ["neutral"] * 50 + ["positive"] * 20
    f = frame(rows("candidate", 100, label=mix), rows("stable", 100, label=list(reversed(mix))))
    g = label_shift_gate(f, "candidate", "stable", P, 50)
    assert g.passed is True and g.value == pytest.approx(0.0)
    flipped = ["positive"] * 80 + ["neutral"] * 20
    f = frame(rows("candidate", 100, label=flipped), rows("stable", 100, label=mix))
    g = label_shift_gate(f, "candidate", "stable", P, 50)
    assert g.passed is False and g.value > 0.5 and "chi-square" in g.detail


def test_label_shift_needs_significance_not_just_distance():
    # TVD 0.2 on 10 predictions each is noise: not significant at alpha 0.01
    a = ["neutral"] * 6 + ["negative"] * 4
    b = ["neutral"] * 8 + ["negative"] * 2
    f = frame(rows("candidate", 10, label=a), rows("stable", 10, label=b))
    g = label_shift_gate(f, "candidate", "stable", P, 10)
    assert g.value == pytest.approx(0.2) and g.passed is True


def test_total_variation():
    import numpy as np

    assert total_variation(np.array([1.0, 0, 0]), np.array([0, 0, 1.0])) == 1.0
    assert total_variation(np.array([2.0, 2, 0]), np.array([1.0, 1, 0])) == 0.0


# Agreement (shadow)
def test_agreement_pairs_shadow_with_stable_on_the_same_requests():
    stable = rows("stable", 40, label="neutral", prefix="r")
    same = rows("shadow", 40, label="neutral", served=False, prefix="r")
    assert agreement_gate(frame(stable, same), "shadow", "stable", P, 30).passed is True
    half = rows("shadow", 40, label=["neutral", "positive"] * 20, served=False, prefix="r")
    g = agreement_gate(frame(stable, half), "shadow", "stable", P, 30)
    assert g.passed is False and g.value == pytest.approx(0.5)
    # other requests do not pair
    other = rows("shadow", 40, label="neutral", served=False, prefix="other")
    assert agreement_gate(frame(stable, other), "shadow", "stable", P, 30).passed is None


def test_overall():
    f = frame(rows("candidate", 30), rows("stable", 30))
    assert overall(canary_gates(f, P, 20)) == "pass"
    assert overall(canary_gates(f, P, 50)) == "wait"
    f = frame(rows("candidate", 30, error="boom"), rows("stable", 30))
    assert overall(canary_gates(f, P, 50)) == "fail"


# Strategy settings and starting traffic
def test_canary_params_validation():
    assert CanaryParams().steps == [5, 25, 50, 100]
    for bad in ([50, 25, 100], [5, 25, 50], [100], [0, 100], [5, 120]):
        with pytest.raises(ValidationError):
            CanaryParams(steps=bad)
    with pytest.raises(ValidationError):
        CanaryParams(gates={"max_error_rate": 2})
    with pytest.raises(ValidationError):
        CanaryParams(unknown=1)


def test_initial_arms():
    assert initial_arms("canary", 1, 2, CanaryParams(steps=[10, 100])) == {
        "stable": {"version": 1, "weight": 90.0},
        "candidate": {"version": 2, "weight": 10.0},
    }
    assert initial_arms("shadow", 1, 2, ShadowParams()) == {
        "stable": {"version": 1, "weight": 100.0},
        "shadow": {"version": 2, "weight": 0.0, "shadow": True},
    }
    assert initial_arms("ab_test", 1, 2, ABTestParams(traffic_split=30)) == {
        "a": {"version": 1, "weight": 70.0},
        "b": {"version": 2, "weight": 30.0},
    }
    assert initial_arms("blue_green", 1, 2) == {"stable": {"version": 2, "weight": 100.0}}


# Canary and shadow decisions
CANARY = CanaryParams(steps=[5, 25, 100], min_requests=20, max_wait_s=600)


def test_canary_holds_then_advances_then_promotes():
    few = frame(rows("candidate", 5), rows("stable", 95))
    d = canary_decision(CANARY, 0, T0, T0 + timedelta(seconds=10), few, 1, 2)
    assert d.action == "hold" and not d.terminal
    enough = frame(rows("candidate", 25), rows("stable", 95))
    d = canary_decision(CANARY, 0, T0, T0 + timedelta(seconds=10), enough, 1, 2)
    assert d.action == "advance" and d.step_index == 1
    assert d.arms == {"stable": {"version": 1, "weight": 75.0}, "candidate": {"version": 2, "weight": 25.0}}
    d = canary_decision(CANARY, 1, T0, T0 + timedelta(seconds=10), enough, 1, 2)
    assert d.action == "promote" and d.terminal
    assert d.arms == {"stable": {"version": 2, "weight": 100.0}}


def test_canary_rolls_back_on_a_failed_gate_and_on_timeout():
    broken = frame(rows("candidate", 5, error="IndexError: index out of range"), rows("stable", 95))
    d = canary_decision(CANARY, 0, T0, T0 + timedelta(seconds=1), broken, 1, 2)
    assert d.action == "rollback" and "error_rate" in d.reason and "IndexError" in d.reason
    slow = frame(rows("candidate", 25, latency=900.0), rows("stable", 95, latency=30.0))
    d = canary_decision(CANARY, 1, T0, T0 + timedelta(seconds=1), slow, 1, 2)
    assert d.action == "rollback" and "latency_p95" in d.reason and "step 2/3" in d.reason
    idle = frame(rows("candidate", 3), rows("stable", 60))
    d = canary_decision(CANARY, 0, T0, T0 + timedelta(seconds=601), idle, 1, 2)
    assert d.action == "rollback" and "without enough traffic" in d.reason


def test_shadow_decisions():
    stable = rows("stable", 40, prefix="r")
    agree = rows("shadow", 40, served=False, prefix="r")
    params = ShadowParams(min_requests=30)
    d = shadow_decision(params, T0, T0 + timedelta(seconds=5), frame(stable, agree), 1, 2)
    assert d.action == "promote" and d.arms == {"stable": {"version": 2, "weight": 100.0}}
    d = shadow_decision(
        params.model_copy(update={"promote_on_pass": False}), T0, T0, frame(stable, agree), 1, 2
    )
    assert d.action == "finish" and "v1 keeps serving" in d.reason
    disagree = rows("shadow", 40, label="positive", served=False, prefix="r")
    d = shadow_decision(params, T0, T0, frame(stable, disagree), 1, 2)
    assert d.action == "rollback" and "agreement" in d.reason
    d = shadow_decision(params, T0, T0 + timedelta(hours=2), frame(stable[:3], agree[:3]), 1, 2)
    assert d.action == "rollback" and "without enough traffic" in d.reason


# Controller on the state DB
def _log(
    rollout,
    arm: str,
    version: int,
    n: int,
    error: str | None = None,
    latency: float = 10.0,
    served: bool = True,
    at: datetime | None = None,
) -> None:
    from nfl_mlops.db import Prediction, session_scope, utcnow

    at = at or utcnow()
    with session_scope() as s:
        for i in range(n):
            rid = uuid.uuid4().hex
            s.add(
                Prediction(
                    id=rid[:16],
                    request_id=rid,
                    created_at=at,
                    model_name=rollout.model_name,
                    model_version=version,
                    rollout_id=rollout.id,
                    arm=arm,
                    served=served and error is None,
                    text=f"t{i}",
                    text_hash=f"h{i}",
                    label="" if error else "neutral",
                    confidence=0.5,
                    latency_ms=latency,
                    error=error,
                )
            )


def _model(tag: str) -> str:
    return f"ctl-{tag}-{uuid.uuid4().hex[:6]}"


def test_controller_canary_steps_and_promotes(settings):
    from nfl_mlops.rollout import controller
    from nfl_mlops.rollout import state as rollouts

    name = _model("promote")
    rollouts.activate(name, 1)
    r = controller.start_rollout(
        name, 2, "canary", params=CanaryParams(steps=[10, 50, 100], min_requests=5), driver="flow"
    )
    assert r.arms["candidate"] == {"version": 2, "weight": 10.0} and r.previous_version == 1
    assert controller.progress(r)["step"] == 1
    # no API replica heartbeats for this model: each traffic change is confirmed at its next tick
    out = controller.tick(r.id)
    assert out.decision.action == "confirm" and out.applied and not controller.awaiting(out.rollout)
    out = controller.tick(r.id)
    assert out.decision.action == "hold" and not out.applied
    _log(r, "candidate", 2, 6)
    _log(r, "stable", 1, 30)
    out = controller.tick(r.id)
    assert out.applied and out.decision.action == "advance"
    assert out.rollout.arms["candidate"]["weight"] == 50.0 and out.rollout.config["step_index"] == 1
    assert controller.awaiting(out.rollout)["what"] == "canary step 2/3 (50 %)"
    assert controller.tick(r.id).decision.action == "confirm"
    # the new step only counts rows logged since it began
    assert controller.tick(r.id).decision.action == "hold"
    _log(r, "candidate", 2, 6)
    _log(r, "stable", 1, 6)
    out = controller.tick(r.id)
    assert out.decision.action == "promote" and out.event is None  # traffic moved; champion waits
    assert out.rollout.config["phase"] == "promoting" and controller.in_progress(out.rollout)
    out = controller.tick(r.id)
    assert out.decision.action == "promote" and out.event == "rollout.promoted"
    assert out.rollout.status == "active" and out.rollout.arms == {"stable": {"version": 2, "weight": 100.0}}
    assert out.payload["deployment_id"] == r.id and out.payload["version"] == 2
    events = [h["event"] for h in rollouts.get_rollout(r.id).history]
    assert events == ["activated", "traffic", "promoted"]
    assert not controller.in_progress(rollouts.get_rollout(r.id))
    assert controller.tick(r.id).applied is False  # ended: nothing more to do


def test_controller_rolls_back_a_failing_canary_and_records_why(settings):
    from nfl_mlops.rollout import controller
    from nfl_mlops.rollout import state as rollouts

    name = _model("rollback")
    rollouts.activate(name, 1)
    r = controller.start_rollout(name, 2, "canary", params=CanaryParams(min_requests=50))
    assert controller.tick(r.id).decision.action == "confirm"  # no replica to wait for
    _log(r, "candidate", 2, 5, error="IndexError: index out of range in self")
    out = controller.tick(r.id)
    assert out.applied and out.event == "rollout.rolled_back"
    assert out.rollout.status == "rolled_back" and "error_rate" in out.rollout.reason
    assert out.serving.version == 1 and out.serving.status == "active" and out.serving.strategy == "rollback"
    assert rollouts.active_rollout(name).id == out.serving.id
    last = rollouts.get_rollout(r.id).history[-1]
    assert last["event"] == "rolled_back" and any(
        g["name"] == "error_rate" and g["passed"] is False for g in last["gates"]
    )
    assert out.payload["restored_version"] == 1


def test_controller_refuses_overlapping_rollouts_and_compare_and_set(settings):
    from nfl_mlops.rollout import controller
    from nfl_mlops.rollout import state as rollouts

    name = _model("cas")
    with pytest.raises(rollouts.RolloutError, match="needs a version serving"):
        controller.start_rollout(name, 2, "canary")
    rollouts.activate(name, 1)
    with pytest.raises(rollouts.RolloutError, match="already the serving version"):
        controller.start_rollout(name, 1, "shadow")
    r = controller.start_rollout(name, 2, "shadow", params=ShadowParams(min_requests=5))
    with pytest.raises(rollouts.RolloutConflict, match="in progress"):
        controller.start_rollout(name, 3, "canary")
    with pytest.raises(rollouts.RolloutConflict, match="in progress"):
        controller.start_rollout(name, 3, "blue_green")
    rev = rollouts.revision(r)
    rollouts.transition(r.id, rev, config={"note": "first"})
    with pytest.raises(rollouts.RolloutConflict):
        rollouts.transition(r.id, rev, config={"note": "second"})
    with pytest.raises(rollouts.RolloutConflict):
        rollouts.return_to_previous(r.id, "stale", expected_revision=rev)
    assert rollouts.get_rollout(r.id).status == "active"


def test_retraining_canary_tolerates_a_label_shift_but_not_errors_or_slowness():
    """A challenger retrained on drifted traffic labels it differently from the stale champion: the
    retraining canary lets that through (the default canary does not), and still stops errors and
    a slow candidate."""
    from nfl_mlops.rollout.strategies import retraining_canary

    params = retraining_canary()
    assert params.steps[-1] == 100 and params.gates.max_label_tvd == 1.0
    shifted = frame(rows("candidate", 60, label="positive"), rows("stable", 60, label="negative"))
    assert overall(canary_gates(shifted, P, 30)) == "fail"
    assert overall(canary_gates(shifted, params.gates, 30)) == "pass"
    broken = frame(rows("candidate", 30, error="RuntimeError: boom"), rows("stable", 60))
    assert overall(canary_gates(broken, params.gates, 30)) == "fail"
    slow = frame(rows("candidate", 60, latency=900.0), rows("stable", 60, latency=20.0))
    assert overall(canary_gates(slow, params.gates, 30)) == "fail"
