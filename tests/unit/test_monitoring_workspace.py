"""The local Evidently workspace: one project per model, a dashboard once, two snapshots per run."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from nfl_mlops.monitoring.drift import detect_drift
from nfl_mlops.monitoring.workspace import (
    DRIFT_TAG,
    SUMMARY_TAG,
    add_snapshots,
    open_workspace,
    project_name,
    summary_snapshot,
    workspace_path,
)


def drift_snapshot(shift: float, at: datetime):
    r = np.random.default_rng(int(shift * 10))
    ref = pd.DataFrame({"n_chars": r.normal(100, 30, 300), "topic": r.choice(["airline", "other"], 300)})
    cur = pd.DataFrame(
        {"n_chars": r.normal(100 + shift, 30, 200), "topic": r.choice(["airline", "other"], 200)}
    )
    return detect_drift(
        ref, cur, ["n_chars"], ["topic"], timestamp=at, tags=[DRIFT_TAG], name=f"d{shift}"
    ).snapshot


def test_runs_add_snapshots_to_one_project(tmp_path):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i, shift in enumerate((0.0, 40.0)):
        at = t0 + timedelta(hours=i)
        summary = summary_snapshot(
            {
                "drift_share": 0.5 * i,
                "embedding_auc": 0.5 + 0.2 * i,
                "test_macro_f1": 0.7,
                "observed_macro_f1": None,
                "estimated_macro_f1": float("nan"),
            },
            f"s{i}",
            at,
            metadata={"model_version": "1"},
        )
        ids = add_snapshots(
            tmp_path, "m1", [drift_snapshot(shift, at), summary], drift_columns=["n_chars", "topic"]
        )
        assert len(ids) == 2 and len(set(ids)) == 2
    add_snapshots(tmp_path, "m2", [drift_snapshot(0.0, t0)])

    ws = open_workspace(tmp_path)
    projects = {p.name: p for p in ws.list_projects()}
    assert set(projects) == {project_name("m1"), project_name("m2")}
    p1 = projects[project_name("m1")]
    assert len(ws.list_runs(p1.id)) == 4
    panels = [panel.title for panel in ws.get_dashboard(p1.id).panels]
    assert len(panels) == len(set(panels)) == 6  # created once, not once per run
    assert "Share of drifted signals" in panels and "Drift score per signal (Evidently ValueDrift)" in panels


def test_summary_snapshot_holds_the_headline_numbers():
    snap = summary_snapshot({"drift_share": 0.25, "embedding_auc": None, "n_predictions": 1200}, "s", None)
    values = {}
    for result in snap.metric_results.values():
        column = result.get_metric_value_location().metric.params["column"]
        values[column] = float(result.value)
    assert values == {"drift_share": 0.25, "n_predictions": 1200.0}  # missing numbers are left out
    model = snap.to_snapshot_model()
    assert SUMMARY_TAG in model.tags
    assert math.isnan(float(model.metadata["embedding_auc"]))


def test_workspace_lives_under_mlops_home(tmp_path):
    class S:
        mlops_home = tmp_path

    assert workspace_path(S()) == tmp_path / "evidently"
