"""Rollout records in the state DB: which version serves, with which strategy, and rollback.

The serving API reads the active rollout from here (every replica follows it); the deployment
flow and the `/deployments` endpoints write it.

Every write is a compare-and-set: read the row, compute the change, then
`UPDATE ... WHERE id = :id AND revision = :read AND status = 'active'`, which bumps the revision; when
no row matched, another writer moved first and the caller gets `RolloutConflict`. At most one rollout
per (model, environment) is active, enforced by a partial unique index, so two concurrent
activations cannot both win (the loser gets `RolloutConflict` too). This holds on SQLite and
PostgreSQL alike (`SELECT ... FOR UPDATE` would lock nothing on SQLite and nothing over zero rows).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nfl_mlops.db import Rollout, session_scope, utcnow

STRATEGIES = ("blue_green", "canary", "ab_test", "shadow", "rollback")


class RolloutError(Exception):
    """A rollout request that cannot be carried out."""


class RolloutNotFound(RolloutError, LookupError):
    pass


class RolloutConflict(RolloutError):
    """The rollout changed since it was read (another replica or a person moved it first)."""


_AUTO: Any = object()


@dataclass(frozen=True)
class RolloutInfo:
    id: str
    model_name: str
    environment: str
    version: int
    previous_version: int | None
    strategy: str
    status: str
    arms: dict[str, Any]
    config: dict[str, Any]
    history: list[Any]
    reason: str | None
    flow_run_id: str | None
    created_at: datetime
    updated_at: datetime
    revision: int = 0


def _info(r: Rollout) -> RolloutInfo:
    rev = int(r.revision or 0)
    return RolloutInfo(
        id=r.id,
        model_name=r.model_name,
        environment=r.environment,
        version=r.version,
        previous_version=r.previous_version,
        strategy=r.strategy,
        status=r.status,
        arms=dict(r.arms or {}),
        config={**dict(r.config or {}), "revision": rev},
        history=list(r.history or []),
        reason=r.reason,
        flow_run_id=r.flow_run_id,
        created_at=r.created_at,
        updated_at=r.updated_at,
        revision=rev,
    )


def _cas(s: Session, row: Rollout, **values: Any) -> None:
    """Write `values` to `row` only if it is still active at the revision it was read at (bumps the revision).

    Raises:
        RolloutConflict: another writer changed or ended the rollout since it was read.
    """
    read = int(row.revision or 0)
    result = s.execute(
        update(Rollout)
        .where(Rollout.id == row.id, Rollout.revision == read, Rollout.status == "active")
        .values(revision=read + 1, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise RolloutConflict(
            f"deployment {row.id} moved since it was read (revision {read}); "
            "another driver or a person changed it first"
        )
    s.expire(row)


def _event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"at": utcnow().isoformat(), "event": kind, **fields}


def serving_version(arms: Mapping[str, Any], default: int | None = None) -> int | None:
    """The version that answers when the others fail: the `stable` arm, else A/B's control `a`."""
    for name in ("stable", "a"):
        if name in arms and arms[name].get("version") is not None:
            return int(arms[name]["version"])
    return default


def revision(info: RolloutInfo) -> int:
    """Counter of the writes of a rollout (the compare-and-set guard of concurrent drivers)."""
    return info.revision


def active_rollout(
    model_name: str, environment: str = "production", db_url: str | None = None
) -> RolloutInfo | None:
    """The rollout serving traffic now, or None."""
    with session_scope(db_url) as s:
        row = s.scalar(
            select(Rollout)
            .where(
                Rollout.model_name == model_name,
                Rollout.environment == environment,
                Rollout.status == "active",
            )
            .order_by(Rollout.created_at.desc())
            .limit(1)
        )
        return _info(row) if row else None


def get_rollout(rollout_id: str, db_url: str | None = None) -> RolloutInfo:
    with session_scope(db_url) as s:
        row = s.get(Rollout, rollout_id)
        if row is None:
            raise RolloutNotFound(f"no deployment with id {rollout_id!r}")
        return _info(row)


def list_rollouts(
    model_name: str | None = None, db_url: str | None = None, limit: int = 100
) -> list[RolloutInfo]:
    with session_scope(db_url) as s:
        q = select(Rollout).order_by(Rollout.created_at.desc()).limit(limit)
        if model_name:
            q = q.where(Rollout.model_name == model_name)
        return [_info(r) for r in s.scalars(q)]


def activate(
    model_name: str,
    version: int,
    strategy: str = "blue_green",
    environment: str = "production",
    arms: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    reason: str | None = None,
    flow_run_id: str | None = None,
    db_url: str | None = None,
    previous_version: int | None = _AUTO,
) -> RolloutInfo:
    """Make a new rollout the active one; the one it replaces becomes `superseded`.

    `arms` defaults to all traffic on `version` (blue-green's switch-at-once).

    Args:
        previous_version: the version a rollback returns to; default the one serving now.
    """
    if strategy not in STRATEGIES:
        raise RolloutError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    try:
        with session_scope(db_url) as s:
            current = s.scalar(
                select(Rollout).where(
                    Rollout.model_name == model_name,
                    Rollout.environment == environment,
                    Rollout.status == "active",
                )
            )
            serving = None
            if current is not None:
                serving = serving_version(current.arms or {}, current.version)
                _cas(
                    s,
                    current,
                    status="superseded",
                    history=[*(current.history or []), _event("superseded", reason=reason)],
                )
            if previous_version is _AUTO:
                previous_version = serving
            row = Rollout(
                model_name=model_name,
                environment=environment,
                version=version,
                previous_version=previous_version,
                strategy=strategy,
                status="active",
                arms=dict(arms or {"stable": {"version": version, "weight": 100.0}}),
                config={k: v for k, v in (config or {}).items() if k != "revision"},
                reason=reason,
                flow_run_id=flow_run_id,
                revision=0,
                history=[_event("activated", version=version, strategy=strategy, reason=reason)],
            )
            s.add(row)
            s.flush()  # the partial unique index refuses a second active rollout here
            return _info(row)
    except IntegrityError as exc:
        raise RolloutConflict(
            f"another deployment of {model_name} in {environment} was activated at the same "
            "time; read the active one and try again"
        ) from exc


def transition(
    rollout_id: str,
    expected_revision: int,
    arms: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    event: Mapping[str, Any] | None = None,
    db_url: str | None = None,
) -> RolloutInfo:
    """Change an active rollout's traffic and/or config, only if nobody changed it since `expected_revision`.

    Raises:
        RolloutConflict: the rollout is no longer active or another driver moved it first.
    """
    with session_scope(db_url) as s:
        row = s.get(Rollout, rollout_id)
        if row is None:
            raise RolloutNotFound(f"no deployment with id {rollout_id!r}")
        current = int(row.revision or 0)
        if row.status != "active" or current != expected_revision:
            raise RolloutConflict(
                f"deployment {rollout_id} is {row.status} at revision {current}, "
                f"not active at {expected_revision}"
            )
        values: dict[str, Any] = {
            "config": {**(row.config or {}), **{k: v for k, v in (config or {}).items() if k != "revision"}}
        }
        if arms is not None:
            values["arms"] = dict(arms)
        if event is not None:
            values["history"] = [*(row.history or []), _event(**dict(event))]
        _cas(s, row, **values)
        s.refresh(row)
        return _info(row)


def record_check(
    rollout_id: str, check: Mapping[str, Any], db_url: str | None = None, expected_revision: int | None = None
) -> bool:
    """Keep the latest gate evaluation of an active rollout (progress shown by the API); no traffic change.

    A compare-and-set like every write: with `expected_revision` (the revision the check was computed
    on), a rollout that moved meanwhile keeps its state and False is returned (the check is stale).
    """
    with session_scope(db_url) as s:
        row = s.get(Rollout, rollout_id)
        if row is None or row.status != "active":
            return False
        if expected_revision is not None and int(row.revision or 0) != expected_revision:
            return False
        try:
            _cas(s, row, config={**(row.config or {}), "last_check": dict(check)})
        except RolloutConflict:
            return False
        return True


def return_to_previous(
    rollout_id: str,
    reason: str,
    status: str = "rolled_back",
    expected_revision: int | None = None,
    details: Mapping[str, Any] | None = None,
    db_url: str | None = None,
) -> RolloutInfo:
    """End `rollout_id` with `status` and send all traffic back to its previous version.

    Only the active rollout can end this way, and only when there was a previous version. Returns
    the new active rollout (strategy `rollback`).

    Args:
        status: `rolled_back` (a failure or a person) or `completed` (a test ended and kept the old version).
        expected_revision: refuse (RolloutConflict) when the rollout moved since it was read.
        details: recorded in the ended rollout's history (e.g. the gate results).
    """
    with session_scope(db_url) as s:
        row = s.get(Rollout, rollout_id)
        if row is None:
            raise RolloutNotFound(f"no deployment with id {rollout_id!r}")
        if row.status != "active":
            raise RolloutError(
                f"deployment {rollout_id} is {row.status}; only the active deployment can be rolled back"
            )
        if expected_revision is not None and int(row.revision or 0) != expected_revision:
            raise RolloutConflict(f"deployment {rollout_id} moved since it was read")
        if row.previous_version is None:
            raise RolloutError(f"deployment {rollout_id} has no previous version to roll back to")
        model_name, environment, previous = row.model_name, row.environment, row.previous_version
        _cas(
            s,
            row,
            status=status,
            reason=reason,
            config={**(row.config or {}), "phase": status},
            history=[*(row.history or []), _event(status, reason=reason, **dict(details or {}))],
        )
        label = "rollback" if status == "rolled_back" else status
        new = Rollout(
            model_name=model_name,
            environment=environment,
            version=previous,
            previous_version=None,
            strategy="rollback",
            status="active",
            revision=0,
            arms={"stable": {"version": previous, "weight": 100.0}},
            reason=f"{label} of {rollout_id}: {reason}",
            history=[_event("activated", version=previous, strategy="rollback", reason=reason)],
        )
        s.add(new)
        s.flush()
        return _info(new)


def abandon(
    rollout_id: str,
    reason: str,
    expected_revision: int | None = None,
    details: Mapping[str, Any] | None = None,
    db_url: str | None = None,
) -> RolloutInfo:
    """End an active rollout that has no previous version (`rolled_back`, nothing active after it).

    Raises:
        RolloutConflict: it moved since `expected_revision` or is no longer active.
    """
    with session_scope(db_url) as s:
        row = s.get(Rollout, rollout_id)
        if row is None:
            raise RolloutNotFound(f"no deployment with id {rollout_id!r}")
        if expected_revision is not None and int(row.revision or 0) != expected_revision:
            raise RolloutConflict(f"deployment {rollout_id} moved since it was read")
        _cas(
            s,
            row,
            status="rolled_back",
            reason=reason,
            config={**(row.config or {}), "phase": "rolled_back"},
            history=[*(row.history or []), _event("rolled_back", reason=reason, **dict(details or {}))],
        )
        s.refresh(row)
        return _info(row)


def rollback(rollout_id: str, reason: str = "manual rollback", db_url: str | None = None) -> RolloutInfo:
    """Send all traffic back to the version that served before `rollout_id`.

    Only the active rollout can be rolled back, and only when there was a previous version.
    Returns the new active rollout (strategy `rollback`).

    A person's rollback does not lose to the replicas' drivers: when one of them recorded a gate check
    between the read and the write (a revision conflict), it is read again and retried while the rollout
    is still active.
    """
    for attempt in range(MANUAL_RETRIES):
        try:
            return return_to_previous(rollout_id, reason, "rolled_back", db_url=db_url)
        except RolloutConflict:
            if attempt + 1 == MANUAL_RETRIES:
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


MANUAL_RETRIES = 8
"""Attempts of a manual rollback against concurrent gate-check writes (each re-reads the rollout)."""


def choose_arm(arms: Mapping[str, Any], key: str | None, request_id: str) -> str:
    """Pick the arm that serves a request: weighted, sticky by `key` when one is given.

    Arms with `"shadow": true` never serve. Hashing makes the choice deterministic per key, so a
    user stays on one arm for the whole test.
    """
    serving = [(name, float(arm.get("weight", 0))) for name, arm in arms.items() if not arm.get("shadow")]
    total = sum(w for _, w in serving)
    if not serving or total <= 0:
        raise RolloutError("rollout has no serving arm")
    digest = hashlib.sha256((key or request_id).encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * total
    acc = 0.0
    for name, weight in serving:
        acc += weight
        if point < acc:
            return name
    return serving[-1][0]
