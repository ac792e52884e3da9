"""Unit tests of rollout records (activate, supersede, rollback) and of traffic splitting."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from nfl_mlops.rollout.state import (
    RolloutError,
    RolloutNotFound,
    activate,
    active_rollout,
    choose_arm,
    get_rollout,
    list_rollouts,
    rollback,
)


def _model() -> str:
    return f"rollout-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------------------------
# choose_arm (pure)
# --------------------------------------------------------------------------------------------

CANARY = {"stable": {"version": 1, "weight": 75}, "candidate": {"version": 2, "weight": 25}}


def test_choose_arm_is_sticky_per_key() -> None:
    for i in range(200):
        key = f"user-{i}"
        first = choose_arm(CANARY, key, request_id=uuid.uuid4().hex)
        assert all(choose_arm(CANARY, key, request_id=uuid.uuid4().hex) == first for _ in range(5))


def test_choose_arm_without_key_uses_request_id() -> None:
    rid = "req-123"
    assert choose_arm(CANARY, None, rid) == choose_arm(CANARY, None, rid)
    seen = {choose_arm(CANARY, None, f"req-{i}") for i in range(200)}
    assert seen == {"stable", "candidate"}


def test_choose_arm_respects_weights() -> None:
    counts = Counter(choose_arm(CANARY, f"user-{i}", "r") for i in range(10_000))
    share = counts["candidate"] / 10_000
    assert 0.23 <= share <= 0.27, counts
    assert counts["stable"] + counts["candidate"] == 10_000


def test_choose_arm_three_way_split() -> None:
    arms = {"a": {"weight": 50}, "b": {"weight": 30}, "c": {"weight": 20}}
    counts = Counter(choose_arm(arms, f"k{i}", "r") for i in range(10_000))
    for name, expected in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert abs(counts[name] / 10_000 - expected) <= 0.02, counts


def test_choose_arm_zero_weight_never_serves() -> None:
    arms = {"stable": {"version": 1, "weight": 100}, "candidate": {"version": 2, "weight": 0}}
    assert {choose_arm(arms, f"k{i}", "r") for i in range(2000)} == {"stable"}


def test_choose_arm_never_chooses_shadow() -> None:
    arms = {"stable": {"version": 1, "weight": 10}, "shadow": {"version": 2, "weight": 90, "shadow": True}}
    assert {choose_arm(arms, f"k{i}", "r") for i in range(2000)} == {"stable"}


def test_choose_arm_errors_without_serving_arm() -> None:
    with pytest.raises(RolloutError, match="no serving arm"):
        choose_arm({"shadow": {"version": 2, "weight": 100, "shadow": True}}, "k", "r")
    with pytest.raises(RolloutError):
        choose_arm({}, "k", "r")
    with pytest.raises(RolloutError):
        choose_arm({"stable": {"version": 1, "weight": 0}}, "k", "r")


# --------------------------------------------------------------------------------------------
# activate / rollback / list (session DB)
# --------------------------------------------------------------------------------------------


def test_first_activation_defaults_to_all_traffic_on_version() -> None:
    model = _model()
    r = activate(model, 1, reason="first")
    assert r.status == "active"
    assert r.strategy == "blue_green"
    assert r.previous_version is None
    assert r.arms == {"stable": {"version": 1, "weight": 100.0}}
    assert r.history[0]["event"] == "activated" and r.history[0]["version"] == 1
    assert active_rollout(model).id == r.id
    assert get_rollout(r.id).version == 1


def test_activate_supersedes_previous_and_records_previous_version() -> None:
    model = _model()
    first = activate(model, 1)
    second = activate(model, 2, reason="better")
    assert second.previous_version == 1
    assert get_rollout(first.id).status == "superseded"
    assert get_rollout(first.id).history[-1]["event"] == "superseded"
    assert active_rollout(model).id == second.id
    active = [r for r in list_rollouts(model) if r.status == "active"]
    assert [r.id for r in active] == [second.id]


def test_previous_version_is_the_stable_arm_of_a_canary() -> None:
    model = _model()
    activate(model, 1)
    canary = activate(
        model,
        2,
        strategy="canary",
        arms={"stable": {"version": 1, "weight": 90}, "candidate": {"version": 2, "weight": 10}},
    )
    assert canary.previous_version == 1
    promoted = activate(model, 2, reason="canary promoted")
    assert promoted.previous_version == 1  # what served before the canary started, not 2


def test_environments_are_independent() -> None:
    model = _model()
    prod = activate(model, 1)
    staging = activate(model, 5, environment="staging")
    assert staging.previous_version is None
    assert get_rollout(prod.id).status == "active"
    assert active_rollout(model, "staging").version == 5
    assert active_rollout(model).version == 1


def test_unknown_strategy_is_refused() -> None:
    model = _model()
    with pytest.raises(RolloutError, match="unknown strategy"):
        activate(model, 1, strategy="yolo")
    assert active_rollout(model) is None


def test_rollback_returns_to_previous_version() -> None:
    model = _model()
    activate(model, 1)
    bad = activate(model, 2)
    new = rollback(bad.id, reason="errors up")
    assert new.version == 1
    assert new.strategy == "rollback"
    assert new.status == "active"
    assert new.arms == {"stable": {"version": 1, "weight": 100.0}}
    assert "errors up" in new.reason and bad.id in new.reason
    old = get_rollout(bad.id)
    assert old.status == "rolled_back"
    assert old.history[-1]["event"] == "rolled_back"
    assert active_rollout(model).id == new.id


def test_rollback_of_non_active_rollout_is_refused() -> None:
    model = _model()
    activate(model, 1)
    second = activate(model, 2)
    activate(model, 3)
    with pytest.raises(RolloutError, match="superseded"):
        rollback(second.id)
    assert active_rollout(model).version == 3


def test_rollback_twice_is_refused() -> None:
    model = _model()
    activate(model, 1)
    bad = activate(model, 2)
    rollback(bad.id)
    with pytest.raises(RolloutError):
        rollback(bad.id)


def test_rollback_of_first_rollout_is_refused() -> None:
    model = _model()
    first = activate(model, 1)
    with pytest.raises(RolloutError, match="no previous version") as exc:
        rollback(first.id)
    assert not isinstance(exc.value, RolloutNotFound)
    assert get_rollout(first.id).status == "active"  # unchanged


def test_rollback_unknown_id() -> None:
    with pytest.raises(RolloutNotFound):
        rollback("no-such-rollout")
    with pytest.raises(RolloutNotFound):
        get_rollout("no-such-rollout")
    with pytest.raises(LookupError):  # RolloutNotFound is also a LookupError
        rollback("no-such-rollout")


def test_list_rollouts_filters_by_model_newest_first() -> None:
    model, other = _model(), _model()
    ids = [activate(model, v).id for v in (1, 2, 3)]
    activate(other, 1)
    listed = list_rollouts(model)
    assert [r.id for r in listed] == ids[::-1]
    assert [r.version for r in listed] == [3, 2, 1]
    assert [r.status for r in listed] == ["active", "superseded", "superseded"]
    assert all(r.model_name == model for r in listed)
    assert len(list_rollouts(model, limit=2)) == 2
    assert {model, other} <= {r.model_name for r in list_rollouts()}


def test_no_active_rollout_for_unknown_model() -> None:
    assert active_rollout(_model()) is None
    assert list_rollouts(_model()) == []


def test_a_manual_rollback_retries_when_a_driver_wrote_first(monkeypatch) -> None:
    """A replica's driver recording a gate check between the rollback's read and write makes the write's
    compare-and-set fail; a person's rollback is read again and retried instead of answering 409."""
    from nfl_mlops.rollout import state

    model = _model()
    activate(model, 1)
    bad = activate(model, 2)
    real_cas, raced = state._cas, []

    def cas_after_a_driver(s, row, **values):
        if not raced:  # what the UPDATE finds when a driver's write landed first: the revision moved
            raced.append(True)
            raise state.RolloutConflict(f"deployment {row.id} moved since it was read")
        return real_cas(s, row, **values)

    monkeypatch.setattr(state, "_cas", cas_after_a_driver)
    new = rollback(bad.id, reason="a person")
    assert raced == [True] and new.version == 1 and active_rollout(model).id == new.id
    assert get_rollout(bad.id).status == "rolled_back"
