"""Names and tags of flow runs, so the Prefect UI tells runs apart without opening them.

`run_name(flow, parameters)` is pure: the flows pass it to Prefect as `flow_run_name` (through a lambda
that reads the run's parameters), e.g. `train-nfl-sentiment`, `register-nfl-sentiment`,
`deploy-nfl-sentiment-v3-canary`, `monitor-nfl-sentiment-2026-12-01T22:00`,
`retrain-nfl-sentiment-automation-drift`. `run_tags` gives the tags that the parent flows put on their
subflows (model, version, trigger, reason).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

MAX_NAME = 80


def _slug(value: Any) -> str:
    text = str(getattr(value, "value", value)).strip().lower()
    return re.sub(r"[^a-z0-9._:-]+", "-", text).strip("-") or "unknown"


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _model(params: Mapping[str, Any]) -> str:
    model = params.get("model_name") or _get(params.get("candidate"), "model_name")
    if not model:
        from nfl_mlops.settings import get_settings

        model = get_settings().model_name
    return _slug(model)


def run_name(flow: str, params: Mapping[str, Any], now: datetime | None = None) -> str:
    """The flow run's name from its flow and parameters (never raises: a name is never worth a failed run)."""
    try:
        model = _model(params)
        if flow == "training":
            name = f"train-{model}"
        elif flow == "registration":
            name = f"register-{model}"
        elif flow == "deployment":
            version = str(params.get("version") or "challenger")
            version = f"v{version}" if version.isdigit() else version
            name = f"deploy-{model}-{_slug(version)}-{_slug(params.get('strategy') or 'blue_green')}"
        elif flow == "monitoring":
            end = params.get("end")
            if isinstance(end, str):
                end = datetime.fromisoformat(end)
            when = end or now or datetime.now(UTC)
            name = f"monitor-{model}-{when.astimezone(UTC):%Y-%m-%dT%H:%M}"
        elif flow == "retraining":
            from nfl_mlops.retraining import reason_kind

            kind = reason_kind(params.get("reason"))
            name = f"retrain-{model}-{_slug(params.get('trigger') or 'manual')}-{kind}"
        elif flow == "pipeline":
            name = f"pipeline-{model}-{_slug(params.get('strategy') or 'blue_green')}"
        else:
            name = f"{_slug(flow)}-{model}"
    except Exception:  # noqa: BLE001
        name = _slug(flow)
    return name[:MAX_NAME]


def run_tags(model_name: str, version: int | None = None, **extra: Any) -> list[str]:
    """`model:<name>`, `version:v<N>` and `<key>:<value>` tags for a flow's subflow runs."""
    tags = [f"model:{model_name}"]
    if version is not None:
        tags.append(f"version:v{version}")
    tags += [f"{k}:{_slug(v)}" for k, v in extra.items() if v not in (None, "")]
    return tags


def artifact_key(prefix: str, model_name: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for a model, e.g. `model-status-nfl-sentiment`."""
    return f"{prefix}-" + (re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-") or "model")
