"""Batch-scoring flow: a large tweet file scored in chunks (mapped tasks on threads or Dask) -> Parquet output
with the version on every row, a manifest and a summary artifact."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, unmapped
from prefect.runtime import flow_run as this_run

from nfl_mlops.batch import ChunkResult
from nfl_mlops.naming import run_name
from nfl_mlops.settings import get_settings
from tasks.batch import BatchPlan, abort_batch, commit_batch, plan_batch, score_chunk
from tasks.runners import RunnerKind, runner_label, task_runner


@flow(name="batch-scoring-chunks")
def score_chunks_flow(plan: BatchPlan, batch_size: int = 64) -> list[ChunkResult]:
    """The chunks as mapped tasks on this flow's task runner (set by the batch-scoring flow)."""
    futures = score_chunk.map(unmapped(plan), plan.chunks, batch_size=unmapped(batch_size))
    return [f.result() for f in futures]


@flow(name="batch-scoring", log_prints=True, flow_run_name=lambda: run_name("batch", this_run.parameters))
def batch_scoring_flow(
    input_uri: str,
    output_uri: str | None = None,
    model_name: str | None = None,
    version: str = "champion",
    chunk_rows: int = 10_000,
    runner: RunnerKind = "threads",
    workers: int = 2,
    dask_address: str | None = None,
    backend: str | None = None,
    batch_size: int = 64,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score a tweet file with a registered version; bad input fails before any row is scored.

    Args:
        input_uri: CSV or Parquet file with a `text` column (and an optional `id`): a local path or an fsspec
            URI (s3://..., file://...).
        output_uri: output folder (path or URI); default `<input>.scored-<model>-v<N>` beside the input.
        model_name: the registered model; default MLOPS_MODEL_NAME.
        version: version number or alias, resolved once for the whole run.
        chunk_rows: rows per chunk (one mapped task and one part file each).
        runner: `threads` (in this process) or `dask` (a LocalCluster of `workers` processes).
        workers: threads, or the LocalCluster's worker processes.
        dask_address: a running Dask scheduler (tcp://host:8786); implies Dask, `workers` is then unused.
        backend: auto|torch|onnx|onnx-int8; default MLOPS_INFERENCE_BACKEND (the runtime the API serves with).
        batch_size: texts per forward pass.
        overwrite: replace an existing output folder (at the commit, at once).
    """
    model_name = model_name or get_settings().model_name

    # Plan (checks the input and the output location; fails fast)
    plan = plan_batch(input_uri, output_uri, model_name, version, chunk_rows, backend, overwrite)

    # Score (mapped chunks on the chosen task runner)
    label = runner_label(runner, workers, dask_address)
    started = time.perf_counter()
    try:
        results = score_chunks_flow.with_options(
            task_runner=task_runner(runner, workers, dask_address), name="batch-scoring-chunks"
        )(plan, batch_size)
    except BaseException:
        abort_batch(plan)
        raise
    seconds = time.perf_counter() - started

    # Commit (manifest, rename, artifact)
    summary = commit_batch(plan, results, seconds, label)
    return summary.as_dict()
