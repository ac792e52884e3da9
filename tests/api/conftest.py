"""Fixtures for the HTTP tests (servers, clients, registered versions); helpers live in helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.helpers import (
    API_KEY,
    KEYED_MODEL,
    MODEL,
    LogCapture,
    ServerHandle,
    api_settings,
    capture_logs,
    make_client,
    register_versions,
    serving,
    start_server,
    wait_serving,
)


# Fixtures
@pytest.fixture(scope="session")
def main_settings(settings):
    return api_settings(MODEL)


@pytest.fixture(scope="session")
def deployed(main_settings, tiny_model_dir) -> dict[str, Any]:
    """MODEL registered twice (v1, v2) and v1 active; returns the versions and the deployment id."""
    from nfl_mlops.rollout import state as rollouts

    versions = register_versions(MODEL, tiny_model_dir, 2, main_settings)
    assert versions == [1, 2]
    r = rollouts.activate(MODEL, 1, reason="api tests: initial", db_url=main_settings.db_url)
    return {"versions": versions, "deployment_id": r.id}


@pytest.fixture(scope="module")
def api_server(main_settings, deployed) -> Iterator[ServerHandle]:
    with serving(main_settings) as handle:
        yield handle


@pytest.fixture()
def client(api_server) -> Iterator[httpx.Client]:
    with make_client(api_server.base_url) as c:
        yield c


@pytest.fixture()
def on_v1(api_server, client, main_settings) -> dict[str, Any]:
    """Start from v1 active and served, whatever the previous test left behind."""
    from nfl_mlops.rollout import state as rollouts

    active = rollouts.active_rollout(MODEL, db_url=main_settings.db_url)
    if active is None or active.arms != {"stable": {"version": 1, "weight": 100.0}}:
        active = rollouts.activate(MODEL, 1, reason="api tests: reset to v1", db_url=main_settings.db_url)
    wait_serving(client, 1)
    return {"deployment_id": active.id}


@pytest.fixture(scope="module")
def empty_server(settings) -> Iterator[ServerHandle]:
    """A server for a model name that has no rollout at all."""
    handle = start_server(api_settings("nothing-deployed"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def keyed_settings(settings, tiny_model_dir):
    """Settings read from the environment with MLOPS_API_KEY set; KEYED_MODEL v1, v2 with v1 active."""
    from nfl_mlops.rollout import state as rollouts
    from nfl_mlops.settings import get_settings

    saved = os.environ.get("MLOPS_API_KEY")
    os.environ["MLOPS_API_KEY"] = API_KEY
    try:
        get_settings.cache_clear()
        keyed = api_settings(KEYED_MODEL)  # api_key is read from MLOPS_API_KEY
    finally:  # other tests share the session env: put it back at once
        if saved is None:
            os.environ.pop("MLOPS_API_KEY", None)
        else:
            os.environ["MLOPS_API_KEY"] = saved
        get_settings.cache_clear()
    assert keyed.api_key is not None and keyed.api_key.get_secret_value() == API_KEY
    assert register_versions(KEYED_MODEL, tiny_model_dir, 2, keyed) == [1, 2]
    rollouts.activate(KEYED_MODEL, 1, reason="api tests: keyed initial", db_url=keyed.db_url)
    return keyed


@pytest.fixture(scope="module")
def keyed_server(keyed_settings) -> Iterator[tuple[ServerHandle, LogCapture]]:
    """The keyed server, with every log record of the process captured while it runs."""
    with capture_logs() as logs, serving(keyed_settings, log_level="debug") as handle:
        yield handle, logs
