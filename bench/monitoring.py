"""Monitoring benchmark: one monitoring run over 10k and 100k logged predictions, and where the time goes.

    .venv/bin/python bench/monitoring.py                  # sizes 10k and 100k, stages + the real flow
    .venv/bin/python bench/monitoring.py --no-flow        # stages only (no Prefect server)
    .venv/bin/python bench/monitoring.py --scenarios      # also the scenario table (fine-tunes a small model)

Setup (not timed): a temporary MLOPS_HOME with a SQLite state DB; a reference profile built from
held-out corpus tweets (descriptors of 3,000 training texts + 1,000 test texts, 500 base-encoder
embeddings, test predictions and labels); N logged predictions of corpus tweets drawn with replacement
from every source (so the window really drifts), 30 % of them with a feedback label. The classifier
whose predictions are logged is the TF-IDF baseline: monitoring reads only labels and confidences, so
its cost does not depend on which model made them.

Timed, per size, in the order the flow runs them (`nfl_mlops.monitoring.monitor` stages):

  load window      `prediction_window` from SQLite (the N rows, text included)
  descriptors      text descriptors + prediction columns of the window
  evidently drift  Evidently ValueDrift on 10 columns (each side sampled to 50k rows)
  html + json      the Evidently report saved as HTML and JSON
  embeddings       encoding the 500-text window sample with the base encoder (loaded once before)
  embedding test   Evidently's domain classifier on 500 + 500 embeddings
  performance      observed metrics (feedback) + the label-free estimate with its bootstrap
  combine          verdicts, payload, markdown
  workspace        summary snapshot + both snapshots added to the Evidently workspace

Once per process (reported apart): importing Evidently and loading the encoder. Unless `--no-flow`,
the real `monitoring_flow` also runs against a temporary Prefect server (its start is not timed):
once in this process (adds the Prefect task, artifact and event overhead) and once in a fresh Python
process per size, as a deployment run is (adds Python start, imports and the encoder load). Target:
100k predictions in 60 s or less, judged on the fresh-process run.

Prints a table and writes `bench/results/monitoring.json` (the scenario table under "scenarios").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODEL_NAME = "bench-monitoring"
BASE = "sentence-transformers/all-MiniLM-L6-v2"
TARGET_100K_S = 60.0
STAGES = (
    "load_window",
    "descriptors",
    "evidently_drift",
    "html_json",
    "embeddings",
    "embedding_test",
    "performance",
    "combine",
    "workspace",
)


def _env(home: Path) -> None:
    os.environ.update(
        {
            "MLOPS_HOME": str(home),
            "WANDB_MODE": "offline",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    os.environ.pop("MLOPS_DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))


def build_setup(home: Path, sizes: list[int], seed: int = 0) -> dict[str, Any]:
    """Reference profile (saved in a registry-shaped model folder), and the logged predictions."""
    import numpy as np
    from sqlalchemy import insert

    from nfl_mlops import LABELS
    from nfl_mlops.data import load_corpus, prepare, select
    from nfl_mlops.db import Prediction, get_engine
    from nfl_mlops.modeling.baseline import TfidfBaseline
    from nfl_mlops.modeling.metrics import evaluate
    from nfl_mlops.monitoring.reference import build_reference, save_reference
    from nfl_mlops.serving.service import text_hash
    from nfl_mlops.settings import get_settings

    get_settings.cache_clear()
    corpus = prepare(load_corpus()).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    non_nfl = select(corpus, topics_exclude=["nfl"])
    train, test = non_nfl.iloc[:3000], non_nfl.iloc[3000:4000]
    model = TfidfBaseline(seed=seed).fit(train["text"], train["label"])
    test_proba = model.predict_proba(test["text"].tolist())
    test_metrics = evaluate(test["label"].tolist(), test_proba).as_dict()
    model_dir = home / "bench-model"
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in (
        "config.json",
        "model.safetensors",
    ):  # registry-shaped; monitoring never loads the classifier
        (model_dir / name).write_text("{}")
    reference = build_reference(
        train["text"].tolist(), test["text"].tolist(), test_proba, test["label"].tolist(), encoder=BASE
    )
    save_reference(reference, model_dir)

    pool = corpus.iloc[4000:].reset_index(drop=True)
    pool_proba = model.predict_proba(pool["text"].tolist())
    rng = np.random.default_rng(seed)
    engine = get_engine(get_settings().db_url)
    end = datetime(2026, 1, 2, tzinfo=UTC)
    windows = {}
    for i, n in enumerate(sizes):
        idx = rng.integers(0, len(pool), n)
        start = end - timedelta(days=1)
        step = 86_000 / n  # seconds between predictions: all inside [start, end)
        labelled = rng.uniform(size=n) < 0.3
        rows = [
            dict(
                id=f"b{i}-{j:07d}",
                request_id="bench",
                created_at=start + timedelta(seconds=j * step),
                model_name=MODEL_NAME,
                model_version=1,
                arm="stable",
                served=True,
                text=pool.at[k, "text"],
                text_hash=text_hash(pool.at[k, "text"]),
                label=LABELS[int(pool_proba[k].argmax())],
                confidence=float(pool_proba[k].max()),
                latency_ms=5.0,
                true_label=pool.at[k, "label"] if labelled[j] else None,
            )
            for j, k in enumerate(idx)
        ]
        with engine.begin() as conn:
            for c in range(0, n, 10_000):
                conn.execute(insert(Prediction), rows[c : c + 10_000])
        windows[n] = (start, end)
        end += timedelta(days=2)  # each size in its own day
    return {
        "model_dir": model_dir,
        "test_metrics": test_metrics,
        "windows": windows,
        "reference_rows": len(reference.frame),
    }


def time_stages(setup: dict[str, Any], n: int, encoder: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """The monitoring stages on the window of `n` predictions; returns seconds per stage and a summary."""
    from nfl_mlops.monitoring.embeddings import embedding_drift, sample_indices
    from nfl_mlops.monitoring.feedback import prediction_window
    from nfl_mlops.monitoring.monitor import (
        MonitoringConfig,
        MonitoringResult,
        descriptor_drift,
        window_descriptors,
        window_performance,
    )
    from nfl_mlops.monitoring.reference import CATEGORICAL, NUMERICAL, load_reference
    from nfl_mlops.monitoring.workspace import add_snapshots, summary_snapshot, workspace_path
    from nfl_mlops.settings import get_settings

    settings = get_settings()
    config = MonitoringConfig()
    reference = load_reference(setup["model_dir"])
    start, end = setup["windows"][n]
    t: dict[str, float] = {}

    def clock(stage, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        t[stage] = time.perf_counter() - t0
        return out

    window = clock("load_window", prediction_window, MODEL_NAME, start, end, db_url=settings.db_url)
    assert len(window) == n, (len(window), n)
    current = clock("descriptors", window_descriptors, window, reference)
    drift = clock("evidently_drift", descriptor_drift, reference, current, config, None, f"bench-{n}", end)
    report_dir = settings.reports_path
    report_dir.mkdir(parents=True, exist_ok=True)

    def save():
        drift.snapshot.save_html(str(report_dir / f"bench-{n}.html"))
        drift.snapshot.save_json(str(report_dir / f"bench-{n}.json"))

    clock("html_json", save)
    texts = window["text"].tolist()
    idx = sample_indices(len(texts), config.embedding_sample, config.seed)
    emb = clock("embeddings", encoder.encode, [texts[i] for i in idx])
    embedding = clock(
        "embedding_test",
        embedding_drift,
        reference.embeddings,
        emb,
        config.embedding_threshold,
        encoder=encoder.name,
    )
    perf = clock("performance", window_performance, reference, setup["test_metrics"], window, config)

    def combine():
        result = MonitoringResult.combine(reference, current, drift, embedding, perf)
        json.dumps(result.payload(), default=str)
        result.to_markdown("bench")
        return result

    result = clock("combine", combine)
    clock(
        "workspace",
        lambda: add_snapshots(
            workspace_path(settings),
            MODEL_NAME,
            [drift.snapshot, summary_snapshot(result.summary_values(), f"summary-{n}", end)],
            drift_columns=[*NUMERICAL, *CATEGORICAL],
        ),
    )
    summary = {
        "drift_share": round(result.drift.drift_share, 3),
        "drifted": list(result.drift.drifted_columns),
        "embedding_auc": round(embedding.score, 3),
        "performance_source": perf.source,
        "performance_degraded": perf.degraded,
        "html_bytes": (report_dir / f"bench-{n}.html").stat().st_size,
        "n_labelled": perf.n_labelled,
    }
    return t, summary


COLD_FLOW = """
import sys, warnings
warnings.filterwarnings("ignore")
from datetime import datetime
from flows.monitoring import monitoring_flow
res = monitoring_flow(model_name=sys.argv[1], end=datetime.fromisoformat(sys.argv[2]), window_hours=24.0)
assert res["status"] in ("drift", "degraded", "ok"), res
"""


def time_flow(setup: dict[str, Any], sizes: list[int]) -> tuple[dict[int, float], dict[int, float]]:
    """The real monitoring flow per size against a temporary Prefect server (its start not timed).

    Returns (warm, cold): warm = in this process (Evidently imported, the encoder loaded by the first
    run); cold = a fresh Python process per run, as a deployment run is (imports + encoder load included).
    """
    import subprocess

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from flows.monitoring import monitoring_flow
    from nfl_mlops.registry.store import Registry

    Registry.from_settings().register(MODEL_NAME, setup["model_dir"], metrics={"test": setup["test_metrics"]})
    warm, cold = {}, {}
    with prefect_test_harness(server_startup_timeout=180):
        env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(ROOT)}
        for n in sizes:
            start, end = setup["windows"][n]
            t0 = time.perf_counter()
            res = monitoring_flow(model_name=MODEL_NAME, end=end - timedelta(seconds=1), window_hours=24.0)
            warm[n] = time.perf_counter() - t0
            assert res["n_current"] == min(n, 50_000), res["n_current"]
        for n in sizes:
            start, end = setup["windows"][n]
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", COLD_FLOW, MODEL_NAME, (end - timedelta(seconds=1)).isoformat()],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            cold[n] = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"cold flow run failed:\n{proc.stderr[-3000:]}")
    return warm, cold


def run_scenarios(model_dir: Path | None = None) -> dict[str, Any]:
    """The scenario table (tests/flows/test_monitoring_scenarios.py's setup): a MiniLM trained on airline tweets.

    `model_dir`: a model already fine-tuned with this recipe (skips the few minutes of training).
    """
    from nfl_mlops.modeling.metrics import evaluate
    from nfl_mlops.modeling.params import TrainParams
    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.modeling.train import fine_tune
    from nfl_mlops.monitoring.monitor import monitor_window
    from nfl_mlops.monitoring.reference import build_reference
    from nfl_mlops.monitoring.scenarios import airline_scenarios, scenario_row, scored_window

    data = airline_scenarios(n_train=1000, n_test=400, n_window=600, seed=0)
    train_s = None
    if model_dir is None:
        model_dir = Path(tempfile.mkdtemp(prefix="bench-scenario-model-"))
        t0 = time.perf_counter()
        fine_tune(
            data.train["text"].tolist(),
            data.train["label"].tolist(),
            TrainParams(epochs=2, batch_size=32, learning_rate=2e-4, max_length=64),
            model_dir,
            base_model=BASE,
        )
        train_s = round(time.perf_counter() - t0, 1)
    model = SentimentModel.load(model_dir)
    test_proba = model.predict_proba(data.test["text"].tolist())
    test_metrics = evaluate(data.test["label"].tolist(), test_proba).as_dict()
    reference = build_reference(
        data.train["text"].tolist(),
        data.test["text"].tolist(),
        test_proba,
        data.test["label"].tolist(),
        encoder=BASE,
    )
    rows = []
    for name, w in data.windows.items():
        window = scored_window(w, model.predict_proba(w["text"].tolist()))
        result, _ = monitor_window(window, reference, test_metrics)
        rows.append(scenario_row(name, result, window))
    return {
        "model": {
            "train_rows": len(data.train),
            "test_rows": len(data.test),
            "train_seconds": train_s,
            "test_accuracy": round(test_metrics["accuracy"], 4),
            "test_macro_f1": round(test_metrics["macro_f1"], 4),
        },
        "rows": rows,
    }


def print_scenarios(s: dict[str, Any]) -> None:
    rows = s["rows"]
    m = s["model"]
    print(
        f"\nScenarios: MiniLM fine-tuned on {m['train_rows']} airline tweets; test ({m['test_rows']}): "
        f"accuracy {m['test_accuracy']:.3f}, macro-F1 {m['test_macro_f1']:.3f}"
    )
    signals = [k for k, v in rows[0].items() if isinstance(v, dict) and "score" in v]
    print("signal".ljust(20) + "".join(r["scenario"].rjust(24) for r in rows))
    for sig in signals:
        print(
            sig.ljust(20)
            + "".join(f"{r[sig]['score']:.3f}{' *' if r[sig]['drifted'] else ''}".rjust(24) for r in rows)
        )
    for key in ("drift_share", "events", "degraded_by_observed", "degraded_by_estimate"):
        print(key.ljust(20) + "".join(str(r.get(key)).rjust(24) for r in rows))
    for src in ("observed", "estimated"):
        for metric in ("accuracy", "macro_f1"):
            print(
                f"{src} {metric}".ljust(20)
                + "".join(
                    (
                        f"{r[src][metric]['value']:.3f} [{r[src][metric]['lower']:.2f},{r[src][metric]['upper']:.2f}]"
                        if r[src]
                        else "-"
                    ).rjust(24)
                    for r in rows
                )
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="window sizes (logged predictions)")
    ap.add_argument("--no-flow", action="store_true", help="skip the real flow run")
    ap.add_argument("--scenarios", action="store_true", help="also run the scenario table (~3-6 min)")
    ap.add_argument("--only-scenarios", action="store_true")
    ap.add_argument(
        "--scenario-model",
        type=Path,
        default=None,
        help="a model fine-tuned with the scenario recipe (1,000 airline tweets, 2 epochs, lr 2e-4)",
    )
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    sizes = [int(s) for s in args.sizes.split(",")]
    home = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    _env(home)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / "monitoring.json"
    results: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    results["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_avg_at_start": os.getloadavg(),
    }

    if not args.only_scenarios:
        print(f"setting up {sizes} logged predictions under {home} ...", flush=True)
        t0 = time.perf_counter()
        setup = build_setup(home, sizes)
        print(
            f"  setup {time.perf_counter() - t0:.0f} s (not timed); reference rows {setup['reference_rows']}"
        )
        once: dict[str, float] = {}
        t0 = time.perf_counter()
        import evidently  # noqa: F401
        from evidently import Report  # noqa: F401

        once["import_evidently"] = time.perf_counter() - t0
        from nfl_mlops.monitoring.embeddings import SentenceEncoder

        t0 = time.perf_counter()
        encoder = SentenceEncoder.load(BASE)
        encoder.encode(["warm up the encoder once"] * 8)
        once["load_encoder"] = time.perf_counter() - t0
        runs = []
        for n in sizes:
            stages, summary = time_stages(setup, n, encoder)
            runs.append(
                {
                    "n": n,
                    "stages": {k: round(v, 3) for k, v in stages.items()},
                    "total": round(sum(stages.values()), 2),
                    "summary": summary,
                }
            )
            print(f"  {n}: {sum(stages.values()):.1f} s", flush=True)
        flow, cold = ({}, {}) if args.no_flow else time_flow(setup, sizes)
        for r in runs:
            if r["n"] in flow:
                r["flow_total"] = round(flow[r["n"]], 2)
                r["flow_cold_process"] = round(cold[r["n"]], 2)
        results.update(
            {
                "once_per_process": {k: round(v, 2) for k, v in once.items()},
                "runs": runs,
                "target_100k_s": TARGET_100K_S,
            }
        )
        print_table(runs, once)

    if args.scenarios or args.only_scenarios:
        results["scenarios"] = run_scenarios(args.scenario_model)
        print_scenarios(results["scenarios"])
    out_path.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {out_path}")


def print_table(runs: list[dict[str, Any]], once: dict[str, float]) -> None:
    print("\nstage".ljust(20) + "".join(f"{r['n']:>12,}" for r in runs) + "   share of the largest")
    big = runs[-1]
    for stage in STAGES:
        print(
            stage.ljust(19)
            + "".join(f"{r['stages'][stage]:>11.2f}s" for r in runs)
            + f"   {100 * big['stages'][stage] / big['total']:5.1f} %"
        )
    print("total (stages)".ljust(19) + "".join(f"{r['total']:>11.2f}s" for r in runs))
    if "flow_total" in big:
        print(
            "monitoring_flow".ljust(19)
            + "".join(f"{r.get('flow_total', float('nan')):>11.2f}s" for r in runs)
            + "   (in process: Prefect tasks, artifacts, event; the first run loads the encoder)"
        )
        print(
            "flow, fresh process".ljust(19)
            + "".join(f"{r.get('flow_cold_process', float('nan')):>11.2f}s" for r in runs)
            + "   (as a deployment run: + Python start, imports, encoder load)"
        )
    print("once per process: " + ", ".join(f"{k} {v:.1f}s" for k, v in once.items()))
    worst = big.get("flow_cold_process", big.get("flow_total", big["total"] + sum(once.values())))
    ok = big["n"] < 100_000 or worst <= TARGET_100K_S
    print(f"target: 100k in <= {TARGET_100K_S:.0f} s incl. cold costs -> {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
