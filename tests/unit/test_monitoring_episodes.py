"""Drift episodes: the rule (pure), back-off (pure), and the state-DB invariants under concurrency
(one open episode per version, one retraining per episode) on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from nfl_mlops.db import MonitoringRun, RetrainingJob, session_scope
from nfl_mlops.monitoring import episodes as ep
from nfl_mlops.monitoring.episodes import Check, EpisodeRule, backoff, simulate

A, C = Check(alarm=True, drift_share=0.4), Check(alarm=False, drift_share=0.1)
STRONG = Check(alarm=True, drift_share=0.9)


# --------------------------------------------------------------------------------------------
# The rule (pure)
# --------------------------------------------------------------------------------------------


def test_one_alarm_is_not_an_episode_two_in_a_row_are() -> None:
    rule = EpisodeRule(persistence=2, strong_share=0.75, clear_checks=3)
    assert rule.should_open([C, A])[0] is False
    assert rule.should_open([A, C])[0] is False
    opened, why = rule.should_open([C, A, A])
    assert opened and "2 consecutive" in why


def test_a_strong_alarm_opens_at_once() -> None:
    rule = EpisodeRule(persistence=3, strong_share=0.75)
    assert rule.should_open([C, STRONG])[0] is True
    assert rule.should_open([C, Check(alarm=True, drift_share=0.74)])[0] is False


def test_close_needs_consecutive_clear_checks() -> None:
    rule = EpisodeRule(clear_checks=2)
    assert rule.should_close([A, C])[0] is False
    assert rule.should_close([A, C, C])[0] is True
    assert rule.should_close([C, C, A])[0] is False


def test_simulate_counts_flickering_noise_once_per_persistent_run() -> None:
    checks = [C, A, C, A, C, A, A, A, C, C, C, A, C]
    assert simulate(checks, EpisodeRule(persistence=2, strong_share=None, clear_checks=3)) == [(6, 10)]
    assert len(simulate(checks, EpisodeRule(persistence=1, strong_share=None, clear_checks=1))) == 4
    assert simulate([C, STRONG, C], EpisodeRule(persistence=2, strong_share=None)) == []


def test_rule_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        EpisodeRule(persistence=0)
    with pytest.raises(ValueError):
        EpisodeRule(strong_share=0.0)


def test_backoff_is_exponential_and_bounded() -> None:
    assert backoff(0) == timedelta(0)
    assert [backoff(n, 30, 1440).total_seconds() / 60 for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff(20, 30, 1440) == timedelta(minutes=1440)


# --------------------------------------------------------------------------------------------
# State DB (the session's SQLite, and PostgreSQL when one listens)
# --------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, settings) -> str:
    """The session's SQLite, and a throwaway PostgreSQL database (conftest's `postgres_url`: skipped where
    none listens, a failure under CI)."""
    if request.param == "sqlite":
        return settings.db_url
    return request.getfixturevalue("postgres_url")


def _model() -> str:
    return f"episodes-{uuid.uuid4().hex[:8]}"


def _run(db_url: str, model: str, version: int, alarm: bool, share: float, at: datetime) -> str:
    with session_scope(db_url) as s:
        row = MonitoringRun(
            model_name=model,
            model_version=version,
            drift_share=share,
            drift_detected=alarm,
            summary={"alarm": alarm, "performance_degraded": False},
            created_at=at,
        )
        s.add(row)
        s.flush()
        return row.id


def _threads(n: int, fn) -> list:
    barrier = threading.Barrier(n)
    out: list = [None] * n
    errors: list = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            out[i] = fn(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return out


def test_concurrent_opens_make_one_episode(db_url: str) -> None:
    model = _model()
    results = _threads(8, lambda i: ep.open_episode(model, 1, "stable", "drift", f"drift {i}", None, db_url))
    assert sum(created for _, created in results) == 1
    assert len({info.id for info, _ in results}) == 1
    assert [e.id for e in ep.open_episodes(model, db_url)] == [results[0][0].id]
    # once closed, the version can open a new one
    assert ep.close_episode(results[0][0].id, "signals clear", db_url)
    assert not ep.close_episode(results[0][0].id, "again", db_url)
    again, created = ep.open_episode(model, 1, "stable", "drift", "drift again", None, db_url)
    assert created and again.id != results[0][0].id


def test_one_episode_starts_one_retraining_under_concurrent_claims(db_url: str) -> None:
    model = _model()
    episode, _ = ep.open_episode(model, 3, "stable", "drift", "drift", None, db_url)
    jobs = [f"job{i:02d}{uuid.uuid4().hex[:6]}" for i in range(10)]
    won = _threads(10, lambda i: ep.claim(episode.id, jobs[i], db_url=db_url))
    assert sum(won) == 1
    assert ep.get_episode(episode.id, db_url).retraining_job_id == jobs[won.index(True)]


def test_failed_retraining_releases_with_backoff_and_attempts_run_out(db_url: str) -> None:
    model = _model()
    episode, _ = ep.open_episode(model, 2, "stable", "degraded", "degraded", None, db_url)
    now = datetime.now(UTC)
    assert ep.claim(episode.id, "j1", now, max_attempts=2, db_url=db_url)
    assert ep.release_failed(episode.id, "someone-else", now, db_url=db_url).attempts == 0  # not its claim
    info = ep.release_failed(episode.id, "j1", now, base_minutes=30, db_url=db_url)
    assert info.attempts == 1 and info.retraining_job_id is None
    assert abs(info.next_attempt_at - (now + timedelta(minutes=30))) < timedelta(seconds=2)
    assert not ep.retry_due(info, now + timedelta(minutes=29))
    assert not ep.claim(episode.id, "j2", now + timedelta(minutes=29), max_attempts=2, db_url=db_url)
    assert ep.retry_due(info, now + timedelta(minutes=31), max_attempts=2)
    assert ep.claim(episode.id, "j2", now + timedelta(minutes=31), max_attempts=2, db_url=db_url)
    info = ep.release_failed(episode.id, "j2", now + timedelta(minutes=31), base_minutes=30, db_url=db_url)
    assert info.attempts == 2  # 60 min back-off, and attempts are used up
    assert not ep.claim(episode.id, "j3", now + timedelta(days=2), max_attempts=2, db_url=db_url)


def test_advance_opens_by_persistence_and_closes_on_clear_checks(settings) -> None:
    db_url = settings.db_url
    model, rule = _model(), EpisodeRule(persistence=2, strong_share=0.9, clear_checks=2)
    t0 = datetime.now(UTC) - timedelta(hours=10)

    def check(i: int, alarm: bool, share: float) -> ep.EpisodeStep:
        run = _run(db_url, model, 1, alarm, share, t0 + timedelta(hours=i))
        return ep.advance(
            model,
            1,
            "stable",
            alarm,
            "drift",
            "drift",
            run,
            rule,
            db_url,
            now=t0 + timedelta(hours=i, minutes=1),
        )

    assert check(0, True, 0.4).action == "pending"
    assert check(1, False, 0.1).action == "clear"
    assert check(2, True, 0.4).action == "pending"
    step = check(3, True, 0.4)
    assert step.action == "opened" and step.emit and step.episode.first_run_id
    assert check(4, True, 0.5).action == "continued"  # no retraining claimed yet: still due
    assert ep.claim(step.episode.id, "job-x", db_url=db_url)
    cont = check(5, True, 0.5)
    assert cont.action == "continued" and not cont.emit  # its retraining runs: no new event
    assert check(6, False, 0.1).action == "open"
    closed = check(7, False, 0.1)
    assert closed.action == "closed" and "2 consecutive" in closed.episode.close_reason
    assert ep.open_episodes(model, db_url) == []


def test_close_stale_closes_versions_that_no_longer_serve(settings) -> None:
    model = _model()
    old, _ = ep.open_episode(model, 1, "stable", "drift", "drift", None, settings.db_url)
    keep, _ = ep.open_episode(model, 2, "candidate", "drift", "drift", None, settings.db_url)
    closed = ep.close_stale(model, [2, 3], settings.db_url)
    assert [e.id for e in closed] == [old.id] and closed[0].retrained_version == 3
    assert [e.id for e in ep.open_episodes(model, settings.db_url)] == [keep.id]


# --------------------------------------------------------------------------------------------
# Admission of the retraining flow (nfl_mlops.retraining.admit / finish)
# --------------------------------------------------------------------------------------------


def test_concurrent_automation_runs_admit_one_per_episode(db_url: str) -> None:
    from nfl_mlops.monitoring.triggers import create_job
    from nfl_mlops.retraining import admit

    model = _model()
    episode, _ = ep.open_episode(model, 1, "stable", "drift", "drift", None, db_url)
    jobs = [create_job(model, "drift", "automation", {}, db_url=db_url) for _ in range(6)]
    decisions = _threads(
        6,
        lambda i: admit(
            model, "automation", jobs[i], episode.id if i % 2 else None, daily_budget=100, db_url=db_url
        ),
    )
    assert sum(d.allowed for d in decisions) == 1
    refused = [d for d in decisions if not d.allowed]
    assert all("already has retraining job" in d.reason for d in refused), [d.reason for d in refused]
    assert {d.episode_id for d in decisions} == {episode.id}


def test_finish_closes_on_served_releases_on_failure_keeps_on_rejection(settings) -> None:
    from nfl_mlops.monitoring.triggers import create_job
    from nfl_mlops.retraining import admit, finish

    db_url, model = settings.db_url, _model()
    # failed -> released with a back-off; the next automation run is refused until it elapses
    episode, _ = ep.open_episode(model, 1, "stable", "drift", "drift", None, db_url)
    j1 = create_job(model, "drift", "automation", {}, db_url=db_url)
    assert admit(model, "automation", j1, episode.id, db_url=db_url).allowed
    after = finish(j1, "failed", {"error": "boom"}, episode.id, None, db_url)
    assert after["attempts"] == 1 and after["retraining_job_id"] is None
    j2 = create_job(model, "drift", "automation", {}, db_url=db_url)
    refused = admit(model, "automation", j2, episode.id, db_url=db_url)
    assert not refused.allowed and "backs off" in refused.reason
    with session_scope(db_url) as s:
        assert s.get(RetrainingJob, j1).status == "failed"
    # rejected -> the episode keeps its one retraining
    e2, _ = ep.open_episode(model, 2, "stable", "drift", "drift", None, db_url)
    j3 = create_job(model, "drift", "automation", {}, db_url=db_url)
    assert admit(model, "automation", j3, e2.id, db_url=db_url).allowed
    finish(j3, "rejected", {}, e2.id, 3, db_url)
    assert ep.get_episode(e2.id, db_url).retraining_job_id == j3
    assert not admit(
        model, "automation", create_job(model, "d", "automation", {}, db_url=db_url), e2.id, db_url=db_url
    ).allowed
    # completed -> closed, with the retrained version
    e3, _ = ep.open_episode(model, 4, "stable", "drift", "drift", None, db_url)
    j4 = create_job(model, "drift", "automation", {}, db_url=db_url)
    budget = admit(
        model, "automation", j4, e3.id, db_url=db_url
    )  # 4 automatic jobs today, the failed one too
    assert not budget.allowed and budget.reason.startswith("daily budget of 3")
    assert admit(model, "automation", j4, e3.id, daily_budget=10, db_url=db_url).allowed
    done = finish(j4, "completed", {}, e3.id, 5, db_url)
    assert (
        done["status"] == "closed" and done["retrained_version"] == 5 and "v5 serves" in done["close_reason"]
    )
    # no open episode: an automation run does nothing
    j5 = create_job(model, "drift", "automation", {}, db_url=db_url)
    none = admit(model, "automation", j5, e3.id, daily_budget=10, db_url=db_url)
    assert not none.allowed and "closed" in none.reason


def test_an_event_from_outside_monitoring_opens_the_serving_versions_episode(settings) -> None:
    from nfl_mlops.monitoring.triggers import create_job
    from nfl_mlops.retraining import admit, trigger_check
    from nfl_mlops.rollout import state as rollouts

    db_url, model = settings.db_url, _model()
    rollouts.activate(model, 7, db_url=db_url, reason="test")
    with session_scope(db_url) as s:  # e.g. the SDK's performance check recorded a degraded verdict
        s.add(MonitoringRun(model_name=model, model_version=7, summary={"performance_degraded": True}))
    assert trigger_check(db_url, model).would_trigger
    jobs = [
        create_job(model, "performance degraded: accuracy", "automation", {}, db_url=db_url) for _ in range(4)
    ]
    decisions = _threads(
        4, lambda i: admit(model, "automation", jobs[i], None, daily_budget=10, db_url=db_url)
    )
    assert sum(d.allowed for d in decisions) == 1
    [episode] = ep.open_episodes(model, db_url)
    assert episode.model_version == 7 and episode.kind == "degraded"
    assert {d.episode_id for d in decisions} == {episode.id}
    assert not trigger_check(db_url, model).would_trigger  # its retraining is in flight
