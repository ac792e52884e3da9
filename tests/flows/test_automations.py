"""Automations kept as code: created once by name, updated in place (the id survives), on a real Prefect server."""

from __future__ import annotations

from datetime import timedelta

import pytest

pytestmark = [pytest.mark.usefixtures("prefect_server")]


def test_crash_unresponsive_runs_is_upserted_by_name_and_keeps_its_id() -> None:
    from prefect import get_client
    from prefect.events.schemas.automations import Posture

    from deployments.automations import CRASH_UNRESPONSIVE, HEARTBEAT_MISSES, crash_unresponsive_runs, ensure

    auto = crash_unresponsive_runs(30)
    assert auto.trigger.posture == Posture.Proactive
    assert auto.trigger.within == timedelta(seconds=HEARTBEAT_MISSES * 30)
    assert auto.trigger.after == {"prefect.flow-run.heartbeat"}
    assert "prefect.flow-run.Completed" in auto.trigger.expect
    assert [a.type for a in auto.actions] == ["change-flow-run-state"]
    assert auto.actions[0].state.value == "CRASHED"

    async def run() -> tuple[str, str, list]:
        async with get_client() as client:
            first = await ensure(client, auto)
            second = await ensure(client, crash_unresponsive_runs(60))  # changed: updated in place
            return first, second, await client.read_automations_by_name(CRASH_UNRESPONSIVE)

    import asyncio

    first, second, found = asyncio.run(run())
    assert first == second
    assert len(found) == 1 and found[0].trigger.within == timedelta(seconds=HEARTBEAT_MISSES * 60)
