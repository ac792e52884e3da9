"""Labelling tasks: top up an episode's labelling queue from its window (`nfl_mlops.monitoring.labeling`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.settings import get_settings


@task(name="queue-for-labelling", cache_policy=NO_CACHE)
def queue_for_labelling(
    model_name: str,
    version: int,
    episode_id: str,
    start: datetime | None,
    stop: datetime | None,
    budget: int | None = None,
) -> dict[str, Any]:
    """Queue the window's most informative unlabelled predictions for the episode, up to its budget, and
    publish the queue as a table artifact. Never fails the monitoring run that calls it: a queue that could
    not be built is logged and reported as such (the episode and its event matter more)."""
    from prefect.artifacts import create_table_artifact

    from nfl_mlops.modeling.predictor import load_as_served
    from nfl_mlops.monitoring import labeling as lb
    from nfl_mlops.monitoring.embeddings import get_encoder
    from nfl_mlops.naming import artifact_key
    from nfl_mlops.registry.artifacts import resolve_version
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.security import redact

    settings = get_settings()
    logger = get_run_logger()
    budget = settings.labeling_budget if budget is None else budget
    if budget <= 0:
        return {"episode_id": episode_id, "budget": 0, "queued": 0, "added": 0}
    try:
        candidates = lb.queue_candidates(
            model_name,
            version,
            start,
            stop,
            settings.db_url,
            limit=max(1000, int(8 * budget)),
            strategy=settings.labeling_strategy,
        )
        have = lb.queued_count(episode_id, model_name, settings.db_url)
        if have >= budget or not candidates:
            result = lb.QueueResult(episode_id, budget, have, 0, len(candidates), 0)
        else:
            info = Registry.from_settings(settings).get(model_name, version)
            model = load_as_served(resolve_version(info, settings))
            encoder = get_encoder(settings.base_model)
            result = lb.top_up_queue(
                model_name,
                episode_id,
                candidates,
                model.predict_proba,
                encoder.encode,
                budget,
                db_url=settings.db_url,
                strategy=settings.labeling_strategy,
            )
        page = lb.read_queue(model_name, episode_id, "pending", 0, 50, settings.db_url)
        create_table_artifact(
            key=artifact_key("labeling-queue", model_name),
            table=[{k: redact(str(v)) for k, v in row.items()} for row in lb.queue_table(page)],
            description=redact(lb.queue_markdown(model_name, episode_id, page, result.added)),
        )
        logger.info(
            "labelling queue of episode %s: %d queued (%d new from %d candidates, %d near-duplicates "
            "skipped), %d labelled",
            episode_id,
            result.queued,
            result.added,
            result.candidates,
            result.duplicates_skipped,
            page.labelled,
        )
        return {**result.as_dict(), "labelled": page.labelled}
    except Exception as exc:  # the queue is an aid; the episode and its event must not depend on it
        logger.warning("labelling queue of episode %s not built: %s: %s", episode_id, type(exc).__name__, exc)
        return {"episode_id": episode_id, "budget": budget, "error": f"{type(exc).__name__}: {exc}"}


@task(name="wait-for-labels", cache_policy=NO_CACHE)
def wait_for_labels(
    model_name: str, episode_id: str, minutes: float, poll_seconds: float = 5.0
) -> dict[str, Any]:
    """Wait up to `minutes` until the episode's labelling queue is labelled; then the retraining reads what
    came (a queue nobody finished still trains on the labels that did). Logs progress while it waits."""
    import time

    from nfl_mlops.monitoring.labeling import queue_progress

    settings = get_settings()
    logger = get_run_logger()
    start = time.monotonic()
    deadline = start + max(0.0, minutes) * 60
    last = None
    while True:
        queued, labelled = queue_progress(model_name, episode_id, settings.db_url)
        done = queued == 0 or labelled >= queued
        if done or time.monotonic() >= deadline:
            waited = round(time.monotonic() - start, 1)
            logger.info(
                "labelling queue of episode %s: %d of %d labelled after %.0f s%s",
                episode_id,
                labelled,
                queued,
                waited,
                "" if done else " (the wait ended; retraining with the labels that came)",
            )
            return {"queued": queued, "labelled": labelled, "waited_s": waited, "complete": done}
        if (queued, labelled) != last:
            logger.info("waiting for labels: %d of %d queued predictions labelled", labelled, queued)
            last = (queued, labelled)
        time.sleep(poll_seconds)
