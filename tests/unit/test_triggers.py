"""Unit tests of the retraining triggers (cooldown, daily budget) and the job records they read."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from nfl_mlops.db import RetrainingJob, session_scope
from nfl_mlops.monitoring.triggers import (
    JobRecord,
    create_job,
    job_history,
    retraining_allowed,
    update_job,
)

NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _job(minutes_ago: float, trigger: str = "automation", status: str = "completed") -> JobRecord:
    return JobRecord(uuid.uuid4().hex[:16], NOW - timedelta(minutes=minutes_ago), trigger, status)


# --------------------------------------------------------------------------------------------
# retraining_allowed (pure)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trigger", ["manual", "api", "sdk"])
def test_manual_requests_always_allowed(trigger: str) -> None:
    busy = [_job(1, "automation", "running"), *[_job(10 * i, "schedule") for i in range(10)]]
    decision = retraining_allowed(NOW, trigger, busy, cooldown=HOUR, daily_budget=0)
    assert decision.allowed is True
    assert trigger in decision.reason


@pytest.mark.parametrize("trigger", ["automation", "schedule"])
def test_automatic_allowed_with_no_history(trigger: str) -> None:
    assert retraining_allowed(NOW, trigger, [], cooldown=HOUR, daily_budget=3).allowed is True


@pytest.mark.parametrize("trigger", ["automation", "schedule"])
def test_automatic_blocked_within_cooldown(trigger: str) -> None:
    decision = retraining_allowed(
        NOW, trigger, [_job(20, "automation", "running")], cooldown=HOUR, daily_budget=10
    )
    assert decision.allowed is False
    assert decision.reason.startswith("cooldown")
    assert "40 min" in decision.reason  # 60-minute cooldown, started 20 minutes ago


def test_schedule_and_automation_share_one_cooldown() -> None:
    decision = retraining_allowed(
        NOW, "automation", [_job(5, "schedule", "scheduled")], cooldown=HOUR, daily_budget=10
    )
    assert decision.allowed is False


def test_cooldown_wait_counts_from_the_latest_start() -> None:
    history = [_job(50), _job(10), _job(30)]
    decision = retraining_allowed(NOW, "automation", history, cooldown=HOUR, daily_budget=10)
    assert decision.allowed is False
    assert "50 min" in decision.reason


def test_automatic_allowed_after_cooldown() -> None:
    decision = retraining_allowed(NOW, "automation", [_job(61)], cooldown=HOUR, daily_budget=10)
    assert decision.allowed is True


def test_cooldown_boundary_is_exclusive() -> None:
    assert retraining_allowed(NOW, "automation", [_job(60)], cooldown=HOUR, daily_budget=10).allowed is True
    assert (
        retraining_allowed(NOW, "automation", [_job(59.9)], cooldown=HOUR, daily_budget=10).allowed is False
    )


def test_skipped_jobs_do_not_count() -> None:
    history = [_job(1, "automation", "skipped"), _job(2, "schedule", "skipped")]
    assert retraining_allowed(NOW, "automation", history, cooldown=HOUR, daily_budget=1).allowed is True


def test_a_failed_retraining_backs_off_exponentially_and_bounded() -> None:
    # one failure 20 min ago: the back-off (30 min) blocks; 31 min ago it does not
    blocked = retraining_allowed(
        NOW, "automation", [_job(20, status="failed")], cooldown=timedelta(0), daily_budget=10
    )
    assert not blocked.allowed and blocked.reason.startswith("back-off") and "10 min" in blocked.reason
    assert retraining_allowed(
        NOW, "automation", [_job(31, status="failed")], cooldown=timedelta(0), daily_budget=10
    ).allowed
    # three in a row: 30 * 2^2 = 120 min from the last
    three = [_job(100, status="failed"), _job(200, status="failed"), _job(300, status="failed")]
    assert not retraining_allowed(NOW, "automation", three, cooldown=timedelta(0), daily_budget=10).allowed
    assert retraining_allowed(
        NOW + timedelta(minutes=21), "automation", three, cooldown=timedelta(0), daily_budget=10
    ).allowed
    # bounded: ten failures wait at most the cap (24 h), not 30 * 2^9 minutes
    many = [_job(60 * 24 + 1 + i, status="failed") for i in range(10)]
    assert retraining_allowed(NOW, "automation", many, cooldown=timedelta(0), daily_budget=100).allowed
    # a success ends the run of failures
    assert retraining_allowed(
        NOW,
        "automation",
        [_job(90), _job(20, status="completed"), _job(200, status="failed")],
        cooldown=timedelta(minutes=10),
        daily_budget=10,
    ).allowed


@pytest.mark.parametrize("status", ["scheduled", "running", "completed", "rejected", "rolled_back"])
def test_started_jobs_count(status: str) -> None:
    history = [_job(1, "automation", status)]
    assert retraining_allowed(NOW, "automation", history, cooldown=HOUR, daily_budget=10).allowed is False


def test_manual_jobs_do_not_count_against_automation() -> None:
    history = [_job(1, "manual", "running"), _job(2, "api", "completed")]
    assert retraining_allowed(NOW, "automation", history, cooldown=HOUR, daily_budget=1).allowed is True


def test_daily_budget_blocks_when_used_up() -> None:
    history = [_job(90), _job(180), _job(600)]  # all outside the cooldown, all within a day
    blocked = retraining_allowed(NOW, "automation", history, cooldown=HOUR, daily_budget=3)
    assert blocked.allowed is False
    assert "daily budget of 3" in blocked.reason
    assert retraining_allowed(NOW, "automation", history, cooldown=HOUR, daily_budget=4).allowed is True


def test_daily_budget_only_counts_the_last_24_hours() -> None:
    history = [_job(90), _job(60 * 25), _job(60 * 30)]
    assert retraining_allowed(NOW, "automation", history, cooldown=HOUR, daily_budget=2).allowed is True
    assert retraining_allowed(NOW, "automation", history, cooldown=HOUR, daily_budget=1).allowed is False


def test_daily_budget_counts_failed_jobs() -> None:
    history = [_job(300, status="failed"), _job(500, status="failed"), _job(240)]
    assert retraining_allowed(NOW, "automation", history, cooldown=HOUR, daily_budget=3).allowed is False
    assert retraining_allowed(NOW, "automation", history, cooldown=HOUR, daily_budget=4).allowed is True


def test_zero_cooldown_still_respects_budget() -> None:
    history = [_job(0.5)]
    assert (
        retraining_allowed(NOW, "automation", history, cooldown=timedelta(0), daily_budget=2).allowed is True
    )
    assert (
        retraining_allowed(NOW, "automation", history, cooldown=timedelta(0), daily_budget=1).allowed is False
    )


# --------------------------------------------------------------------------------------------
# create_job / update_job / job_history against the session DB
# --------------------------------------------------------------------------------------------


def _model() -> str:
    return f"triggers-{uuid.uuid4().hex[:8]}"


def test_create_job_round_trips() -> None:
    model = _model()
    job_id = create_job(model, "drift detected", "automation", {"epochs": 1}, flow_run_id="fr-1")
    [record] = job_history(model)
    assert record.id == job_id
    assert record.trigger == "automation"
    assert record.status == "scheduled"
    assert record.created_at.tzinfo is not None
    assert abs(datetime.now(UTC) - record.created_at) < timedelta(minutes=5)
    with session_scope() as s:
        row = s.get(RetrainingJob, job_id)
        assert row.reason == "drift detected"
        assert row.params == {"epochs": 1}
        assert row.flow_run_id == "fr-1"
        assert row.finished_at is None


def test_update_job_sets_status_result_and_finish_time() -> None:
    model = _model()
    job_id = create_job(model, "manual", "manual", {})
    update_job(job_id, "running", flow_run_id="fr-2")
    with session_scope() as s:
        row = s.get(RetrainingJob, job_id)
        assert (row.status, row.flow_run_id, row.finished_at) == ("running", "fr-2", None)
    update_job(job_id, "completed", result={"version": 3})
    with session_scope() as s:
        row = s.get(RetrainingJob, job_id)
        assert row.status == "completed"
        assert row.result == {"version": 3}
        assert row.flow_run_id == "fr-2"  # not cleared by an update without one
        assert row.finished_at is not None
    assert [r.status for r in job_history(model)] == ["completed"]


def test_update_unknown_job_is_a_no_op() -> None:
    update_job("does-not-exist", "completed")  # must not raise


def test_job_history_filters_by_model_and_exclude() -> None:
    model, other = _model(), _model()
    a = create_job(model, "a", "automation", {})
    b = create_job(model, "b", "schedule", {})
    create_job(other, "c", "automation", {})
    assert {r.id for r in job_history(model)} == {a, b}
    assert [r.id for r in job_history(model, exclude=a)] == [b]
    assert job_history(_model()) == []


def test_job_history_drops_old_jobs() -> None:
    model = _model()
    recent = create_job(model, "recent", "automation", {})
    old = create_job(model, "old", "automation", {})
    with session_scope() as s:
        s.get(RetrainingJob, old).created_at = datetime.now(UTC) - timedelta(days=3)
    assert [r.id for r in job_history(model)] == [recent]
    assert {r.id for r in job_history(model, days=4)} == {recent, old}


def test_history_from_db_drives_the_decision() -> None:
    model = _model()
    job_id = create_job(model, "drift", "automation", {})
    now = datetime.now(UTC)
    assert retraining_allowed(now, "automation", job_history(model), HOUR, 5).allowed is False
    # The job itself is excluded when the flow checks whether it may run.
    assert retraining_allowed(now, "automation", job_history(model, exclude=job_id), HOUR, 5).allowed is True
    update_job(job_id, "failed")  # a failure: no cooldown, but a back-off
    decision = retraining_allowed(now, "automation", job_history(model), HOUR, 5)
    assert not decision.allowed and decision.reason.startswith("back-off")
    assert retraining_allowed(now + HOUR, "automation", job_history(model), HOUR, 5).allowed is True
    update_job(job_id, "skipped")
    assert retraining_allowed(now, "automation", job_history(model), HOUR, 5).allowed is True
