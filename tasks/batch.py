"""Batch-scoring tasks: check and plan the input, score one chunk, commit (or abort) the output. Never retried
except the chunk (a retry rewrites its own part file)."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops import batch
from nfl_mlops.naming import artifact_key
from nfl_mlops.registry.store import Registry


@dataclass(frozen=True)
class BatchPlan:
    """Everything a chunk task needs (small and picklable: it travels to Dask workers)."""

    source: batch.BatchInput
    chunks: list[batch.Chunk]
    work_uri: str
    output_uri: str
    model_name: str
    model_version: int
    backend: str | None


@task(name="plan-batch", cache_policy=NO_CACHE)
def plan_batch(
    input_uri: str,
    output_uri: str | None,
    model_name: str,
    version: str,
    chunk_rows: int,
    backend: str | None = None,
    overwrite: bool = False,
) -> BatchPlan:
    """Resolve the version, check the output location and the input (fails fast, before any scoring)."""
    logger = get_run_logger()
    info = Registry.from_settings().get(
        model_name, version
    )  # an alias resolves once: every chunk, one version
    batch.input_format(input_uri)
    output_uri = output_uri or batch.default_output_uri(input_uri, model_name, info.version)
    work = batch.work_location(output_uri, overwrite=overwrite)
    try:
        source = batch.open_input(input_uri, batch.staged_input_uri(work), chunk_rows)
    except Exception:
        batch.abort_output(work)
        raise
    chunks = batch.plan_chunks(source.rows, chunk_rows)
    logger.info(
        "%s: %d rows (%s) in %d chunks of <= %d, scored by %s v%d",
        input_uri,
        source.rows,
        source.format,
        len(chunks),
        chunk_rows,
        model_name,
        info.version,
    )
    return BatchPlan(source, chunks, work, output_uri, model_name, info.version, backend)


@task(name="score-chunk", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=[2])
def score_chunk(plan: BatchPlan, chunk: batch.Chunk, batch_size: int = 64) -> batch.ChunkResult:
    """Score one chunk into its part file (the version loads once per worker process)."""
    return batch.score_chunk(
        plan.source,
        chunk,
        plan.work_uri,
        plan.model_name,
        plan.model_version,
        backend=plan.backend,
        batch_size=batch_size,
    )


@task(name="commit-batch", cache_policy=NO_CACHE)
def commit_batch(
    plan: BatchPlan, results: list[batch.ChunkResult], seconds: float, runner: str
) -> batch.BatchSummary:
    """Write the manifest, make the output visible at once, and leave the summary artifact."""
    from prefect.artifacts import create_markdown_artifact

    summary = batch.summarize(
        plan.source, plan.output_uri, plan.model_name, plan.model_version, results, seconds, runner
    )
    batch.commit_output(plan.work_uri, plan.output_uri, results, summary)
    create_markdown_artifact(
        key=artifact_key("batch-scoring", plan.model_name),
        markdown=summary.markdown(),
        description=f"{summary.rows:,} rows scored by {plan.model_name} v{plan.model_version}",
    )
    get_run_logger().info(
        "scored %d rows in %.1f s (%.1f rows/s) -> %s",
        summary.rows,
        summary.seconds,
        summary.rows_per_second,
        plan.output_uri,
    )
    return summary


@task(name="abort-batch", cache_policy=NO_CACHE)
def abort_batch(plan: BatchPlan) -> None:
    """Remove the work folder of a failed run: no partial output stays behind."""
    batch.abort_output(plan.work_uri)
    get_run_logger().warning("batch scoring failed: removed %s", plan.work_uri)
