"""Prefect events of the loop: their names, the model resource they are about, and the one emitter.

Every producer (flows through `tasks.alerts.emit`, the API's rollout driver, the SDK) emits through
`emit`, so the names that `prefect.yaml`'s triggers match are written once, here.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

EVENT_PREFIX = "nfl-mlops"
DRIFT_DETECTED = "drift.detected"
PERFORMANCE_DEGRADED = "performance.degraded"
ROLLOUT_PROMOTED = "rollout.promoted"
ROLLOUT_ROLLED_BACK = "rollout.rolled_back"


def event_name(event: str) -> str:
    """`drift.detected` -> `nfl-mlops.drift.detected` (a name that already has the prefix is kept)."""
    return event if event.startswith(f"{EVENT_PREFIX}.") else f"{EVENT_PREFIX}.{event}"


def resource_id(model_name: str) -> str:
    """The Prefect resource id of a model (what the automations' `match` selects)."""
    return f"{EVENT_PREFIX}.model.{model_name}"


def prefect_api_url() -> str | None:
    """The Prefect API this process talks to: PREFECT_API_URL as the environment has it now, else Prefect's
    settings (profile); None when neither names one (a temporary server is never started for us)."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def emit(event: str, model_name: str, payload: dict[str, Any]) -> str | None:
    """Emit `nfl-mlops.<event>` about `model_name` when a Prefect API is configured.

    Never raises and never starts a temporary server: an event must not break serving or monitoring.
    Returns the event id, or None when it was not sent.
    """
    url = prefect_api_url()
    if not url:
        log.info("no Prefect API configured; %s not emitted", event)
        return None
    try:
        from prefect.events import emit_event
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: url}):
            sent = emit_event(
                event=event_name(event),
                resource={
                    "prefect.resource.id": resource_id(model_name),
                    "prefect.resource.name": model_name,
                },
                payload=payload,
            )
        return str(sent.id) if sent is not None else None
    except Exception as exc:  # noqa: BLE001 - best effort by contract
        log.warning("could not emit %s: %s", event, exc)
        return None
