"""Pure pieces that flows, tasks and the CLI call: how a monitoring run ends, what a training run reports,
version allocation under a conflict, and the rollout's check interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from nfl_mlops.modeling.report import confusion_ids, misclassified, tracker_summary
from nfl_mlops.monitoring.outcome import check_status, summarize, window_end


def _check(version: int, status: str, action: str | None = None, events: list[str] | None = None) -> dict:
    return {
        "model_version": version,
        "arm": "stable",
        "status": status,
        "n_predictions": 100,
        "reason": "too few" if status == "skipped" else "",
        "episode": {"action": action} if action else None,
        "events": events or [],
    }


def test_window_end_prefers_the_given_end_then_the_schedule_and_is_always_aware() -> None:
    naive = datetime(2026, 1, 1, 12)
    scheduled = datetime(2026, 1, 2, 3, tzinfo=UTC)
    now = datetime(2026, 1, 3, tzinfo=UTC)
    assert window_end(naive, scheduled, now) == naive.replace(tzinfo=UTC)
    assert window_end(None, scheduled, now) == scheduled
    assert window_end(None, None, now) == now
    assert window_end(None, None).tzinfo is not None


def test_a_monitoring_run_ends_in_a_state_that_says_what_it_decided() -> None:
    assert check_status(True, True) == "drift" and check_status(False, True) == "degraded"
    assert check_status(False, False) == "ok"
    name, message, out = summarize([_check(1, "skipped")])
    assert name == "Skipped" and "v1: too few" in message and out["status"] == "skipped"
    assert summarize([])[0] == "Skipped" and "no version served" in summarize([])[1]
    opened = [_check(1, "ok"), _check(2, "drift", "opened", ["nfl-mlops.drift.detected"])]
    name, message, out = summarize(opened, closed_episodes=["e0"], orphaned_jobs=[{"job_id": "j"}])
    assert name == "EpisodeOpened" and "v2 drift (episode: opened)" in message
    assert out["model_version"] == 1 and [v["model_version"] for v in out["versions"]] == [1, 2]
    assert out["events"] == ["nfl-mlops.drift.detected"] and out["closed_episodes"] == ["e0"]
    assert out["orphaned_jobs"] == [{"job_id": "j"}]
    assert summarize([_check(1, "degraded", "pending")])[0] == "Alarm"
    name, message, _ = summarize([_check(1, "ok", "clear"), _check(2, "skipped")])
    assert name is None and "v1 ok" in message  # all judged versions clear: a plain Completed


def test_what_a_training_run_reports() -> None:
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2]])
    labels = ["negative", "negative", "positive"]
    wrong = misclassified(["a", "b", "c"], labels, proba)
    assert wrong == [("b", "negative", "positive", 0.5), ("c", "positive", "neutral", 0.7)]
    assert misclassified(["a", "b", "c"], labels, proba, limit=1) == wrong[:1]
    assert confusion_ids(labels, proba) == ([0, 0, 2], [0, 2, 1])
    summary = tracker_summary(
        {"test": {"accuracy": 0.5, "n": 3}}, {"test": {"accuracy": 0.4}}, train_seconds=1.5
    )
    assert summary == {"test/accuracy": 0.5, "baseline/test/accuracy": 0.4, "train_seconds": 1.5}


def test_version_allocation_takes_the_next_number_after_a_conflict(settings) -> None:
    """Two writers race for v1 of a feature group on the real state DB: the loser gets v2."""
    import uuid

    from sqlalchemy.exc import IntegrityError

    from nfl_mlops.versions import allocate

    tried: list[int] = []
    taken = {1}

    def create(_session, number: int) -> int:
        tried.append(number)
        if number in taken:
            raise IntegrityError("INSERT", {}, Exception("unique constraint"))
        return number

    current = iter([0, 1])
    assert allocate(settings.db_url, lambda s: next(current), create, f"fg-{uuid.uuid4().hex[:6]}") == 2
    assert tried == [1, 2]
    with pytest.raises(RuntimeError, match="after 3 attempts"):
        allocate(settings.db_url, lambda s: 0, create, "always taken", attempts=3)
    assert allocate(settings.db_url, lambda s: 0, create, "same content", on_conflict=lambda: 7) == 7


def test_the_check_interval_of_a_rollout() -> None:
    from nfl_mlops.rollout.strategies import DEFAULT_CHECK_SECONDS, check_interval

    assert check_interval("blue_green", None) == DEFAULT_CHECK_SECONDS
    assert check_interval("canary", {"check_seconds": 0.5}) == 0.5
    assert check_interval("shadow", {"check_seconds": 2, "min_requests": 10}) == 2.0
    assert timedelta(seconds=check_interval("canary", None)) > timedelta(0)


def test_the_model_status_view() -> None:
    from types import SimpleNamespace as NS

    from nfl_mlops.reports import model_status_markdown

    versions = [
        NS(version=1, status="ready", aliases=[], metrics={"test": {"macro_f1": 0.78}}),
        NS(
            version=2,
            status="ready",
            aliases=["champion"],
            metrics={"test": {"macro_f1": 0.8}, "recent": {"macro_f1": 0.55}},
        ),
    ]
    rollout = NS(
        id="r1",
        strategy="canary",
        status="active",
        config={"phase": "running"},
        arms={"stable": {"version": 1, "weight": 90.0}, "canary": {"version": 2, "weight": 10.0}},
    )
    episode = NS(
        id="e1",
        model_version=1,
        kind="drift",
        opened_at=datetime(2026, 12, 1, 22, tzinfo=UTC),
        retraining_job_id="j1",
        attempts=0,
    )
    verdict = NS(
        created_at=datetime(2026, 12, 1, 22, tzinfo=UTC),
        model_version=1,
        drift_share=1.0,
        drift_detected=True,
        summary={"performance_degraded": True},
    )
    md = model_status_markdown("m", versions, rollout, [episode], [verdict])
    assert md.startswith("# m: champion v2")
    assert md.index("| v2 | ready | champion | 0.800 | 0.550 |") < md.index("| v1 | ready | - | 0.780 | - |")
    assert "- stable: v1, 90 %" in md and "- canary: v2, 10 %" in md and "(canary, running)" in md
    assert "- e1: v1 drift since 2026-12-01 22:00 (retraining job j1)" in md
    assert "| 2026-12-01 22:00 | v1 | 1.00 | yes | yes |" in md
    empty = model_status_markdown("m", [], None, [], [])
    assert "champion none" in empty and "Nothing serves" in empty and "None open." in empty


@pytest.mark.parametrize(
    ("setting", "device", "bf16_ok", "expected"),
    [
        ("auto", "cpu", False, "no"),  # bf16 autocast is slower than fp32 on most CPUs
        ("auto", "cuda", True, "bf16"),  # Ampere and later: no loss scaling needed
        ("auto", "cuda", False, "fp16"),  # older GPUs: fp16 with a GradScaler
        ("no", "cuda", True, "no"),
        ("bf16", "cpu", False, "bf16"),  # asked for explicitly (CPUs with AMX)
        ("fp16", "cuda", True, "fp16"),
    ],
)
def test_mixed_precision_follows_the_device(setting, device, bf16_ok, expected) -> None:
    from nfl_mlops.modeling.train import resolve_precision

    assert resolve_precision(setting, device, bf16_ok) == expected


def test_mixed_precision_that_the_device_cannot_do_is_a_clear_error() -> None:
    from nfl_mlops.modeling.train import resolve_precision

    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_precision("fp16", "cpu", False)
    with pytest.raises(ValueError, match="not supported by this GPU"):
        resolve_precision("bf16", "cuda", False)


def test_a_fine_tuning_progress_line_says_where_how_fast_and_how_long() -> None:
    from nfl_mlops.modeling.train import progress_line

    line = progress_line(50, 200, 25.0, 32, {"train_loss": 0.8123})
    assert line == "step 50/200 (25%), loss 0.8123, 64.0 examples/s, about 75 s left"
    assert progress_line(100, 1000, 60.0, 32, {"train_loss": 0.5}).endswith("about 9 min left")
