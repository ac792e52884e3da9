"""Rollout state under concurrent writers, on SQLite and PostgreSQL: compare-and-set on the revision,
one active rollout per model and environment enforced by the database, two drivers on one canary.

The drivers are real: threads in this process and separate OS processes, all ticking the same rollout
through `controller.tick` against the same database while a feeder logs traffic for the current step.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from nfl_mlops.db import Prediction, Rollout, session_scope, utcnow
from nfl_mlops.rollout import controller
from nfl_mlops.rollout import state as rollouts
from nfl_mlops.rollout.strategies import CanaryParams

ROOT = Path(__file__).resolve().parents[2]
STEPS = [10.0, 50.0, 100.0]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("postgres_url")


def _model() -> str:
    return f"race-{uuid.uuid4().hex[:8]}"


def _active(db_url: str, model: str) -> int:
    with session_scope(db_url) as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(Rollout)
                .where(Rollout.model_name == model, Rollout.status == "active")
            )
            or 0
        )


def _feed(db_url: str, rollout_id: str, model: str, stop: threading.Event) -> None:
    """Live traffic for whatever step the canary is at: both arms answer, fast and without errors."""
    while not stop.is_set():
        with session_scope(db_url) as s:
            for arm, version in (("candidate", 2), ("stable", 1)):
                for _ in range(4):
                    rid = uuid.uuid4().hex
                    s.add(
                        Prediction(
                            id=rid[:16],
                            request_id=rid,
                            created_at=utcnow(),
                            model_name=model,
                            model_version=version,
                            rollout_id=rollout_id,
                            arm=arm,
                            served=True,
                            text="t",
                            text_hash="h",
                            label="neutral",
                            confidence=0.5,
                            latency_ms=10.0,
                            error=None,
                        )
                    )
        time.sleep(0.02)


def _start_canary(db_url: str, model: str) -> rollouts.RolloutInfo:
    rollouts.activate(model, 1, db_url=db_url)
    params = CanaryParams(steps=STEPS, min_requests=3, check_seconds=0.01)
    return controller.start_rollout(model, 2, "canary", params=params, driver="api", db_url=db_url)


def drive_until_end(db_url: str, rollout_id: str, deadline_s: float = 60.0) -> list[str]:
    """One driver: tick until the rollout ends; returns the events this driver's ticks produced."""
    events: list[str] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        out = controller.tick(rollout_id, db_url=db_url)
        if out.applied and out.event:
            events.append(out.event)
        if out.ended or not controller.in_progress(rollouts.get_rollout(rollout_id, db_url)):
            break
        time.sleep(0.005)
    return events


def _assert_one_clean_promotion(db_url: str, model: str, rollout_id: str, events: list[str]) -> None:
    assert Counter(events) == {"rollout.promoted": 1}, events
    final = rollouts.get_rollout(rollout_id, db_url)
    assert final.status == "active" and final.config["phase"] == "promoted"
    assert final.arms == {"stable": {"version": 2, "weight": 100.0}}
    # every step exactly once, in order: nothing lost, nothing applied twice
    assert [h["event"] for h in final.history] == ["activated", "traffic", "promoted"]
    assert [h["arms"]["candidate"]["weight"] for h in final.history if h["event"] == "traffic"] == [50.0]
    assert _active(db_url, model) == 1


def test_two_threads_drive_one_canary_to_one_promotion(db_url: str) -> None:
    model = _model()
    r = _start_canary(db_url, model)
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(db_url, r.id, model, stop), daemon=True)
    feeder.start()
    results: list[list[str]] = [[], []]

    def driver(i: int) -> None:
        results[i] = drive_until_end(db_url, r.id)

    threads = [threading.Thread(target=driver, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
    finally:
        stop.set()
        feeder.join(5)
    _assert_one_clean_promotion(db_url, model, r.id, results[0] + results[1])


def test_two_processes_drive_one_canary_to_one_promotion(db_url: str) -> None:
    model = _model()
    r = _start_canary(db_url, model)
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(db_url, r.id, model, stop), daemon=True)
    script = (
        "import json, sys; from tests.unit.test_rollout_concurrency import drive_until_end; "
        "print(json.dumps(drive_until_end(sys.argv[1], sys.argv[2])))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, db_url, r.id],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    feeder.start()
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        stop.set()
        feeder.join(5)
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    events = [e for out, _ in outs for e in json.loads(out.strip().splitlines()[-1])]
    _assert_one_clean_promotion(db_url, model, r.id, events)


def test_concurrent_activations_leave_one_active_rollout(db_url: str) -> None:
    model = _model()
    rollouts.activate(model, 1, db_url=db_url)
    barrier = threading.Barrier(6)
    won: list[int] = []
    lost: list[str] = []

    def activate(version: int) -> None:
        barrier.wait()
        try:
            rollouts.activate(model, version, db_url=db_url)
            won.append(version)
        except rollouts.RolloutConflict as exc:
            lost.append(str(exc))

    threads = [threading.Thread(target=activate, args=(v,)) for v in range(2, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert won and len(won) + len(lost) == 6
    assert _active(db_url, model) == 1
    active = rollouts.active_rollout(model, db_url=db_url)
    assert active is not None and active.version in won
    with session_scope(
        db_url
    ) as s:  # every winner's rollout exists, each superseded one by exactly one winner
        rows = s.scalars(select(Rollout).where(Rollout.model_name == model)).all()
        assert len(rows) == 1 + len(won)
        assert sum(r.status == "superseded" for r in rows) == len(won)


def test_the_database_refuses_a_second_active_rollout(db_url: str) -> None:
    """Even a writer that skips the library's compare-and-set cannot make two active rollouts."""
    from sqlalchemy.exc import IntegrityError

    model = _model()
    rollouts.activate(model, 1, db_url=db_url)
    with pytest.raises(IntegrityError), session_scope(db_url) as s:
        s.add(
            Rollout(
                model_name=model,
                environment="production",
                version=2,
                strategy="blue_green",
                status="active",
                arms={},
                config={},
                history=[],
            )
        )
        s.flush()
    assert _active(db_url, model) == 1


def test_a_stale_gate_check_never_overwrites_a_transition(db_url: str) -> None:
    model = _model()
    r = _start_canary(db_url, model)
    read = rollouts.revision(r)
    moved = rollouts.transition(
        r.id,
        read,
        arms={"stable": {"version": 1, "weight": 50.0}, "candidate": {"version": 2, "weight": 50.0}},
        config={"step_index": 1},
        event={"kind": "traffic"},
        db_url=db_url,
    )
    assert moved.revision == read + 1
    assert rollouts.record_check(r.id, {"action": "hold"}, db_url, expected_revision=read) is False
    now = rollouts.get_rollout(r.id, db_url)
    assert now.config["step_index"] == 1 and "last_check" not in now.config and now.revision == read + 1
    assert rollouts.record_check(r.id, {"action": "hold"}, db_url, expected_revision=now.revision) is True
    assert rollouts.get_rollout(r.id, db_url).config["last_check"] == {"action": "hold"}
