"""What monitoring judges: per serving version and arm, its predictions since its rollout began (state DB)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from nfl_mlops.db import Prediction, Rollout, session_scope
from nfl_mlops.monitoring.window import live_targets, serving_arms, targets_in_window, version_window

NOW = datetime.now(UTC)


def _model() -> str:
    return f"window-{uuid.uuid4().hex[:8]}"


def _log(
    db_url: str, model: str, version: int, at: datetime, n: int, arm: str = "stable", served: bool = True
) -> None:
    with session_scope(db_url) as s:
        for i in range(n):
            s.add(
                Prediction(
                    id=uuid.uuid4().hex[:16],
                    request_id="t",
                    created_at=at + timedelta(seconds=i),
                    model_name=model,
                    model_version=version,
                    arm=arm,
                    served=served,
                    text=f"t{i}",
                    text_hash=str(i),
                    label="neutral",
                    confidence=0.5,
                    latency_ms=1.0,
                )
            )


def _rollout(db_url: str, model: str, version: int, at: datetime, arms: dict, status: str = "active") -> str:
    with session_scope(db_url) as s:
        row = Rollout(
            model_name=model, version=version, strategy="canary", status=status, arms=arms, created_at=at
        )
        s.add(row)
        s.flush()
        return row.id


def test_serving_arms_skip_shadow_and_zero_weight() -> None:
    arms = {
        "stable": {"version": 1, "weight": 90},
        "candidate": {"version": 2, "weight": 10},
        "shadow": {"version": 3, "weight": 0},
        "idle": {"version": 4, "weight": 0},
    }
    assert serving_arms(arms) == [("stable", 1), ("candidate", 2)]


def test_each_live_version_is_judged_since_its_rollout_only(settings) -> None:
    db, model = settings.db_url, _model()
    start = NOW - timedelta(hours=24)
    # v1 served all day; v2 went out by canary 2 hours ago (v1 still stable, v2 the candidate)
    _rollout(
        db, model, 1, NOW - timedelta(days=3), {"stable": {"version": 1, "weight": 100}}, status="superseded"
    )
    began = NOW - timedelta(hours=2)
    rid = _rollout(
        db,
        model,
        2,
        began,
        {"stable": {"version": 1, "weight": 50}, "candidate": {"version": 2, "weight": 50}},
    )
    _log(db, model, 1, NOW - timedelta(hours=20), 300)  # before the canary: not v1's current window
    _log(db, model, 1, NOW - timedelta(hours=1), 40)
    _log(db, model, 2, NOW - timedelta(hours=1), 60, arm="candidate")
    _log(db, model, 2, NOW - timedelta(hours=1, minutes=30), 7, arm="shadow", served=False)

    targets = targets_in_window(model, start, NOW, db)
    assert [(t.version, t.arm, t.rollout_id, s_) for t, s_ in targets] == [
        (1, "stable", rid, began),
        (2, "candidate", rid, began),
    ]
    assert len(version_window(model, 1, began, NOW, db)) == 40  # not the 300 of the morning
    assert len(version_window(model, 2, began, NOW, db)) == 60  # shadow answers are not served
    # mode() over the window would have judged v1 on 340 rows and never v2


def test_a_backfill_uses_the_rollout_of_its_time_and_logged_versions_without_one(settings) -> None:
    db, model = settings.db_url, _model()
    old = _rollout(
        db, model, 1, NOW - timedelta(days=2), {"stable": {"version": 1, "weight": 100}}, status="superseded"
    )
    _rollout(db, model, 2, NOW - timedelta(hours=1), {"stable": {"version": 2, "weight": 100}})
    [target] = live_targets(model, NOW - timedelta(hours=5), db_url=db)
    assert (target.version, target.rollout_id) == (1, old)
    # before any rollout record: the versions as logged, most predictions first
    fresh = _model()
    _log(db, fresh, 3, NOW - timedelta(hours=3), 5)
    _log(db, fresh, 4, NOW - timedelta(hours=2), 9)
    targets = targets_in_window(fresh, NOW - timedelta(hours=6), NOW, db)
    assert [(t.version, t.since, s_) for t, s_ in targets] == [
        (4, None, NOW - timedelta(hours=6)),
        (3, None, NOW - timedelta(hours=6)),
    ]
