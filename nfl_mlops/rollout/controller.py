"""The rollout controller: start a rollout with a strategy, then advance it tick by tick.

A tick reads the rollout and the prediction-log rows of its current step, asks the strategy's pure
decision function (`strategies.py`, `abtest.py`) what to do, and applies it to the state DB:
change traffic, promote (all traffic on the candidate, `champion` alias moved) or send traffic
back to the previous version. It returns the `Outcome`, which names the event to emit; emitting
is the caller's job (the deployment flow's `emit` task, or the API's best-effort emitter).

Who ticks: the deployment flow for the rollouts it starts (`driver="flow"`); the serving API's
replicas for the rollouts started through `POST /mlops/deployments` and `/ab-tests`
(`driver="api"`), and for a flow's rollout whose flow stopped ticking (crashed) for
`ORPHAN_AFTER_S`. Traffic changes are compare-and-set on the rollout's revision, so two drivers
never apply one step twice.

Verified switches: every traffic change (the activation, a canary step, the promotion) leaves the rollout
`awaiting` until every live API replica heartbeats that it serves exactly the new traffic
(`replicas.confirmation`). Only then does a step's clock start (its gates count rows from there), and
only then does a promotion (blue-green's switch included, phase `promoting`) move `champion` and emit
`rollout.promoted`. A replica that reports it cannot load a version of the new traffic, or replicas that
have not confirmed within the rollout's `confirm_timeout_s`, roll the rollout back by themselves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

import pandas as pd
from sqlalchemy import select

from nfl_mlops import events
from nfl_mlops.db import Prediction, get_engine, utcnow
from nfl_mlops.rollout import abtest, replicas
from nfl_mlops.rollout import state as rollouts
from nfl_mlops.rollout.gates import LOG_FIELDS
from nfl_mlops.rollout.strategies import (
    DRIVEN,
    ABTestParams,
    CanaryParams,
    Decision,
    ShadowParams,
    canary_decision,
    check_interval,
    initial_arms,
    params_for,
    shadow_decision,
)

log = logging.getLogger(__name__)

ORPHAN_AFTER_S = 300.0
"""A flow-driven rollout nobody ticked for this long is adopted by the API's driver."""

CONFIRM_POLL_S = 0.5
"""How often a driver checks the replicas' heartbeats while a traffic change awaits confirmation."""

LIVE_PHASES = ("running", "promoting")
"""Phases of a rollout that a driver still ticks (`promoting`: all traffic on the candidate, unconfirmed)."""


@dataclass(frozen=True)
class Outcome:
    """What one tick did."""

    rollout: rollouts.RolloutInfo  # the driven rollout, after the tick
    decision: Decision
    applied: bool
    serving: rollouts.RolloutInfo | None = None  # the new active rollout after a rollback or finish
    event: str | None = None  # e.g. "rollout.promoted", without the prefix
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.rollout.status != "active" or self.rollout.config.get("phase") not in LIVE_PHASES


def _iso(ts: datetime) -> str:
    return ts.isoformat()


def _parse(ts: str | None, default: datetime) -> datetime:
    if not ts:
        return default
    return abtest.aware(datetime.fromisoformat(ts))


def in_progress(r: rollouts.RolloutInfo | None) -> TypeGuard[rollouts.RolloutInfo]:
    """A canary, shadow or A/B test that has not ended yet, or a promotion (blue-green's switch included)
    that the replicas have not confirmed yet."""
    if not (r and r.status == "active"):
        return False
    phase = r.config.get("phase")
    return phase == "promoting" or (r.strategy in DRIVEN and phase == "running")


def awaiting(r: rollouts.RolloutInfo | None) -> dict[str, Any] | None:
    """The unconfirmed traffic change of an active rollout (`since`, `what`, `timeout_s`), or None."""
    if r is None or r.status != "active":
        return None
    return r.config.get("awaiting") or None


def _awaiting(what: str, now: datetime, timeout_s: float) -> dict[str, Any]:
    return {"since": _iso(now), "what": what, "timeout_s": float(timeout_s)}


def _timeout(r: rollouts.RolloutInfo) -> float:
    return float(r.config.get("confirm_timeout_s") or replicas.CONFIRM_TIMEOUT_S)


def next_check_s(r: rollouts.RolloutInfo) -> float:
    """Seconds until a driver should tick `r` again."""
    every = check_interval(r.strategy, r.config.get("params"))
    return min(every, CONFIRM_POLL_S) if awaiting(r) else every


def progress(r: rollouts.RolloutInfo) -> dict[str, Any] | None:
    """Where a driven rollout stands (for the API): phase, step, candidate share, last gate check."""
    if r.strategy not in DRIVEN:
        return None
    cfg = r.config
    out: dict[str, Any] = {
        "phase": cfg.get("phase"),
        "driver": cfg.get("driver"),
        "started_at": cfg.get("started_at"),
        "last_check": cfg.get("last_check"),
        "awaiting": cfg.get("awaiting"),
        "confirmed": cfg.get("confirmed"),
    }
    if r.strategy == "canary":
        steps = (cfg.get("params") or {}).get("steps") or CanaryParams().steps
        idx = int(cfg.get("step_index", 0))
        out.update(step=min(idx + 1, len(steps)), steps=steps, step_started_at=cfg.get("step_started_at"))
    if r.strategy == "ab_test":
        out["ab_test_id"] = cfg.get("ab_test_id")
    return out


# Start
def start_rollout(
    model_name: str,
    version: int,
    strategy: str,
    environment: str = "production",
    params: CanaryParams | ShadowParams | ABTestParams | None = None,
    reason: str | None = None,
    flow_run_id: str | None = None,
    driver: str = "api",
    test_name: str | None = None,
    version_a: int | None = None,
    db_url: str | None = None,
    now: datetime | None = None,
    confirm_timeout_s: float = replicas.CONFIRM_TIMEOUT_S,
) -> rollouts.RolloutInfo:
    """Activate a rollout of `version` with `strategy`; driven strategies start at their first step.

    The activation awaits the replicas' confirmation (`tick` checks it); blue-green is `promoting` until
    then, and `champion` moves when it is confirmed.

    Args:
        version: the candidate (for an A/B test: B).
        version_a: A of an A/B test; default the version serving now.
        test_name: name of the A/B test record (default derived from the versions).
        confirm_timeout_s: how long every live API replica has to serve each traffic change before the
            rollout rolls back.

    Raises:
        RolloutConflict: a canary, shadow or A/B test of this model is still in progress.
        RolloutError: a driven strategy without a version serving now, or the candidate already serves.
    """
    now = now or utcnow()
    current = rollouts.active_rollout(model_name, environment, db_url)
    if in_progress(current):
        raise rollouts.RolloutConflict(
            f"deployment {current.id} ({current.strategy} of v{current.version}) is still in progress; "
            "roll it back or wait for it to end"
        )
    if not confirm_timeout_s > 0:
        raise rollouts.RolloutError("confirm_timeout_s must be positive")
    if strategy not in DRIVEN:
        return rollouts.activate(
            model_name,
            version,
            strategy=strategy,
            environment=environment,
            config={
                "driver": driver,
                "phase": "promoting",
                "confirm_timeout_s": confirm_timeout_s,
                "awaiting": _awaiting(f"switch to v{version}", now, confirm_timeout_s),
                "started_at": _iso(now),
            },
            reason=reason,
            flow_run_id=flow_run_id,
            db_url=db_url,
        )
    params = params if params is not None else params_for(strategy, None)
    if params is None:
        raise rollouts.RolloutError(f"unknown strategy {strategy!r}")
    stable = rollouts.serving_version(current.arms, current.version) if current else None
    if strategy == "ab_test" and version_a is not None:
        stable = version_a
    if stable is None:
        raise rollouts.RolloutError(
            f"{strategy} needs a version serving {model_name} in {environment} to compare "
            "with; deploy one with blue_green first"
        )
    if stable == version:
        raise rollouts.RolloutError(
            f"v{version} is already the serving version of {model_name}; "
            f"a {strategy} needs a different candidate"
        )
    arms = initial_arms(strategy, stable, version, params)
    what = f"{strategy} of v{version}"
    if isinstance(params, CanaryParams):
        what = f"canary step 1/{len(params.steps)} ({params.steps[0]:g} %)"
    config: dict[str, Any] = {
        "params": params.model_dump(mode="json"),
        "driver": driver,
        "phase": "running",
        "started_at": _iso(now),
        "step_index": 0,
        "step_started_at": _iso(now),
        "confirm_timeout_s": confirm_timeout_s,
        "awaiting": _awaiting(what, now, confirm_timeout_s),
    }
    # an A/B test that ends without B winning returns to A
    keep = {"previous_version": stable} if strategy == "ab_test" else {}
    r = rollouts.activate(
        model_name,
        version,
        strategy=strategy,
        environment=environment,
        arms=arms,
        config=config,
        reason=reason,
        flow_run_id=flow_run_id,
        db_url=db_url,
        **keep,
    )
    if isinstance(params, ABTestParams):
        test = abtest.create_record(
            test_name or f"{model_name}-v{stable}-vs-v{version}",
            model_name,
            environment,
            stable,
            version,
            params,
            r.id,
            db_url=db_url,
            now=now,
        )
        r = rollouts.transition(r.id, 0, config={"ab_test_id": test.id}, db_url=db_url)
    return r


# Tick
def load_rows(r: rollouts.RolloutInfo, since: datetime, db_url: str | None = None) -> pd.DataFrame:
    """The prediction-log rows of rollout `r` logged since `since` (all arms, shadows and errors included)."""
    cols = [getattr(Prediction, c) for c in LOG_FIELDS]
    q = select(*cols).where(
        Prediction.model_name == r.model_name, Prediction.created_at >= since, Prediction.rollout_id == r.id
    )
    with get_engine(db_url).connect() as conn:
        return pd.DataFrame(conn.execute(q).all(), columns=list(LOG_FIELDS))


def decide(r: rollouts.RolloutInfo, now: datetime, db_url: str | None = None) -> Decision:
    """The strategy's decision for the rollout now (reads the log; changes nothing)."""
    params = params_for(r.strategy, r.config.get("params"))
    started = _parse(r.config.get("started_at"), abtest.aware(r.created_at))
    if isinstance(params, CanaryParams):
        since = _parse(r.config.get("step_started_at"), started)
        stable = int(r.arms["stable"]["version"])
        return canary_decision(
            params,
            int(r.config.get("step_index", 0)),
            since,
            now,
            load_rows(r, since, db_url),
            stable,
            r.version,
        )
    if isinstance(params, ShadowParams):
        stable = int(r.arms["stable"]["version"])
        return shadow_decision(params, started, now, load_rows(r, started, db_url), stable, r.version)
    if isinstance(params, ABTestParams):
        test = abtest.ab_test_for_rollout(r.id, db_url)
        if test is None:
            return Decision("hold", "no A/B test record for this rollout")
        return abtest.ab_decision(params, test.ends_at, now, abtest.outcomes(test, db_url))
    return Decision("hold", f"{r.strategy} has no steps")


def _payload(r: rollouts.RolloutInfo, d: Decision, **extra: Any) -> dict[str, Any]:
    return {
        "deployment_id": r.id,
        "model_name": r.model_name,
        "environment": r.environment,
        "strategy": r.strategy,
        "version": r.version,
        "previous_version": r.previous_version,
        "reason": d.reason,
        "gates": [g.as_dict() for g in d.gates],
        **extra,
    }


def apply(
    r: rollouts.RolloutInfo, d: Decision, now: datetime, db_url: str | None = None, registry: Any = None
) -> Outcome:
    """Carry out a decision on the state DB (compare-and-set on the rollout's revision)."""
    check = {"at": _iso(now), "action": d.action, "reason": d.reason, "gates": [g.as_dict() for g in d.gates]}
    gates = check["gates"]
    rev = rollouts.revision(r)
    if d.action == "hold":
        rollouts.record_check(r.id, check, db_url, expected_revision=rev)
        return Outcome(r, d, False)
    if d.action == "advance":
        steps = (r.config.get("params") or {}).get("steps") or CanaryParams().steps
        what = f"canary step {int(d.step_index or 0) + 1}/{len(steps)} ({steps[int(d.step_index or 0)]:g} %)"
        after = rollouts.transition(
            r.id,
            rev,
            arms=d.arms,
            db_url=db_url,
            config={
                "step_index": d.step_index,
                "step_started_at": _iso(now),
                "last_check": check,
                "awaiting": _awaiting(what, now, _timeout(r)),
            },
            event={"kind": "traffic", "arms": d.arms, "note": d.reason, "gates": gates},
        )
        return Outcome(after, d, True)
    if d.action == "promote":  # all traffic on the candidate now; `champion` moves once the replicas confirm
        after = rollouts.transition(
            r.id,
            rev,
            arms=d.arms,
            db_url=db_url,
            config={
                "phase": "promoting",
                "last_check": check,
                "awaiting": _awaiting(f"promotion of v{r.version}", now, _timeout(r)),
                "pending_promotion": {"reason": d.reason, "gates": gates, "extra": d.extra},
                **({"step_index": d.step_index} if d.step_index is not None else {}),
            },
        )
        return Outcome(after, d, True)
    return _end(r, d, now, db_url, details={"gates": gates})


def _end(
    r: rollouts.RolloutInfo, d: Decision, now: datetime, db_url: str | None, details: dict[str, Any]
) -> Outcome:
    """Roll back (or finish) `r`: traffic returns to its previous version (nothing active when it had none)."""
    rev = rollouts.revision(r)
    test = abtest.ab_test_for_rollout(r.id, db_url) if r.strategy == "ab_test" else None
    status = "rolled_back" if d.action == "rollback" else "completed"
    if r.previous_version is None:  # a first deployment that failed: nothing to return to
        rollouts.abandon(r.id, d.reason, rev, details=details, db_url=db_url)
        serving = None
    else:
        serving = rollouts.return_to_previous(r.id, d.reason, status, rev, details=details, db_url=db_url)
    if test is not None:
        abtest.finish_record(
            test.id, "completed", d.extra.get("winner"), {"reason": d.reason, **d.extra}, db_url
        )
    after = rollouts.get_rollout(r.id, db_url)
    restored = {
        "restored_version": serving.version if serving else None,
        "new_deployment_id": serving.id if serving else None,
    }
    event = "rollout.rolled_back" if d.action == "rollback" else "rollout.completed"
    if "replicas" in d.extra:
        restored["replicas"] = d.extra["replicas"]
    return Outcome(after, d, True, serving, event, _payload(r, d, **restored))


def _confirm(
    r: rollouts.RolloutInfo, now: datetime, db_url: str | None, registry: Any, stale_after_s: float
) -> Outcome:
    """Check the unconfirmed traffic change of `r` against the live replicas' heartbeats and act on it."""
    pending = awaiting(r) or {}
    what = pending.get("what", "traffic change")
    live = replicas.live_replicas(r.model_name, r.environment, stale_after_s, now, db_url)
    c = replicas.confirmation(r, live)
    seen = {
        "confirmed": [x.replica_id for x in c.confirmed],
        "waiting": [x.replica_id for x in c.waiting],
        "failed": {x.replica_id: replicas.load_errors_for(r, x) for x in c.failed},
    }
    waited = (now - _parse(pending.get("since"), now)).total_seconds()
    timeout = float(pending.get("timeout_s") or _timeout(r))
    if c.failed:
        d = Decision("rollback", f"{what}: {replicas.describe(r, c)}", extra={"replicas": seen})
        return _end(r, d, now, db_url, details={"replicas": seen})
    if c.waiting and waited >= timeout:
        d = Decision(
            "rollback",
            f"{what}: not confirmed within {timeout:g} s: {replicas.describe(r, c)}",
            extra={"replicas": seen},
        )
        return _end(r, d, now, db_url, details={"replicas": seen})
    if c.waiting:
        d = Decision("hold", f"{what}: {replicas.describe(r, c)}", extra={"replicas": seen})
        check = {"at": _iso(now), "action": "hold", "reason": d.reason, "gates": [], "replicas": seen}
        rollouts.record_check(r.id, check, db_url, expected_revision=rollouts.revision(r))
        return Outcome(r, d, False)
    confirmed = {"at": _iso(now), "what": what, "since": pending.get("since"), "replicas": seen["confirmed"]}
    if r.config.get("phase") == "promoting":
        promo = r.config.get("pending_promotion") or {}
        reason = promo.get("reason") or f"{r.strategy}: v{r.version} serves all traffic"
        d = Decision("promote", f"{reason} ({replicas.describe(r, c)})", extra=dict(promo.get("extra") or {}))
        after = rollouts.transition(
            r.id,
            rollouts.revision(r),
            db_url=db_url,
            config={"phase": "promoted", "awaiting": None, "confirmed": confirmed},
            event={
                "kind": "promoted",
                "version": r.version,
                "reason": reason,
                "gates": promo.get("gates") or [],
                "switched_at": pending.get("since"),
                "replicas": seen["confirmed"],
            },
        )
        _promote(registry, r.model_name, r.version, db_url)
        test = abtest.ab_test_for_rollout(r.id, db_url) if r.strategy == "ab_test" else None
        if test is not None:
            abtest.finish_record(test.id, "completed", "b", {"reason": reason, **d.extra}, db_url)
        payload = _payload(r, d, replicas=seen["confirmed"])
        payload["gates"] = promo.get("gates") or []
        return Outcome(after, d, True, event="rollout.promoted", payload=payload)
    # a step: its gates count the rows logged from now on, when every replica serves its traffic
    d = Decision("confirm", f"{what}: {replicas.describe(r, c)}", extra={"replicas": seen})
    after = rollouts.transition(
        r.id,
        rollouts.revision(r),
        db_url=db_url,
        config={"awaiting": None, "step_started_at": _iso(now), "confirmed": confirmed},
    )
    return Outcome(after, d, True)


def _promote(registry: Any, model_name: str, version: int, db_url: str | None) -> None:
    from nfl_mlops.registry.store import Registry, RegistryError

    if registry is None:
        from nfl_mlops.settings import get_settings

        settings = get_settings()
        registry = Registry(settings.models_path, db_url or settings.db_url)
    try:
        registry.promote(model_name, version)
    except RegistryError as exc:  # traffic already moved; the alias is bookkeeping
        log.warning("could not move champion of %s to v%d: %s", model_name, version, exc)


def tick(
    rollout_id: str,
    now: datetime | None = None,
    db_url: str | None = None,
    registry: Any = None,
    stale_after_s: float = replicas.STALE_AFTER_S,
) -> Outcome:
    """Evaluate a rollout once and apply the decision: while a traffic change awaits the replicas, check
    their confirmation (and roll back on a load error or the deadline); otherwise judge the gates."""
    now = now or utcnow()
    r = rollouts.get_rollout(rollout_id, db_url)
    if not in_progress(r):
        return Outcome(
            r, Decision("hold", f"deployment {r.id} is {r.status} ({r.config.get('phase')})"), False
        )
    try:
        if awaiting(r):
            return _confirm(r, now, db_url, registry, stale_after_s)
        d = decide(r, now, db_url)
        return apply(r, d, now, db_url, registry)
    except rollouts.RolloutConflict as exc:  # another driver (or a person) moved it first
        return Outcome(rollouts.get_rollout(rollout_id, db_url), Decision("hold", str(exc)), False)
    except rollouts.RolloutError as exc:
        if rollouts.get_rollout(rollout_id, db_url).status != "active":  # rolled back meanwhile
            return Outcome(rollouts.get_rollout(rollout_id, db_url), Decision("hold", str(exc)), False)
        raise


def drive(
    rollout_id: str,
    until: str = "transition",
    poll_seconds: float | None = None,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    db_url: str | None = None,
    registry: Any = None,
    on_tick: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """Tick until the rollout changes traffic (`until="transition"`) or ends (`until="end"`).

    Returns the last outcome; also returns when the rollout ended by someone else's hand, or when
    `timeout_s` passed (then with `applied=False`).
    """
    deadline = time.monotonic() + timeout_s if timeout_s is not None else None
    while True:
        out = tick(rollout_id, db_url=db_url, registry=registry)
        if on_tick is not None:
            on_tick(out)
        if out.ended or (out.applied and until == "transition"):
            return out
        if deadline is not None and time.monotonic() >= deadline:
            return out
        sleep(poll_seconds if poll_seconds is not None else next_check_s(out.rollout))


def due(r: rollouts.RolloutInfo | None, driver: str, now: datetime) -> bool:
    """Whether `driver` should tick `r` now: its own rollouts every `check_seconds`, a flow's orphan too."""
    if not in_progress(r):
        return False
    last = (r.config.get("last_check") or {}).get("at") or r.config.get("step_started_at")
    since = (now - _parse(last, abtest.aware(r.created_at))).total_seconds()
    owner = r.config.get("driver", "api")
    if owner == driver:
        return since >= next_check_s(r)
    return since >= ORPHAN_AFTER_S


def emit_best_effort(outcome: Outcome) -> bool:
    """Emit the outcome's Prefect event when a Prefect API is configured (never starts a temporary server)."""
    if outcome.event is None:
        return False
    return events.emit(outcome.event, outcome.rollout.model_name, outcome.payload) is not None


def _traffic_history(r: rollouts.RolloutInfo) -> list[dict[str, Any]]:
    """The history with the traffic each event left: the strategy's first split at activation, the step's
    arms, all on the candidate at promotion, all on the previous version at a rollback."""
    from nfl_mlops.rollout.strategies import initial_arms, params_for

    out = []
    for h in r.history:
        event, arms = h.get("event"), h.get("arms")
        if event == "activated":
            params = params_for(r.strategy, (r.config or {}).get("params"))
            arms = initial_arms(r.strategy, r.previous_version, r.version, params)
        elif event == "promoted":
            arms = {"stable": {"version": r.version, "weight": 100.0}}
        elif event == "rolled_back":
            arms = {"stable": {"version": r.previous_version, "weight": 100.0}}
        out.append({**h, "arms": arms} if arms else dict(h))
    return out


def report_markdown(r: rollouts.RolloutInfo) -> str:
    """The rollout's story for a Prefect artifact: traffic steps, gate checks, the end."""
    lines = [
        f"# Deployment {r.id}: {r.model_name} v{r.version} ({r.strategy})",
        "",
        f"Status **{r.status}**; previous version v{r.previous_version}; reason: {r.reason or '-'}",
        "",
        "| at | event | detail |",
        "|---|---|---|",
    ]
    for h in r.history:
        detail = h.get("note") or h.get("reason") or ""
        if h.get("arms"):
            detail = f"{detail} arms={h['arms']}"
        failed = [g for g in h.get("gates") or [] if g.get("passed") is False]
        if failed:
            detail += " FAILED: " + "; ".join(f"{g['name']}: {g['detail']}" for g in failed)
        lines.append(f"| {h.get('at', '')[:19]} | {h.get('event', '')} | {str(detail).replace('|', '/')} |")
    if r.history:
        import base64

        from nfl_mlops.registry.plots import rollout_png

        png = rollout_png(
            _traffic_history(r), r.version, f"{r.model_name} v{r.version} ({r.strategy}): {r.status}"
        )
        lines += [
            "",
            f"![traffic steps and gate checks](data:image/png;base64,{base64.b64encode(png).decode('ascii')})",
        ]
    return "\n".join(lines) + "\n"
