"""Batch-scoring throughput: one process vs. the batch-scoring flow on a Dask LocalCluster of 1 and 2 workers
(issue 14 item 5), on the same file, side by side in one script.

    .venv/bin/python bench/batch_scoring.py                 # 20k rows, about 6-8 min on 2 cores
    .venv/bin/python bench/batch_scoring.py --rows 5000     # a quick look

The model is the packaged MiniLM-L6 with a fresh 3-class head (bench/serving.py's), registered in a temporary
MLOPS_HOME with its ONNX variants exported and checked as registration does; every configuration scores with
the same runtime (`--backend`, default onnx fp32). The file is real corpus tweets repeated to `--rows` (CSV).

- `single`: the library's steps in this process, no Prefect, no Dask (plan, score every chunk, commit).
- `dask-1`, `dask-2`: `batch_scoring_flow(runner="dask", workers=n)` on a temporary Prefect server; each worker
  process loads the version once and gets cores / n intra-op threads (tasks/runners.py).

Rows/s is rows over the wall time of the whole run (model loading, cluster start and commit included) and over
the scoring stage alone. Writes bench/results/batch_scoring.json and prints the table for bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
MODEL = "bench-batch"


def prepare(home: Path, rows: int, backend: str) -> tuple[str, dict[str, Any]]:
    """Register the model (with its checked ONNX variants) and write the tweet file; returns (file, runtimes)."""
    import pandas as pd
    from serving import prepare_model

    from nfl_mlops.data import load_corpus
    from nfl_mlops.data import prepare as clean
    from nfl_mlops.modeling.runtimes import export_runtimes
    from nfl_mlops.registry.store import Registry

    corpus = clean(load_corpus())
    folder = prepare_model(home / "model")
    check = corpus.sample(n=300, random_state=1)
    record = (
        export_runtimes(folder, check["text"].tolist(), check["label"].tolist()) if backend != "torch" else {}
    )
    Registry.from_settings().register(MODEL, folder, description="batch-scoring benchmark")
    texts = corpus["text"].sample(frac=1.0, random_state=2).tolist()
    frame = pd.DataFrame(
        {"id": [f"t{i}" for i in range(rows)], "text": [texts[i % len(texts)] for i in range(rows)]}
    )
    path = home / "tweets.csv"
    frame.to_csv(path, index=False)
    return str(path), {
        k: v.get("admitted") for k, v in record.items() if isinstance(v, dict) and "admitted" in v
    }


def single(path: str, out: str, chunk_rows: int, backend: str) -> dict[str, Any]:
    """Plan, score every chunk and commit in this process (the model loads inside the timing)."""
    from nfl_mlops import batch

    batch._MODELS.clear()
    started = time.perf_counter()
    work = batch.work_location(out)
    source = batch.open_input(path, batch.staged_input_uri(work), chunk_rows)
    scoring = time.perf_counter()
    results = [
        batch.score_chunk(source, c, work, MODEL, 1, backend=backend)
        for c in batch.plan_chunks(source.rows, chunk_rows)
    ]
    scored = time.perf_counter() - scoring
    summary = batch.summarize(source, out, MODEL, 1, results, scored, "single process")
    batch.commit_output(work, out, results, summary)
    return {
        "rows": summary.rows,
        "wall_s": time.perf_counter() - started,
        "scoring_s": scored,
        "backend": summary.backend,
        "workers": 1,
    }


def flow(path: str, out: str, chunk_rows: int, backend: str, workers: int) -> dict[str, Any]:
    from flows.batch_scoring import batch_scoring_flow

    started = time.perf_counter()
    summary = batch_scoring_flow(
        input_uri=path,
        output_uri=out,
        model_name=MODEL,
        version="1",
        chunk_rows=chunk_rows,
        runner="dask",
        workers=workers,
        backend=backend,
    )
    return {
        "rows": summary["rows"],
        "wall_s": time.perf_counter() - started,
        "scoring_s": summary["seconds"],
        "backend": summary["backend"],
        "workers": len(summary["workers"]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--chunk-rows", type=int, default=2_500)
    p.add_argument("--backend", default="onnx", choices=["torch", "onnx", "onnx-int8"])
    args = p.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    os.environ.update(
        MLOPS_HOME=str(home),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        WANDB_MODE="offline",
    )
    os.environ.pop("MLOPS_DATABASE_URL", None)
    path, runtimes = prepare(home, args.rows, args.backend)
    print(f"file: {args.rows} rows, chunks of {args.chunk_rows}; runtimes admitted: {runtimes}", flush=True)
    runs: dict[str, dict[str, Any]] = {}
    runs["single"] = single(path, str(home / "out-single"), args.chunk_rows, args.backend)
    print("single", runs["single"], flush=True)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        for n in (1, 2):
            runs[f"dask-{n}"] = flow(path, str(home / f"out-dask-{n}"), args.chunk_rows, args.backend, n)
            print(f"dask-{n}", runs[f"dask-{n}"], flush=True)
    base = runs["single"]["rows"] / runs["single"]["wall_s"]
    lines = [
        "| config | worker processes | runtime | rows | wall s | rows/s (wall) | vs single | scoring s | rows/s (scoring) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        rate = r["rows"] / r["wall_s"]
        lines.append(
            f"| {name} | {r['workers']} | {r['backend']} | {r['rows']:,} | {r['wall_s']:.1f} | {rate:.1f} | "
            f"{rate / base:.2f}x | {r['scoring_s']:.1f} | {r['rows'] / r['scoring_s']:.1f} |"
        )
    print("\n".join(lines))
    result = {
        "args": vars(args),
        "cpu_count": os.cpu_count(),
        "runtimes": runtimes,
        "runs": runs,
        "table": lines,
    }
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "batch_scoring.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
