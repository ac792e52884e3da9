"""The task runner of a fan-out stage (batch-scoring chunks, HPO workers), chosen by a flow parameter."""

from __future__ import annotations

import os
from typing import Any, Literal

RunnerKind = Literal["threads", "dask"]


def task_runner(kind: RunnerKind, workers: int, dask_address: str | None = None) -> Any:
    """Threads in this process, or Dask: the scheduler at `dask_address`, else a LocalCluster of `workers`
    processes (one thread each; each gets cores / workers intra-op threads so they do not oversubscribe)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    if kind == "threads" and not dask_address:
        return ThreadPoolTaskRunner(max_workers=max(1, workers))
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": max(1, workers),
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            "env": {"MLOPS_TORCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)},
        },
    )


def runner_label(kind: RunnerKind, workers: int, dask_address: str | None = None) -> str:
    """How the summary names the runner."""
    if dask_address:
        return f"dask ({dask_address})"
    return f"dask LocalCluster x{workers}" if kind == "dask" else f"threads x{workers}"
