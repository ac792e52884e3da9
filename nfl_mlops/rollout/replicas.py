"""API replicas' heartbeats, and whether they all serve a rollout's traffic (a step is done only then).

Each API process (`serving.service.PredictionService`) upserts one row of `serving_replicas` on every
rollout poll: which rollout and traffic (arms) it serves, the newest active rollout it has read (it may
still be loading it), the versions it has loaded and the versions of that rollout it could not load.
On shutdown it marks itself `stopping`. Whoever drives a rollout (`rollout.controller`) asks
`confirmation` before it counts a traffic change as done, judges a step's gates, or moves `champion`.

A replica is live while it heartbeats (seen within `STALE_AFTER_S`) and is not stopping. With no live
replica at all (flows and tests without an API), every rollout is confirmed at once.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import delete, select, update

from nfl_mlops.db import ServingReplica, get_engine, session_scope, utcnow

STALE_AFTER_S = 30.0
"""A replica not seen for this long is not live (crashed or cut off); it no longer holds a rollout back.
Replicas heartbeat every `rollout_poll_seconds` (1 s by default), also while they load a model."""

CONFIRM_TIMEOUT_S = 120.0
"""Default deadline for every live replica to serve a traffic change; a rollout not confirmed by then rolls back."""

PRUNE_AFTER_S = 7 * 86400.0
"""Heartbeat rows of replicas not seen for this long are deleted (when a replica starts)."""


@dataclass(frozen=True)
class ReplicaInfo:
    """One replica's last heartbeat."""

    replica_id: str
    model_name: str
    environment: str = "production"
    host: str = ""
    pid: int = 0
    started_at: datetime | None = None
    last_seen: datetime | None = None
    rollout_id: str | None = None
    arms: dict[str, Any] = field(default_factory=dict)
    target_rollout_id: str | None = None
    loaded_versions: list[int] = field(default_factory=list)
    load_errors: dict[str, str] = field(default_factory=dict)
    ready: bool = False
    stopping: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "replica_id": self.replica_id,
            "host": self.host,
            "pid": self.pid,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "rollout_id": self.rollout_id,
            "arms": self.arms,
            "target_rollout_id": self.target_rollout_id,
            "loaded_versions": list(self.loaded_versions),
            "load_errors": dict(self.load_errors),
            "ready": self.ready,
            "stopping": self.stopping,
        }


class Confirmation(NamedTuple):
    """Live replicas split by whether they serve a rollout's traffic."""

    confirmed: list[ReplicaInfo]
    waiting: list[ReplicaInfo]
    failed: list[ReplicaInfo]

    @property
    def done(self) -> bool:
        return not self.waiting and not self.failed


def new_replica_id() -> str:
    """An id unique to this process start: `<host>-<pid>-<random>`."""
    return f"{socket.gethostname()[:60]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def traffic(arms: Mapping[str, Any]) -> dict[str, tuple[int, float, bool]]:
    """Arms in a comparable form: name -> (version, weight, shadow)."""
    return {
        name: (int(a["version"]), round(float(a.get("weight", 0.0)), 6), bool(a.get("shadow", False)))
        for name, a in (arms or {}).items()
    }


def arm_versions(arms: Mapping[str, Any]) -> set[int]:
    return {int(a["version"]) for a in (arms or {}).values()}


def load_errors_for(rollout: Any, replica: ReplicaInfo) -> dict[int, str]:
    """The versions of `rollout`'s arms that `replica` reported it could not load (for this rollout)."""
    if replica.target_rollout_id != rollout.id:
        return {}  # its errors are about another rollout (it has not read this one yet)
    return {
        v: replica.load_errors[str(v)]
        for v in sorted(arm_versions(rollout.arms))
        if str(v) in replica.load_errors
    }


def confirmation(rollout: Any, replicas: Iterable[ReplicaInfo]) -> Confirmation:
    """Split `replicas` (the live ones) by whether they serve `rollout` now (pure).

    A replica confirms when it serves that rollout id with exactly its arms (versions, weights, shadow
    flags); it has failed when, having read the rollout, it reports a load error for a version of those
    arms; else it is waiting (it has not polled yet, or is still loading). No replica: confirmed.
    """
    want = traffic(rollout.arms)
    confirmed, waiting, failed = [], [], []
    for rep in replicas:
        if rep.rollout_id == rollout.id and traffic(rep.arms) == want:
            confirmed.append(rep)
        elif load_errors_for(rollout, rep):
            failed.append(rep)
        else:
            waiting.append(rep)
    return Confirmation(confirmed, waiting, failed)


def describe(rollout: Any, c: Confirmation) -> str:
    """The confirmation in words (for logs, checks and rollback reasons)."""
    if c.failed:
        return "; ".join(
            f"replica {r.replica_id} could not load "
            + ", ".join(f"v{v}: {e}" for v, e in load_errors_for(rollout, r).items())
            for r in c.failed
        )
    n = len(c.confirmed) + len(c.waiting)
    if c.waiting:
        return f"{len(c.confirmed)} of {n} live replica(s) serve it; waiting for " + ", ".join(
            r.replica_id for r in c.waiting
        )
    return f"served by all {n} live replica(s)" if n else "no live replica (confirmed at once)"


# The state DB
def _info(row: ServingReplica) -> ReplicaInfo:
    return ReplicaInfo(
        replica_id=row.replica_id,
        model_name=row.model_name,
        environment=row.environment,
        host=row.host,
        pid=int(row.pid or 0),
        started_at=row.started_at,
        last_seen=row.last_seen,
        rollout_id=row.rollout_id,
        arms=dict(row.arms or {}),
        target_rollout_id=row.target_rollout_id,
        loaded_versions=[int(v) for v in row.loaded_versions or []],
        load_errors={str(k): str(v) for k, v in (row.load_errors or {}).items()},
        ready=bool(row.ready),
        stopping=bool(row.stopping),
    )


def write_heartbeat(rep: ReplicaInfo, db_url: str | None = None, now: datetime | None = None) -> None:
    """Upsert the replica's row (one statement); `last_seen` is `now`."""
    values = {
        "model_name": rep.model_name,
        "environment": rep.environment,
        "host": rep.host,
        "pid": rep.pid,
        "last_seen": now or utcnow(),
        "rollout_id": rep.rollout_id,
        "arms": dict(rep.arms),
        "target_rollout_id": rep.target_rollout_id,
        "loaded_versions": sorted(int(v) for v in rep.loaded_versions),
        "load_errors": {str(k): str(v)[:500] for k, v in rep.load_errors.items()},
        "ready": rep.ready,
        "stopping": rep.stopping,
    }
    engine = get_engine(db_url)
    insert_values = {
        "replica_id": rep.replica_id,
        "started_at": rep.started_at or values["last_seen"],
        **values,
    }
    dialect = engine.dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
        stmt = insert(ServingReplica).values(**insert_values)
        stmt = stmt.on_conflict_do_update(index_elements=[ServingReplica.replica_id], set_=values)
        with engine.begin() as conn:
            conn.execute(stmt)
        return
    with session_scope(db_url) as s:  # other databases: update, else insert
        done = s.execute(
            update(ServingReplica).where(ServingReplica.replica_id == rep.replica_id).values(**values)
        )
        if done.rowcount == 0:  # type: ignore[attr-defined]
            s.add(ServingReplica(**insert_values))


def mark_stopping(replica_id: str, db_url: str | None = None) -> None:
    """The replica is shutting down: it no longer counts (nor holds a rollout back)."""
    with session_scope(db_url) as s:
        s.execute(
            update(ServingReplica)
            .where(ServingReplica.replica_id == replica_id)
            .values(stopping=True, ready=False, last_seen=utcnow())
        )


def list_replicas(
    model_name: str, environment: str = "production", db_url: str | None = None
) -> list[ReplicaInfo]:
    """Every heartbeat row of the model in the environment (live or not), newest first."""
    with session_scope(db_url) as s:
        rows = s.scalars(
            select(ServingReplica)
            .where(ServingReplica.model_name == model_name, ServingReplica.environment == environment)
            .order_by(ServingReplica.last_seen.desc())
        )
        return [_info(r) for r in rows]


def live_replicas(
    model_name: str,
    environment: str = "production",
    stale_after_s: float = STALE_AFTER_S,
    now: datetime | None = None,
    db_url: str | None = None,
) -> list[ReplicaInfo]:
    """Replicas of the model seen within `stale_after_s` that are not stopping."""
    since = (now or utcnow()) - timedelta(seconds=stale_after_s)
    with session_scope(db_url) as s:
        rows = s.scalars(
            select(ServingReplica)
            .where(
                ServingReplica.model_name == model_name,
                ServingReplica.environment == environment,
                ServingReplica.last_seen >= since,
                ServingReplica.stopping.is_(False),
            )
            .order_by(ServingReplica.replica_id)
        )
        return [_info(r) for r in rows]


def prune(older_than_s: float = PRUNE_AFTER_S, db_url: str | None = None) -> int:
    """Delete heartbeat rows not seen for `older_than_s`; returns how many."""
    before = utcnow() - timedelta(seconds=older_than_s)
    with session_scope(db_url) as s:
        return int(s.execute(delete(ServingReplica).where(ServingReplica.last_seen < before)).rowcount or 0)  # type: ignore[attr-defined]
