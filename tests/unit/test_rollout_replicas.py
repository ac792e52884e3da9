"""Verified switches: the pure replica confirmation, and the controller waiting for (simulated) API replicas.

The "replicas" here are heartbeat rows written by the test exactly as an API process writes them
(`replicas.write_heartbeat`); the controller reads them from the state DB like any driver does.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from nfl_mlops.rollout.replicas import ReplicaInfo, confirmation


class _R:  # the two fields `confirmation` reads of a rollout
    def __init__(self, id: str, arms: dict) -> None:
        self.id, self.arms = id, arms


CANARY = {"stable": {"version": 1, "weight": 80.0}, "candidate": {"version": 2, "weight": 20.0}}


def rep(rid: str, rollout_id: str | None, arms: dict, target: str | None = None, errors: dict | None = None):
    return ReplicaInfo(
        replica_id=rid,
        model_name="m",
        rollout_id=rollout_id,
        arms=arms,
        target_rollout_id=target or rollout_id,
        load_errors=errors or {},
    )


def test_confirmation_is_exact_on_rollout_and_traffic():
    r = _R("new", CANARY)
    c = confirmation(
        r,
        [
            rep(
                "same",
                "new",
                {"stable": {"version": 1, "weight": 80}, "candidate": {"version": 2, "weight": 20}},
            ),
            rep(
                "old-rollout", "old", {"stable": {"version": 1, "weight": 100.0}}, target="new"
            ),  # still loading
            rep(
                "old-step",
                "new",
                {"stable": {"version": 1, "weight": 95.0}, "candidate": {"version": 2, "weight": 5.0}},
            ),
            rep(
                "broken",
                "old",
                {"stable": {"version": 1, "weight": 100.0}},
                target="new",
                errors={"2": "OSError: permission denied"},
            ),
            rep(
                "stale-error",
                "old",
                {"stable": {"version": 1, "weight": 100.0}},
                target="older",
                errors={"2": "OSError: from another rollout"},
            ),
            rep(
                "unrelated-error",
                "old",
                {"stable": {"version": 1, "weight": 100.0}},
                target="new",
                errors={"7": "not in these arms"},
            ),
        ],
    )
    assert [x.replica_id for x in c.confirmed] == ["same"]
    assert [x.replica_id for x in c.failed] == ["broken"]
    assert [x.replica_id for x in c.waiting] == ["old-rollout", "old-step", "stale-error", "unrelated-error"]
    assert not c.done
    shadow = _R(
        "s",
        {"stable": {"version": 1, "weight": 100.0}, "shadow": {"version": 2, "weight": 0.0, "shadow": True}},
    )
    not_shadow = rep(
        "x", "s", {"stable": {"version": 1, "weight": 100.0}, "shadow": {"version": 2, "weight": 0.0}}
    )
    assert confirmation(shadow, [not_shadow]).waiting == [not_shadow]


def test_no_replica_is_vacuously_confirmed():
    c = confirmation(_R("x", CANARY), [])
    assert c == ([], [], []) and c.done


# The controller against heartbeat rows
def _model(tag: str) -> str:
    return f"rep-{tag}-{uuid.uuid4().hex[:6]}"


def _register(name: str, versions: int, tmp_path) -> None:
    from nfl_mlops.db import ModelVersion, session_scope

    with session_scope() as s:
        for v in range(1, versions + 1):
            s.add(ModelVersion(model_name=name, version=v, status="ready", path=str(tmp_path / f"v{v}")))


def _champion(name: str) -> int | None:
    from nfl_mlops.db import Alias, session_scope

    with session_scope() as s:
        a = s.get(Alias, (name, "champion"))
        return a.version if a else None


def _beat(
    name: str,
    rid: str,
    serving,
    target=None,
    errors: dict | None = None,
    stopping: bool = False,
    seen_ago_s: float = 0.0,
) -> None:
    """Write the heartbeat an API replica writes: it serves `serving` (a RolloutInfo or None)."""
    from nfl_mlops.db import utcnow
    from nfl_mlops.rollout import replicas

    target = target or serving
    replicas.write_heartbeat(
        ReplicaInfo(
            replica_id=rid,
            model_name=name,
            host="test-host",
            pid=4242,
            rollout_id=serving.id if serving else None,
            arms=dict(serving.arms) if serving else {},
            target_rollout_id=target.id if target else None,
            loaded_versions=sorted({int(a["version"]) for a in serving.arms.values()}) if serving else [],
            load_errors=errors or {},
            ready=True,
            stopping=stopping,
        ),
        now=utcnow() - timedelta(seconds=seen_ago_s),
    )


def test_blue_green_moves_champion_only_after_every_live_replica_serves_it(settings, tmp_path):
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import actions, controller
    from nfl_mlops.rollout import state as rollouts

    name = _model("bg")
    _register(name, 2, tmp_path)
    reg = Registry.from_settings()
    old = rollouts.activate(name, 1)
    reg.promote(name, 1)
    _beat(name, "replica-a", old)
    _beat(name, "replica-b", old)
    _beat(name, "replica-dead", old, seen_ago_s=3600)  # crashed long ago: not live
    _beat(name, "replica-leaving", old, stopping=True)  # shutting down: not counted

    r = actions.deploy(reg, name, 2, "blue_green", driver="flow")  # ticks once: nobody serves v2 yet
    assert r.config["phase"] == "promoting" and controller.in_progress(r) and _champion(name) == 1
    assert rollouts.active_rollout(name).arms == {"stable": {"version": 2, "weight": 100.0}}

    _beat(name, "replica-a", r)  # a switched
    out = controller.tick(r.id)
    assert out.decision.action == "hold" and not out.applied and "replica-b" in out.decision.reason
    assert "1 of 2 live" in out.decision.reason and _champion(name) == 1
    assert rollouts.get_rollout(r.id).config["last_check"]["replicas"]["waiting"] == ["replica-b"]

    _beat(name, "replica-b", r)  # b switched too
    out = controller.tick(r.id)
    assert out.applied and out.event == "rollout.promoted" and _champion(name) == 2
    final = rollouts.get_rollout(r.id)
    assert final.config["phase"] == "promoted" and not controller.in_progress(final)
    assert [h["event"] for h in final.history] == ["activated", "promoted"]
    assert final.history[-1]["replicas"] == ["replica-a", "replica-b"]
    assert out.payload["version"] == 2 and out.payload["previous_version"] == 1


def test_canary_gates_count_only_traffic_every_replica_serves(settings, tmp_path):
    from nfl_mlops.rollout import controller
    from nfl_mlops.rollout import state as rollouts
    from nfl_mlops.rollout.strategies import CanaryParams
    from tests.unit.test_rollout_gates import _log

    name = _model("canary")
    _register(name, 2, tmp_path)
    old = rollouts.activate(name, 1)
    _beat(name, "replica-a", old)
    r = controller.start_rollout(
        name, 2, "canary", params=CanaryParams(steps=[20, 100], min_requests=5), driver="flow"
    )
    _log(r, "candidate", 2, 10)  # logged while the replica still serves the old rollout
    _log(r, "stable", 1, 10)
    out = controller.tick(r.id)
    assert out.decision.action == "hold" and not out.decision.gates  # gates not judged: unconfirmed
    _beat(name, "replica-a", r)
    out = controller.tick(r.id)
    assert out.decision.action == "confirm" and out.applied
    assert controller.tick(r.id).decision.action == "hold"  # the step's clock starts at the confirmation
    _log(r, "candidate", 2, 6)
    _log(r, "stable", 1, 6)
    out = controller.tick(r.id)
    assert (
        out.decision.action == "promote" and out.event is None and out.rollout.config["phase"] == "promoting"
    )
    assert _champion(name) is None
    out = controller.tick(r.id)  # replica-a still heartbeats the 20 % traffic
    assert out.decision.action == "hold" and _champion(name) is None
    _beat(name, "replica-a", out.rollout)
    out = controller.tick(r.id)
    assert out.event == "rollout.promoted" and _champion(name) == 2
    assert [h["event"] for h in rollouts.get_rollout(r.id).history] == ["activated", "promoted"]


def test_a_replica_that_cannot_load_the_version_rolls_the_rollout_back(settings, tmp_path):
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import actions, controller
    from nfl_mlops.rollout import state as rollouts

    name = _model("broken")
    _register(name, 2, tmp_path)
    reg = Registry.from_settings()
    old = rollouts.activate(name, 1)
    reg.promote(name, 1)
    _beat(name, "replica-a", old)
    _beat(name, "replica-b", old)
    r = actions.deploy(reg, name, 2, "blue_green", driver="flow")
    _beat(name, "replica-a", r)
    _beat(
        name, "replica-b", old, target=r, errors={"2": "PermissionError: [Errno 13] Permission denied: 'v2'"}
    )
    out = controller.tick(r.id)
    assert out.applied and out.event == "rollout.rolled_back"
    ended = rollouts.get_rollout(r.id)
    assert ended.status == "rolled_back" and "replica-b could not load v2" in ended.reason
    assert "Permission denied" in ended.reason
    assert ended.history[-1]["event"] == "rolled_back"
    assert ended.history[-1]["replicas"]["failed"] == {
        "replica-b": {"2": "PermissionError: [Errno 13] Permission denied: 'v2'"}
    }
    active = rollouts.active_rollout(name)
    assert active.strategy == "rollback" and active.version == 1 and out.serving.id == active.id
    assert out.payload["restored_version"] == 1 and "replica-b" in out.payload["reason"]
    assert _champion(name) == 1  # never moved


def test_replicas_that_do_not_confirm_by_the_deadline_roll_back(settings, tmp_path):
    from nfl_mlops.db import utcnow
    from nfl_mlops.rollout import controller
    from nfl_mlops.rollout import state as rollouts
    from nfl_mlops.rollout.strategies import ShadowParams

    name = _model("slow")
    old = rollouts.activate(name, 1)
    _beat(name, "replica-slow", old)
    r = controller.start_rollout(name, 2, "shadow", params=ShadowParams(min_requests=5), confirm_timeout_s=30)
    assert controller.tick(r.id, now=utcnow() + timedelta(seconds=10)).decision.action == "hold"
    _beat(name, "replica-slow", old)  # still alive, still on the old traffic
    out = controller.tick(r.id, now=utcnow() + timedelta(seconds=31), stale_after_s=60)
    assert out.event == "rollout.rolled_back"
    ended = rollouts.get_rollout(r.id)
    assert ended.status == "rolled_back" and "not confirmed within 30 s" in ended.reason
    assert "replica-slow" in ended.reason and rollouts.active_rollout(name).version == 1
    with pytest.raises(rollouts.RolloutError, match="positive"):
        controller.start_rollout(name, 2, "blue_green", confirm_timeout_s=0)


def test_a_first_deployment_that_no_replica_can_load_ends_with_nothing_active(settings, tmp_path):
    from nfl_mlops.rollout import controller
    from nfl_mlops.rollout import state as rollouts

    name = _model("first")
    _beat(name, "replica-a", None)
    r = controller.start_rollout(name, 1, "blue_green", driver="flow")
    _beat(name, "replica-a", None, target=r, errors={"1": "OSError: no such file"})
    out = controller.tick(r.id)
    assert out.event == "rollout.rolled_back" and out.serving is None
    assert rollouts.get_rollout(r.id).status == "rolled_back" and rollouts.active_rollout(name) is None


def test_heartbeats_upsert_and_liveness(settings):
    from nfl_mlops.rollout import replicas

    name = _model("hb")
    _beat(name, "r1", None)
    _beat(name, "r1", None)  # the same row again
    _beat(name, "r2", None, seen_ago_s=120)
    assert [x.replica_id for x in replicas.list_replicas(name)] == ["r1", "r2"]
    assert [x.replica_id for x in replicas.live_replicas(name)] == ["r1"]
    assert [x.replica_id for x in replicas.live_replicas(name, stale_after_s=600)] == ["r1", "r2"]
    replicas.mark_stopping("r1")
    assert replicas.live_replicas(name) == [] and replicas.list_replicas(name)[0].stopping
