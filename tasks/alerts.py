"""Alert tasks: Prefect events (what automations react to) and artifacts (what people read)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops import events


@task(name="emit-event", cache_policy=NO_CACHE)
def emit(event: str, model_name: str, payload: dict[str, Any]) -> str | None:
    """Emit `nfl-mlops.<event>` for the model resource (`nfl_mlops.events.emit`); returns the event id."""
    event_id = events.emit(event, model_name, payload)
    get_run_logger().info(
        "emitted %s %s" if event_id else "NOT emitted %s %s", events.event_name(event), payload
    )
    return event_id


@task(name="publish-markdown", cache_policy=NO_CACHE)
def publish_markdown(key: str, markdown: str, description: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    from nfl_mlops.security import redact

    create_markdown_artifact(key=key, markdown=redact(markdown), description=redact(description))


@task(name="publish-model-status", cache_policy=NO_CACHE)
def publish_model_status(model_name: str) -> str | None:
    """Refresh the model's status artifact (stable key `model-status-<model>`): versions, champion, live
    split, open drift episode, last verdicts. Never fails the flow that calls it."""
    from datetime import UTC, datetime

    from prefect.artifacts import create_markdown_artifact

    from nfl_mlops.monitoring.episodes import open_episodes
    from nfl_mlops.monitoring.triggers import recent_verdicts
    from nfl_mlops.naming import artifact_key
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.reports import model_status_markdown
    from nfl_mlops.rollout.state import active_rollout
    from nfl_mlops.settings import get_settings

    db = get_settings().db_url
    try:
        markdown = model_status_markdown(
            model_name,
            Registry.from_settings().list_versions(model_name),
            active_rollout(model_name, db_url=db),
            open_episodes(model_name, db),
            recent_verdicts(model_name, 5, db),
            at=datetime.now(UTC),
        )
        key = artifact_key("model-status", model_name)
        create_markdown_artifact(
            key=key, markdown=markdown, description=f"{model_name}: the model's state now"
        )
        return key
    except Exception as exc:  # a status view must never fail the run that refreshes it
        get_run_logger().warning(
            "model status of %s not published: %s: %s", model_name, type(exc).__name__, exc
        )
        return None
