"""Retraining jobs that no run will close (a killed worker, a lost run) end `failed` and give their drift
episode back with a back-off, on SQLite and on a throwaway PostgreSQL database."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from nfl_mlops.db import utcnow
from nfl_mlops.monitoring import episodes as ep
from nfl_mlops.monitoring.triggers import create_job, update_job
from nfl_mlops.retraining import get_job, open_job_runs, reconcile_jobs


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, settings) -> str:
    if request.param == "sqlite":
        return settings.db_url
    return request.getfixturevalue("postgres_url")


def _claimed_job(db_url: str, model: str, flow_run_id: str) -> tuple[str, str]:
    episode, _ = ep.open_episode(model, 1, "stable", "drift", "drift: 5/7", None, db_url)
    job = create_job(model, "drift", "automation", {}, flow_run_id, db_url=db_url)
    update_job(job, "running", db_url=db_url)
    assert ep.claim(episode.id, job, db_url=db_url)
    return episode.id, job


def test_a_job_whose_run_crashed_fails_and_releases_its_episode(db_url) -> None:
    model = f"reconcile-{uuid.uuid4().hex[:8]}"
    crashed, alive = str(uuid.uuid4()), str(uuid.uuid4())
    episode_id, job = _claimed_job(db_url, model, crashed)
    other = create_job(model, "manual", "manual", {}, alive, db_url=db_url)
    update_job(other, "running", db_url=db_url)
    assert set(open_job_runs(model, db_url).values()) == {crashed, alive}

    ended = reconcile_jobs({crashed: "CRASHED", alive: "RUNNING"}, model, db_url=db_url)
    assert [e["job_id"] for e in ended] == [job]
    out = get_job(db_url, job)
    assert out.status == "failed" and "ended CRASHED" in out.result["error"] and out.finished_at
    assert get_job(db_url, other).status == "running"  # its run still runs
    episode = ep.get_episode(episode_id, db_url)
    assert episode is not None and episode.status == ep.OPEN
    assert episode.retraining_job_id is None and episode.attempts == 1
    assert episode.next_attempt_at is not None and episode.next_attempt_at > utcnow()
    # idempotent: nothing is left to end
    assert reconcile_jobs({crashed: "CRASHED", alive: "RUNNING"}, model, db_url=db_url) == []


def test_a_job_with_no_known_run_fails_only_after_the_limit(db_url) -> None:
    model = f"reconcile-{uuid.uuid4().hex[:8]}"
    episode_id, job = _claimed_job(db_url, model, str(uuid.uuid4()))
    assert reconcile_jobs({}, model, max_open_hours=12, db_url=db_url) == []  # Prefect unreachable: wait
    later = utcnow() + timedelta(hours=13)
    [ended] = reconcile_jobs({}, model, now=later, max_open_hours=12, db_url=db_url)
    assert ended["job_id"] == job and "no outcome" in ended["reason"]
    assert get_job(db_url, job).status == "failed"
    assert ep.get_episode(episode_id, db_url).retraining_job_id is None


def test_finished_jobs_are_never_touched(db_url) -> None:
    model = f"reconcile-{uuid.uuid4().hex[:8]}"
    run = str(uuid.uuid4())
    job = create_job(model, "drift", "schedule", {}, run, db_url=db_url)
    update_job(job, "completed", {"version": 2}, db_url=db_url)
    assert reconcile_jobs({run: "CRASHED"}, model, now=utcnow() + timedelta(days=3), db_url=db_url) == []
    assert get_job(db_url, job).status == "completed"
