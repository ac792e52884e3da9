"""The local Evidently workspace: one project per model, snapshots added by every monitoring run.

`evidently ui --workspace $MLOPS_HOME/evidently` shows the project's dashboard (drift over time) and
every snapshot. Each run adds two snapshots with the same timestamp:

- `drift-...` (tag `drift`): the Evidently report of the window's descriptors and predictions
  (`ValueDrift` per column), also saved as the HTML report the Prefect link artifact points at;
- `summary-...` (tag `summary`): the run's headline numbers (drift share, embedding AUC, observed and
  estimated accuracy / macro-F1, the test metrics) as a one-row dataset scored by Evidently's
  `MeanValue`, so that the dashboard can plot them over time with built-in metrics only. The numbers
  are also in the snapshot's metadata.

The project and its dashboard are created on first use; later runs only add snapshots.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

DRIFT_TAG = "drift"
SUMMARY_TAG = "summary"
SUMMARY_COLUMNS = (
    "drift_share",
    "n_drifted",
    "embedding_auc",
    "observed_accuracy",
    "observed_macro_f1",
    "estimated_accuracy",
    "estimated_macro_f1",
    "test_accuracy",
    "test_macro_f1",
    "n_predictions",
    "n_labelled",
)
"""The headline numbers of a run that the dashboard plots (NaN when a run has none)."""

_lock = threading.Lock()


WORKSPACE_DIR = "evidently"


def workspace_path(settings: Any) -> Path:
    """Where the local Evidently workspace lives: `$MLOPS_HOME/evidently`."""
    return Path(settings.mlops_home) / WORKSPACE_DIR


def project_name(model_name: str) -> str:
    return f"nfl-mlops {model_name}"


def open_workspace(path: Path):
    """The local Evidently workspace at `path` (created when missing)."""
    from evidently.ui.workspace import Workspace

    Path(path).mkdir(parents=True, exist_ok=True)
    return Workspace(str(path))


def get_project(workspace: Any, model_name: str, drift_columns: Sequence[str] = ()):
    """The model's project; created, with its dashboard, the first time."""
    name = project_name(model_name)
    found = [p for p in workspace.search_project(name) if p.name == name]
    if found:
        return found[0]
    project = workspace.create_project(
        name,
        description=f"Monitoring of {model_name}: drift of the prediction "
        "log vs. each version's reference profile",
    )
    _add_dashboard(project, drift_columns)
    return project


def summary_snapshot(
    values: Mapping[str, float | None],
    name: str,
    timestamp: datetime | None,
    metadata: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
):
    """An Evidently snapshot holding a run's headline numbers (one `MeanValue` per `SUMMARY_COLUMNS`)."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue

    row = {c: _num(values.get(c)) for c in SUMMARY_COLUMNS}
    present = [c for c in SUMMARY_COLUMNS if not math.isnan(row[c])]
    frame = pd.DataFrame([{c: row[c] for c in present}])
    report = Report([MeanValue(column=c) for c in present])
    return report.run(
        Dataset.from_pandas(frame, data_definition=DataDefinition(numerical_columns=present)),
        None,
        name=name,
        timestamp=timestamp,
        tags=[SUMMARY_TAG, *tags],
        metadata={k: str(v) for k, v in {**row, **(metadata or {})}.items()},
    )


def add_snapshots(
    path: Path, model_name: str, snapshots: Sequence[Any], drift_columns: Sequence[str] = ()
) -> list[str]:
    """Add snapshots to the model's project in the workspace at `path`; returns their ids."""
    with _lock:  # the local workspace is files: one writer per process at a time
        workspace = open_workspace(path)
        project = get_project(workspace, model_name, drift_columns)
        return [str(workspace.add_run(project.id, s).id) for s in snapshots]


def _add_dashboard(project: Any, drift_columns: Sequence[str]) -> None:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel, text_panel

    def summary(col: str, legend: str) -> PanelMetric:
        return PanelMetric(
            legend=legend, metric="MeanValue", metric_labels={"column": col}, tags=[SUMMARY_TAG]
        )

    dash = project.dashboard
    dash.add_panel(
        text_panel(
            title="Sentiment model monitoring",
            description="Each point is one monitoring run of the prediction-log window.",
        )
    )
    dash.add_panel(
        line_plot_panel(
            title="Share of drifted signals", size="half", values=[summary("drift_share", "drift share")]
        )
    )
    dash.add_panel(
        line_plot_panel(
            title="Embedding drift (domain classifier ROC AUC; 0.5 = none)",
            size="half",
            values=[summary("embedding_auc", "AUC")],
        )
    )
    dash.add_panel(
        line_plot_panel(
            title="macro-F1: test vs. observed (feedback) vs. estimated (label-free)",
            size="half",
            values=[
                summary("test_macro_f1", "test"),
                summary("observed_macro_f1", "observed"),
                summary("estimated_macro_f1", "estimated"),
            ],
        )
    )
    dash.add_panel(
        line_plot_panel(
            title="accuracy: test vs. observed vs. estimated",
            size="half",
            values=[
                summary("test_accuracy", "test"),
                summary("observed_accuracy", "observed"),
                summary("estimated_accuracy", "estimated"),
            ],
        )
    )
    if drift_columns:
        dash.add_panel(
            line_plot_panel(
                title="Drift score per signal (Evidently ValueDrift)",
                values=[
                    PanelMetric(legend=c, metric="ValueDrift", metric_labels={"column": c}, tags=[DRIFT_TAG])
                    for c in drift_columns
                ],
            )
        )


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan
