"""Monitoring validated on real drift from the corpus (NOTES-data.md).

Reference: a MiniLM classifier fine-tuned on 1,000 airline tweets (2 epochs), its reference profile built from 400
held-out airline tweets (descriptors, vocabulary, base-encoder embeddings, predictions). Windows of 600
tweets, disjoint from both: (a) other airline tweets, (b) NFL tweets, (c) other airline tweets resampled
to a 20/40/40 label mix. Every signal's value per scenario is printed as a table (`pytest -s`) and
written to `monitoring_scenarios.json` under the test's temporary folder; `bench/monitoring.py
scenarios` produces the same table for bench/README.md.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BASE = "sentence-transformers/all-MiniLM-L6-v2"
MODEL = "scenario-airline"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """The airline model, its test metrics and reference profile, and the three scored windows."""
    from nfl_mlops.modeling.metrics import evaluate
    from nfl_mlops.modeling.params import TrainParams
    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.modeling.train import fine_tune
    from nfl_mlops.monitoring.reference import build_reference, load_reference, save_reference
    from nfl_mlops.monitoring.scenarios import airline_scenarios, scored_window

    data = airline_scenarios(n_train=1000, n_test=400, n_window=600, seed=0)
    model_dir = tmp_path_factory.mktemp("airline_model")
    fine_tune(
        data.train["text"].tolist(),
        data.train["label"].tolist(),
        TrainParams(epochs=2, batch_size=32, learning_rate=2e-4, max_length=64),
        model_dir,
        base_model=BASE,
    )
    model = SentimentModel.load(model_dir)
    test_proba = model.predict_proba(data.test["text"].tolist())
    test_metrics = evaluate(data.test["label"].tolist(), test_proba).as_dict()
    save_reference(
        build_reference(
            data.train["text"].tolist(),
            data.test["text"].tolist(),
            test_proba,
            data.test["label"].tolist(),
            encoder=BASE,
        ),
        model_dir,
    )
    windows = {
        name: scored_window(w, model.predict_proba(w["text"].tolist())) for name, w in data.windows.items()
    }
    return {
        "model_dir": model_dir,
        "test_metrics": test_metrics,
        "reference": load_reference(model_dir),
        "windows": windows,
    }


@pytest.fixture(scope="module")
def results(scenario, tmp_path_factory):
    from nfl_mlops.monitoring.monitor import monitor_window
    from nfl_mlops.monitoring.scenarios import scenario_row

    out, rows = {}, []
    for name, window in scenario["windows"].items():
        result, _ = monitor_window(window, scenario["reference"], scenario["test_metrics"])
        out[name] = result
        rows.append(scenario_row(name, result, window))
    path = tmp_path_factory.mktemp("scenarios") / "monitoring_scenarios.json"
    path.write_text(json.dumps(rows, indent=1, default=str))
    print("\n" + scenario_table(rows, scenario["test_metrics"]) + f"\n(written to {path})")
    return out


def scenario_table(rows, test_metrics) -> str:
    signals = [k for k, v in rows[0].items() if isinstance(v, dict) and "score" in v]
    lines = [
        f"test set: accuracy {test_metrics['accuracy']:.3f}, macro-F1 {test_metrics['macro_f1']:.3f}",
        "signal".ljust(18) + "".join(r["scenario"].rjust(22) for r in rows),
    ]
    for s in signals:
        lines.append(
            s.ljust(18)
            + "".join(f"{r[s]['score']:.3f}{' DRIFT' if r[s]['drifted'] else ''}".rjust(22) for r in rows)
        )
    for key in ("drift_share", "dataset_drift", "events"):
        lines.append(key.ljust(18) + "".join(str(r[key]).rjust(22) for r in rows))
    for src in ("observed", "estimated"):
        for m in ("accuracy", "macro_f1"):
            lines.append(
                f"{src} {m}".ljust(18)
                + "".join(f"{r[src][m]['value']:.3f}".rjust(22) if r[src] else "-".rjust(22) for r in rows)
            )
    return "\n".join(lines)


def test_other_airline_tweets_do_not_drift(results):
    r = results["airline"]
    assert not r.drift.dataset_drift, r.drift.drifted_columns
    assert r.drift.drift_share <= 0.2
    assert not r.embedding.drifted and abs(r.embedding.score - 0.5) < 3 * r.embedding.null_se + 0.02
    assert not r.performance.degraded and r.performance.source == "observed"
    assert r.events == []


def test_nfl_tweets_drift_on_every_family(results, scenario):
    r = results["nfl"]
    assert r.drift.dataset_drift and r.drift.drift_share >= 0.8
    assert {"topic", "n_nfl_entities", "n_hashtags", "oov_share", "embedding"} <= set(r.drift.drifted_columns)
    assert r.embedding.score > 0.9
    # the model does badly on NFL tweets, and feedback labels show it
    perf = r.performance
    assert perf.degraded and perf.source == "observed"
    assert perf.observed["accuracy"].value < scenario["test_metrics"]["accuracy"] - 0.15
    # the label-free estimate is reported beside it (how far it falls short is in bench/README.md: its
    # assumption, P(correct | confidence) as on the test set, does not hold on a new topic)
    assert (
        perf.estimated["accuracy"].lower
        <= perf.estimated["accuracy"].value
        <= perf.estimated["accuracy"].upper
    )
    assert perf.estimated["accuracy"].value < perf.reference_estimate["accuracy"]
    assert r.events == ["drift.detected"]


def test_label_shift_shows_in_predictions_not_in_topic(results, scenario):
    r = results["airline_label_shift"]
    drifted = set(r.drift.drifted_columns)
    # the prediction group (label and confidence vote once) drifts; whether the confidence alone does
    # depends on the fine-tuned model (it did not on one 2-core run)
    assert "predicted_label" in drifted and "prediction" in r.drift.drifted_groups
    assert not {"topic", "n_nfl_entities"} & drifted
    # fewer true negatives reach the predictions: the model predicts negative far less often than on its test set
    window, ref = scenario["windows"]["airline_label_shift"], scenario["reference"].frame
    predicted = ref["predicted_label"].dropna()  # the test rows (training rows carry no prediction)
    assert (window["label"] == "negative").mean() < (predicted == "negative").mean() - 0.1
    # whether accuracy falls depends on how even the model's per-class accuracy is (with class-balanced
    # training it barely moved on one 2-core run); the performance verdict follows the measured drop,
    # never the drift alone: a drop within the allowed one is no degradation
    from nfl_mlops.monitoring.thresholds import PERFORMANCE_MAX_DROP

    drop = scenario["test_metrics"]["accuracy"] - r.performance.observed["accuracy"].value
    if drop <= PERFORMANCE_MAX_DROP:
        assert not r.performance.degraded, (drop, r.performance)
    else:
        assert r.performance.observed["accuracy"].value < scenario["test_metrics"]["accuracy"]


@pytest.mark.usefixtures("prefect_server")
def test_monitoring_flow_on_logged_nfl_traffic(scenario, settings):
    """The flow on the prediction log: drift event, artifacts, a MonitoringRun row, Evidently snapshots."""
    from sqlalchemy import select

    from flows.monitoring import monitoring_flow
    from nfl_mlops.db import MonitoringRun, session_scope
    from nfl_mlops.monitoring.workspace import open_workspace, project_name, workspace_path
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.serving.predlog import PredictionLogWriter
    from nfl_mlops.serving.service import text_hash

    info = Registry.from_settings().register(
        MODEL, scenario["model_dir"], metrics={"test": scenario["test_metrics"]}
    )
    window = scenario["windows"]["nfl"]
    now = datetime.now(UTC)
    writer = PredictionLogWriter(settings.db_url)
    writer.put_many(
        [
            dict(
                id=f"scn{i:06d}",
                request_id="scenario",
                created_at=now - timedelta(minutes=5),
                model_name=MODEL,
                model_version=info.version,
                arm="stable",
                served=True,
                text=row.text,
                text_hash=text_hash(row.text),
                label=row.label,
                confidence=row.confidence,
                latency_ms=1.0,
                true_label=row.true_label if i % 2 == 0 else None,
            )
            for i, row in enumerate(window.itertuples())
        ]
    )
    writer.close()

    out = monitoring_flow(model_name=MODEL, end=now, window_hours=1)

    assert out["status"] == "drift" and out["events"] == ["drift.detected"]
    assert out["n_current"] == len(window) and out["embedding"]["drifted"]
    assert out["performance"]["source"] == "observed" and out["performance"]["n_labelled"] == len(window) // 2
    assert out["performance_degraded"] is True
    # the label-free estimate beside the labels is judged for trust on the flow's embedding-drift AUC
    assert out["performance"]["separability"] == pytest.approx(out["embedding"]["score"], abs=1e-3)
    assert out["performance"]["trusted"] is (out["embedding"]["score"] < 0.95)
    html_path = Path(out["html_path"])
    assert html_path.exists()
    # the report opens on what the check found, and the run links to it over HTTP (never file://)
    page = html_path.read_text()
    assert page.index("nfl-mlops report header") < page.index("</body>")
    for fact in (MODEL, f"v{info.version} (stable)", "drift detected", "n_nfl_entities"):
        assert fact in page, fact
    assert out["report_url"] == f"http://127.0.0.1:{settings.api_port}/mlops/reports/{html_path.name}"
    with session_scope(settings.db_url) as s:
        row = s.get(MonitoringRun, out["monitoring_run_id"])
        assert row.drift_detected and row.summary["performance"]["performance_degraded"]
        assert row.summary["evidently_snapshots"] == out["evidently_snapshots"]
        assert s.scalar(select(MonitoringRun.id).where(MonitoringRun.model_name == MODEL)) is not None
    ws = open_workspace(workspace_path(settings))
    [project] = [p for p in ws.list_projects() if p.name == project_name(MODEL)]
    assert len(ws.list_runs(project.id)) == 2  # the drift report and the summary
