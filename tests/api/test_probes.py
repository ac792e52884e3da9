"""Liveness and readiness over real HTTP, and a replica that cannot load a version rolling it back.

A real uvicorn server serves this module's model. v2 is a registered copy whose weights file in
MODELS_DIR is then overwritten with garbage (a corrupted copy: the registry row is fine, the
replica cannot load it), so the server's replica reports the load error in its heartbeat and its
rollout driver rolls the deployment back by itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.helpers import api_settings, make_client, start_server, wait_serving, wait_until

pytestmark = [pytest.mark.timeout(300)]

MODEL = "api-probes"


@pytest.fixture(scope="module")
def probe_settings(settings, tiny_model_dir):
    from nfl_mlops.registry.store import Registry

    s = api_settings(MODEL)
    reg = Registry.from_settings(s)
    assert [reg.register(MODEL, tiny_model_dir).version for _ in range(3)] == [1, 2, 3]
    weights = Path(reg.get(MODEL, 2).path) / "model.safetensors"
    weights.write_bytes(b"\x00garbage, not a safetensors file" * 64)
    reg.promote(MODEL, 1)
    return s


def _champion(client) -> int:
    return next(
        v["version"] for v in client.get(f"/mlops/models/{MODEL}").json() if "champion" in v["aliases"]
    )


def test_readiness_follows_loading_and_a_replica_that_cannot_load_rolls_back(probe_settings):
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import actions, replicas
    from nfl_mlops.rollout import state as rollouts

    db = probe_settings.db_url
    bad_first = rollouts.activate(
        MODEL, 2, reason="probe test: a version this replica cannot load", db_url=db
    )
    handle = start_server(probe_settings)
    try:
        with make_client(handle.base_url) as c:
            assert c.get("/mlops/health/live").json() == {"status": "alive"}
            # not ready: the active rollout's version does not load (nothing else to serve)
            body = wait_until(
                lambda: (lambda r: r.json() if r.status_code == 503 and r.json()["load_errors"] else None)(
                    c.get("/mlops/health/ready")
                ),
                timeout=60,
                what="503 + load error",
            )
            assert body["status"] == "not_ready" and "v2 does not load" in body["reason"] and body["database"]
            assert body["serving_version"] is None and set(body["load_errors"]) == {"2"}
            assert c.get("/mlops/health/live").status_code == 200  # alive all along
            assert c.get("/mlops/health").status_code == 200  # the combined view keeps answering
            assert c.post("/mlops/predict/sentiment", json={"text": "hello"}).status_code == 503
            [hb] = replicas.live_replicas(MODEL, db_url=db)
            assert hb.rollout_id is None and hb.target_rollout_id == bad_first.id and "2" in hb.load_errors

            # a version that loads: ready
            good = rollouts.activate(MODEL, 1, reason="probe test: v1", db_url=db)
            ready = wait_until(
                lambda: (lambda r: r.json() if r.status_code == 200 else None)(c.get("/mlops/health/ready")),
                timeout=120,
                what="ready on v1",
            )
            assert ready["serving_version"] == 1 and ready["deployment_id"] == good.id and ready["following"]
            assert ready["load_errors"] == {}
            wait_serving(c, 1)

            # a blue-green of the corrupted version made elsewhere (a flow, the SDK): this replica keeps v1,
            # reports the error, and its driver rolls the deployment back; champion never moves
            r = actions.deploy(
                Registry.from_settings(probe_settings), MODEL, 2, "blue_green", driver="api", db_url=db
            )
            assert r.config["phase"] == "promoting"
            ended = wait_until(
                lambda: (lambda x: x if x.status != "active" else None)(rollouts.get_rollout(r.id, db)),
                timeout=60,
                what="the rollback",
            )
            assert ended.status == "rolled_back", ended.history
            assert f"replica {handle.service.replica_id} could not load v2" in ended.reason
            assert ended.history[-1]["event"] == "rolled_back"
            assert rollouts.active_rollout(MODEL, db_url=db).version == 1
            assert _champion(c) == 1
            p = c.post("/mlops/predict/sentiment", json={"text": "Brady again!"})
            assert p.status_code == 200 and p.json()["model_version"] == 1
            assert c.get("/mlops/health/ready").status_code == 200  # it kept serving v1 throughout

            # a blue-green through this replica's HTTP API: confirmed by the one live replica, champion moves
            resp = c.post(
                "/mlops/deployments", json={"model_id": MODEL, "model_version": 3, "strategy": "blue_green"}
            )
            assert resp.status_code == 201, resp.text
            dep = resp.json()["deployment_id"]
            wait_until(lambda: _champion(c) == 3, timeout=30, what="champion v3")
            d = c.get(f"/mlops/deployments/{dep}").json()
            assert d["config"]["phase"] == "promoted" and d["history"][-1]["event"] == "promoted"
            assert d["history"][-1]["replicas"] == [handle.service.replica_id]
    finally:
        handle.stop()
    # shutting down: not ready, and the heartbeat says stopping (it no longer holds rollouts back)
    assert handle.service.readiness() == (False, "shutting down")
    assert replicas.live_replicas(MODEL, db_url=db) == []
    assert replicas.list_replicas(MODEL, db_url=db)[0].stopping
