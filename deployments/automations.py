"""Automations kept as code, created or updated by name (their ids survive `prefect deploy` and restarts).

`crash-unresponsive-runs`: a flow run of a deployment heartbeats every `PREFECT_FLOWS_HEARTBEAT_FREQUENCY`
seconds (the local stack sets 30); when a run that has heartbeated goes `HEARTBEAT_MISSES` heartbeats
without another heartbeat or a final state (its worker or machine died: `kill -9`, an OOM kill, a
lost node), the automation sets it `Crashed`. The retraining bookkeeping then ends its job `failed` and
gives its drift episode back with a back-off (`nfl_mlops.retraining.reconcile_jobs`); without this a
killed run stays `Running` in Prefect and its job waits `RETRAIN_MAX_OPEN_HOURS`.

This is the self-hosted form of Prefect's documented zombie-run automation
(https://docs.prefect.io/v3/advanced/detect-zombie-flows).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

HEARTBEAT_SECONDS = 30
"""Flow-run heartbeat period the local stack sets (Prefect's minimum; its own default is 180)."""

HEARTBEAT_MISSES = 3
"""A run that misses this many heartbeats in a row is marked `Crashed`."""

CRASH_UNRESPONSIVE = "crash-unresponsive-runs"


def crash_unresponsive_runs(heartbeat_seconds: int = HEARTBEAT_SECONDS) -> Any:
    """The automation (not yet stored): after a heartbeat, expect a heartbeat or a final state in time."""
    from prefect.automations import AutomationCore
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=CRASH_UNRESPONSIVE,
        description=(
            f"A flow run that stopped heartbeating for {HEARTBEAT_MISSES} x {heartbeat_seconds} s without reaching "
            "a final state (its worker or machine died) is marked Crashed, so that its retraining job ends "
            "failed and its drift episode can retry. Kept by nfl-mlops (deployments/automations.py)."
        ),
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=HEARTBEAT_MISSES * heartbeat_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {HEARTBEAT_MISSES * heartbeat_seconds} s: the run's process died",
            )
        ],
    )


async def ensure(client: Any, automation: Any) -> str:
    """Create `automation`, or update the one of the same name in place (its id stays); returns the id.
    Extra automations of the same name (left by older tools) are deleted."""
    found = await client.read_automations_by_name(automation.name)
    if not found:
        return str(await client.create_automation(automation))
    keep, *extra = sorted(found, key=lambda a: str(a.id))
    await client.update_automation(keep.id, automation)
    for a in extra:
        await client.delete_automation(a.id)
    return str(keep.id)


async def ensure_all(heartbeat_seconds: int = HEARTBEAT_SECONDS) -> dict[str, str]:
    """The project's code-kept automations on the Prefect server of `PREFECT_API_URL`: name -> id."""
    from prefect import get_client

    async with get_client() as client:
        auto = crash_unresponsive_runs(heartbeat_seconds)
        return {auto.name: await ensure(client, auto)}


if (
    __name__ == "__main__"
):  # `python -m deployments.automations`: upsert them on PREFECT_API_URL, print name -> id
    import asyncio
    import json

    print(json.dumps(asyncio.run(ensure_all())))
