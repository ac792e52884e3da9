"""The state DB goes away for 60 s under load: the API keeps answering, the prediction log waits on disk,
and nothing acknowledged is lost.

A throwaway PostgreSQL cluster (its own folder and port, `tests/pgcluster.py`) is the state DB of a real
API process. Under a steady load it is stopped (`pg_ctl stop -m fast`) for 60 s and started again. During
the outage predictions are still answered 200 (the model and the rollout are in memory, the rows go to the
spool) until the spool holds `MLOPS_MAX_SPOOLED_ROWS`; then 503 with Retry-After, never a 500. After the
outage the spool drains to the DB and every acknowledged prediction is there exactly once.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, select

from tests import pgcluster
from tests.api.helpers import register_versions, wait_until
from tests.api.processes import Replica

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

OUTAGE_S = 60.0
MAX_SPOOLED = 300


def _ready(replica: Replica) -> bool:
    assert replica.proc.poll() is None, replica.log_path.read_text()[-3000:]
    try:
        return httpx.get(f"{replica.base_url}/mlops/health/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def cluster():
    if not pgcluster.available():
        if os.environ.get("CI"):
            pytest.fail("CI needs the PostgreSQL server binaries (initdb, pg_ctl) for the outage test")
        pytest.skip("needs the PostgreSQL server binaries (initdb, pg_ctl)")
    pg = pgcluster.ThrowawayPostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.remove()


def test_a_60_s_database_outage_loses_nothing(cluster, settings, tiny_model_dir, tmp_path):
    from nfl_mlops.db import Prediction, dispose_engines, session_scope
    from nfl_mlops.rollout import state as rollouts
    from nfl_mlops.settings import Settings

    name = f"outage-{uuid.uuid4().hex[:8]}"
    s = Settings(model_name=name, database_url=cluster.url)
    assert register_versions(name, tiny_model_dir, 1, s) == [1]
    rollouts.activate(name, 1, reason="outage test", db_url=cluster.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        MLOPS_HOME=str(settings.mlops_home),
        MLOPS_DATABASE_URL=cluster.url,
        MLOPS_MODEL_NAME=name,
        MLOPS_TORCH_THREADS="1",
        MLOPS_MAX_SPOOLED_ROWS=str(MAX_SPOOLED),
    )
    replica = Replica("outage", env, tmp_path)
    acked: list[str] = []
    statuses: Counter[tuple[str, int]] = Counter()
    retry_after: set[str] = set()
    phase = ["before"]
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=20) as c:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    r = c.post(
                        f"{replica.base_url}/mlops/predict/sentiment", json={"text": f"outage {n} pats"}
                    )
                except httpx.HTTPError:
                    statuses[(phase[0], -1)] += 1
                    continue
                statuses[(phase[0], r.status_code)] += 1
                if r.status_code == 200:
                    acked.append(r.json()["prediction_id"])
                elif r.status_code == 503:
                    retry_after.add(r.headers.get("retry-after", ""))
                    assert "overloaded" in r.json()["detail"]
                time.sleep(0.02)

    try:
        wait_until(lambda: _ready(replica), timeout=180, what="ready")
        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        wait_until(lambda: len(acked) >= 30, timeout=60, what="answers before the outage")
        phase[0] = "outage"
        cluster.stop()
        time.sleep(OUTAGE_S)
        live = httpx.get(f"{replica.base_url}/mlops/health/live", timeout=5).status_code
        phase[0] = "after"
        cluster.start()
        n_before_drain = len(acked)
        wait_until(lambda: len(acked) >= n_before_drain + 30, timeout=120, what="answers after the outage")
        stop.set()
        thread.join(30)
        assert replica.stop() in (0, -15)
    finally:
        stop.set()
        if replica.proc.poll() is None:
            replica.kill9()

    assert live == 200
    assert statuses[("outage", 200)] >= 50, statuses  # served through the outage, from the spool
    assert statuses[("outage", 503)] > 0 and retry_after == {"1"}, statuses  # the bound: refused, not lost
    assert not [k for k in statuses if k[1] not in (200, 503)], statuses  # never a 500 or a reset
    dispose_engines()
    with session_scope(cluster.url) as session:
        stored = set(session.scalars(select(Prediction.id).where(Prediction.model_name == name)))
        rows = session.scalar(
            select(func.count()).select_from(Prediction).where(Prediction.model_name == name)
        )
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged predictions lost; {statuses}"
    assert rows == len(stored)
