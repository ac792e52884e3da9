"""Scale-out on PostgreSQL: two API processes on one database follow one rollout.

Two real `uvicorn --factory nfl_mlops.serving.app:create_app` processes share the PostgreSQL
named by `MLOPS_TEST_POSTGRES_URL` (or `MLOPS_TEST_DATABASE_URL` when that is PostgreSQL). A
rollout made by the library (a new version, which each process loads and warms before it
switches) and one made through the HTTP API of one replica (a rollback to the warm previous
version) are both followed by both processes; feedback and lineage sent to one replica find a prediction
the other answered a moment before; every answer of both lands in the one prediction log. The model name is unique per run, so nothing collides with other tests on that database.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.helpers import make_client, register_versions, wait_until
from tests.api.processes import Replica

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
POLL_SECONDS = 0.2
LOAD_TIMEOUT = 180.0  # loading and warming a model in a fresh process, on a busy 2-core machine
FOLLOW_TIMEOUT = 15.0  # a switch between two warm versions: the replicas only re-read the DB (75 polls)


@pytest.fixture(scope="module")
def pg_url(postgres_url: str) -> str:
    """A database of this session's own on the local (or configured) PostgreSQL."""
    return postgres_url


@pytest.fixture(scope="module")
def replicas(pg_url, settings, tiny_model_dir, tmp_path_factory) -> Iterator[tuple[str, list[Replica]]]:
    from nfl_mlops.rollout import state as rollouts
    from nfl_mlops.settings import Settings

    name = f"scaleout-{uuid.uuid4().hex[:8]}"
    s = Settings(model_name=name, database_url=pg_url)
    assert register_versions(name, tiny_model_dir, 2, s) == [1, 2]
    rollouts.activate(name, 1, reason="scale-out test: initial", db_url=pg_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        MLOPS_HOME=str(settings.mlops_home),
        MLOPS_DATABASE_URL=pg_url,
        MLOPS_MODEL_NAME=name,
        MLOPS_ROLLOUT_POLL_SECONDS=str(POLL_SECONDS),
        MLOPS_TORCH_THREADS="1",  # two processes on two cores: one thread each, no thrashing
        OMP_WAIT_POLICY="PASSIVE",
    )
    log_dir = tmp_path_factory.mktemp("replicas")
    started = [Replica(f"replica-{i}", env, log_dir) for i in range(2)]
    try:
        yield name, started
    finally:
        for r in started:
            r.stop()


def _predict(replica: Replica, text: str) -> dict:
    with make_client(replica.base_url) as c:
        r = c.post("/mlops/predict/sentiment", json={"text": text})
        assert r.status_code == 200, f"{replica.name}: {r.status_code} {r.text}"
        return r.json()


def _follow(replicas: list[Replica], version: int, timeout: float) -> list[float]:
    """Seconds until each replica serves `version` (healthy, loaded)."""
    t0 = time.monotonic()
    took = []
    for r in replicas:
        wait_until(
            lambda r=r: r.serving(version),
            timeout=timeout,
            interval=0.05,
            what=f"{r.name} to serve v{version}",
        )
        took.append(round(time.monotonic() - t0, 2))
    return took


def test_two_processes_follow_a_rollout_change(pg_url, replicas) -> None:
    from sqlalchemy import func, select

    from nfl_mlops.db import Prediction, get_engine
    from nfl_mlops.rollout import state as rollouts

    name, (a, b) = replicas
    _follow([a, b], 1, LOAD_TIMEOUT)
    answered = [_predict(r, f"Brady and the Pats, take {i}") for i in range(3) for r in (a, b)]
    assert {p["model_version"] for p in answered} == {1}

    # 1. a rollout made elsewhere (the deployment flow, another replica): a new version
    deployment = rollouts.activate(name, 2, reason="scale-out test: v2", db_url=pg_url)
    new_version_took = _follow([a, b], 2, LOAD_TIMEOUT)  # includes loading + warming v2 in each process
    for r in (a, b):
        p = _predict(r, f"after the switch on {r.name}")
        assert p["model_version"] == 2, (r.name, p)
        answered.append(p)

    # 2. a rollback through one replica's HTTP API: the other follows by polling the shared DB
    with make_client(a.base_url) as c:
        resp = c.post(f"/mlops/deployments/{deployment.id}/rollback", json={"reason": "scale-out test"})
        assert resp.status_code == 200, resp.text
    warm_switch_took = _follow([b, a], 1, FOLLOW_TIMEOUT)
    for r in (a, b):
        p = _predict(r, f"after the rollback on {r.name}")
        assert p["model_version"] == 1, (r.name, p)
        answered.append(p)
    print(
        f"\nfollowed a new version after {new_version_took} s (load + warm-up), "
        f"a rollback to the warm version after {warm_switch_took} s"
    )

    # 3. feedback and lineage reach a prediction answered a moment ago by the other replica (its row is
    # durable in that replica's spool and in the DB within its flush interval)
    crossed = 5
    for i in range(crossed):
        answering, asked = (a, b) if i % 2 == 0 else (b, a)
        p = _predict(answering, f"feedback across replicas, take {i}")
        answered.append(p)
        with make_client(asked.base_url) as c:
            fb = c.post("/mlops/feedback", json={"prediction_id": p["prediction_id"], "label": "positive"})
            assert fb.status_code == 200 and fb.json()["recorded"] is True, (
                answering.name,
                asked.name,
                fb.text,
            )
            lin = c.get(f"/mlops/lineage/{p['prediction_id']}")
            assert lin.status_code == 200 and lin.json()["prediction"]["model_version"] == 1, lin.text

    # 4. both replicas wrote every answer into the one prediction log
    for r in (a, b):
        # uvicorn re-raises the SIGTERM it caught once its graceful shutdown is over
        assert r.stop() in (0, -signal.SIGTERM), r.log_path.read_text()[-3000:]
        assert "Traceback" not in r.log_path.read_text(), r.log_path.read_text()[-3000:]
    with get_engine(pg_url).connect() as conn:
        ids = set(conn.scalars(select(Prediction.id).where(Prediction.model_name == name)))
        by_version = dict(
            conn.execute(
                select(Prediction.model_version, func.count())
                .where(Prediction.model_name == name)
                .group_by(Prediction.model_version)
            ).all()
        )
    assert ids == {p["prediction_id"] for p in answered}, json.dumps(by_version)
    assert by_version == {1: 6 + 2 + crossed, 2: 2}
