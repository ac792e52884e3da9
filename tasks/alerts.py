"""Alert tasks: Prefect events (what automations react to) and artifacts (what people read)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

EVENT_PREFIX = "nfl-mlops"


def resource_id(model_name: str) -> str:
    return f"{EVENT_PREFIX}.model.{model_name}"


@task(name="emit-event", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def emit(event: str, model_name: str, payload: dict[str, Any]) -> str | None:
    """Emit `nfl-mlops.<event>` for the model resource; returns the event id."""
    from prefect.events import emit_event

    name = f"{EVENT_PREFIX}.{event}"
    ev = emit_event(event=name, resource={"prefect.resource.id": resource_id(model_name),
                                          "prefect.resource.name": model_name}, payload=payload)
    get_run_logger().info("emitted %s %s", name, payload)
    return str(ev.id) if ev is not None else None


@task(name="publish-markdown", cache_policy=NO_CACHE)
def publish_markdown(key: str, markdown: str, description: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key=key, markdown=markdown, description=description)
