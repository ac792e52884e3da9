"""The retraining library: outcome classification, reason kinds, reference rows of a retrained version,
the declared triggers (no path relative to the package), the trigger check with episodes, and layering."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nfl_mlops.monitoring import episodes as ep
from nfl_mlops.monitoring.reference import reference_rows
from nfl_mlops.retraining import (
    declared_retraining,
    outcome_status,
    reason_kind,
    require_recent_improvement,
    trigger_check,
)

ROOT = Path(__file__).resolve().parents[2]


def test_outcome_status() -> None:
    assert outcome_status(False) == "rejected"
    assert outcome_status(True, "active", 3, 3) == "completed"
    assert outcome_status(True, "active", 2, 3) == "rolled_back"  # the canary sent traffic back to v2
    assert outcome_status(True, "rolled_back", 3, 3) == "rolled_back"


def test_reason_kind_and_the_recent_window_gate() -> None:
    assert reason_kind("drift: 7/7 signal groups") == "drift"
    assert reason_kind("performance degraded: accuracy") == "degraded"
    assert reason_kind("weekly schedule") == "other"
    assert reason_kind("weekly schedule", episode_kind="degraded") == "degraded"
    assert require_recent_improvement("drift") and require_recent_improvement("degraded")
    assert not require_recent_improvement("other")


def test_a_retrained_version_is_referenced_on_what_it_was_retrained_for() -> None:
    train = pd.DataFrame(
        {
            "text": [f"general {i}" for i in range(10)] + [f"nfl fb {i}" for i in range(4)],
            "label": ["neutral"] * 14,
        }
    )
    test = pd.DataFrame({"text": ["general test"] * 3, "label": ["neutral"] * 3})
    recent = pd.DataFrame({"text": [f"nfl recent {i}" for i in range(6)], "label": ["positive"] * 6})
    probas = {"test": np.full((3, 3), 1 / 3), "recent": np.tile([0.1, 0.2, 0.7], (6, 1))}
    rows = reference_rows(train, test, recent, probas, n_feedback_train=4, min_recent=5)
    assert rows.basis == "recent"
    # vocabulary and extra descriptors from the feedback it trained on, not from the held-out rows (the
    # held-out rows' OOV share must be out of sample, like live traffic's)
    assert rows.descriptor_texts == [f"nfl fb {i}" for i in range(4)]
    assert rows.texts == recent["text"].tolist() and rows.proba.shape == (6, 3)
    # too small a recent window (or none): the general split, as for a first version
    small = reference_rows(train, test, recent, probas, n_feedback_train=4, min_recent=7)
    assert (
        small.basis == "test" and small.texts == test["text"].tolist() and len(small.descriptor_texts) == 14
    )
    assert reference_rows(train, test, None, {"test": probas["test"]}).basis == "test"


def test_a_small_window_of_the_drifted_traffic_beats_a_large_mix() -> None:
    """The episode's own held-out rows are the reference from MIN_WINDOW_REFERENCE on, even below
    MIN_RECENT_REFERENCE: older traffic (before the drift) never mixes in."""
    from nfl_mlops.monitoring.reference import MIN_RECENT_REFERENCE, MIN_WINDOW_REFERENCE

    n_old, n_window = 300, MIN_WINDOW_REFERENCE + 5
    assert n_window < MIN_RECENT_REFERENCE
    recent = pd.DataFrame(
        {
            "text": [f"nfl before {i}" for i in range(n_old)]
            + [f"ordinary now {i}" for i in range(n_window)],
            "label": ["neutral"] * (n_old + n_window),
        }
    )
    train = pd.DataFrame({"text": [f"t {i}" for i in range(20)], "label": ["neutral"] * 20})
    test = pd.DataFrame({"text": ["general test"] * 3, "label": ["neutral"] * 3})
    probas = {"test": np.full((3, 3), 1 / 3), "recent": np.full((len(recent), 3), 1 / 3)}
    rows = reference_rows(train, test, recent, probas, n_feedback_train=5, n_recent_window=n_window)
    assert rows.basis == "recent" and rows.texts == [f"ordinary now {i}" for i in range(n_window)]
    assert len(rows.proba) == n_window
    # fewer window rows than that: the whole recent split, as before (too few to describe anything)
    tiny = reference_rows(
        train, test, recent, probas, n_feedback_train=5, n_recent_window=MIN_WINDOW_REFERENCE - 1
    )
    assert tiny.basis == "recent" and len(tiny.texts) == len(recent)


def test_declared_retraining_reads_the_project_root_or_says_unknown(monkeypatch) -> None:
    monkeypatch.delenv("NFL_MLOPS_ROOT", raising=False)
    assert declared_retraining() == ([], [], None)
    monkeypatch.setenv("NFL_MLOPS_ROOT", str(ROOT))
    schedules, events, source = declared_retraining()
    assert source == str(ROOT / "prefect.yaml")
    assert schedules and schedules[0]["cron"]
    assert set(events) == {"nfl-mlops.drift.detected", "nfl-mlops.performance.degraded"}


def test_prefect_yaml_keeps_one_default_and_one_retraining_at_a_time() -> None:
    import yaml

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert "window_hours" not in (deps["monitoring"].get("parameters") or {})
    assert deps["retraining"]["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    for trigger in deps["retraining"]["triggers"]:
        assert "episode_id" in trigger["parameters"] and "default(" in trigger["parameters"]["episode_id"]


def test_trigger_check_shows_the_open_episode(settings, monkeypatch) -> None:
    monkeypatch.delenv("NFL_MLOPS_ROOT", raising=False)
    model = f"trig-{uuid.uuid4().hex[:8]}"
    with pytest.raises(LookupError):
        trigger_check(settings.db_url, model)
    quiet = trigger_check(settings.db_url, model, known=True)
    assert not quiet.would_trigger and quiet.open_episodes == [] and quiet.declared_from is None
    episode, _ = ep.open_episode(model, 1, "stable", "drift", "drift: 5/7", None, settings.db_url)
    due = trigger_check(settings.db_url, model)
    assert due.would_trigger and [e["id"] for e in due.open_episodes] == [episode.id]
    assert any("its retraining is due" in r for r in due.reasons)
    assert ep.claim(episode.id, "job-1", db_url=settings.db_url)
    busy = trigger_check(settings.db_url, model)
    assert not busy.would_trigger and any("retraining job job-1" in r for r in busy.reasons)
    assert busy.recent_episodes[0]["retraining_job_id"] == "job-1"


def test_the_library_does_not_import_the_serving_package() -> None:
    code = (
        "import sys, nfl_mlops.retraining, nfl_mlops.monitoring.episodes, nfl_mlops.monitoring.window; "
        "bad = [m for m in sys.modules if m.startswith('nfl_mlops.serving')]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_retraining_summary_says_what_started_it_and_what_came_of_it() -> None:
    from nfl_mlops.retraining import summary_markdown

    result = {
        "status": "rolled_back",
        "kind": "drift",
        "job_id": "job-1",
        "episode_id": "ep-1",
        "version": 3,
        "passed": True,
        "deployment_id": "dep-9",
        "strategy": "canary",
        "rollback_reason": "latency_p95 | 1200 ms > 300 ms",
        "reasons": ["test: difference -0.0122 [-0.0495, +0.0241]; non-inferior"],
    }
    md = summary_markdown("m", "automation", "drift: 11/11 signals", result)
    assert md.startswith("# Retraining of m: rolled_back")
    for fragment in (
        "automation (drift)",
        "ep-1",
        "v3 (passed by the gate)",
        "canary dep-9",
        "[-0.0495, +0.0241]",
    ):
        assert fragment in md, fragment
    assert "latency_p95 \\| 1200 ms" in md  # a pipe in a reason does not break the table


def test_the_champion_recipe_does_not_carry_its_episode_window(settings, tiny_model_dir) -> None:
    """A retraining sets `recent_since` from its own episode; the champion's (an earlier episode's window)
    must not leak into the next retraining's recipe."""
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.retraining import champion_recipe

    name = f"recipe-{uuid.uuid4().hex[:8]}"
    reg = Registry.from_settings(settings)
    data = {"topics_exclude": ["nfl"], "max_train_samples": 300, "recent_since": "2026-12-01T00:00:00+00:00"}
    info = reg.register(name, tiny_model_dir, params={"data": data, "train": {"epochs": 2.0}})
    reg.promote(name, info.version)
    recipe_data, recipe_train = champion_recipe(name, reg)
    assert recipe_data.recent_since is None
    assert recipe_data.topics_exclude == ["nfl"] and recipe_data.max_train_samples == 300
    assert recipe_train.epochs == 2.0
