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

    create_markdown_artifact(key=key, markdown=markdown, description=description)
