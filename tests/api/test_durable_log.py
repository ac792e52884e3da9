"""Nothing acknowledged is lost: kill -9 of a real API process under load, five times, at random moments.

A real uvicorn process serves a registered model; four client threads send predictions without pause.
The process is killed with SIGKILL at a random moment (no shutdown runs), started again on its port,
and so on five times; then it is stopped gracefully. Every prediction that was answered 200 must be in
the state DB exactly once: rows of a killed process are still in its spool segment, and the next
process replays them (ids already in the DB are skipped).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from tests.api.helpers import wait_until
from tests.api.processes import one_version_replica

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KILLS = 5


class Load:
    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.acked: list[str] = []
        self.refused = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        with httpx.Client(timeout=10) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    r = client.post(
                        f"{self.url}/mlops/predict/sentiment", json={"text": f"load {i} {n} touchdown"}
                    )
                except httpx.HTTPError:
                    with self.lock:
                        self.refused += 1
                    time.sleep(0.05)
                    continue
                if r.status_code == 200:
                    with self.lock:
                        self.acked.append(r.json()["prediction_id"])
                else:
                    with self.lock:
                        self.refused += 1
                    time.sleep(0.05)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_every_acknowledged_prediction_survives_kill_9(database, settings, tiny_model_dir, tmp_path, request):
    from nfl_mlops.db import Prediction, session_scope

    db_url = request.getfixturevalue("postgres_url") if database == "postgresql" else settings.db_url
    name = f"durable-{uuid.uuid4().hex[:8]}"
    replica = one_version_replica(
        name, db_url, settings.mlops_home, tiny_model_dir, tmp_path, "durable log test"
    )
    rng = random.Random(int(os.environ.get("PYTEST_SEED", "0")) or None)
    moments = []
    try:
        wait_until(replica.ready, timeout=180, what="ready")
        with Load(replica.base_url) as load:
            for _ in range(KILLS):
                before = len(load.acked)
                wait_until(lambda b=before: len(load.acked) >= b + 20, timeout=120, what="answers under load")
                time.sleep(rng.uniform(0.0, 1.5))  # a random moment of the flow of requests
                moments.append(len(load.acked))
                replica.kill9()
                replica.restart()
                wait_until(replica.ready, timeout=180, what="ready after kill -9")
            wait_until(
                lambda: len(load.acked) >= moments[-1] + 20, timeout=120, what="answers after the last kill"
            )
        assert replica.stop() in (0, -15)  # graceful (uvicorn re-raises SIGTERM after its shutdown)
    finally:
        if replica.proc.poll() is None:
            replica.kill9()

    acked = load.acked
    assert len(acked) == len(set(acked))
    with session_scope(db_url) as session:
        stored = list(session.scalars(select(Prediction.id).where(Prediction.model_name == name)))
        n_rows = session.scalar(
            select(func.count()).select_from(Prediction).where(Prediction.model_name == name)
        )
    missing = set(acked) - set(stored)
    assert not missing, (
        f"{len(missing)} of {len(acked)} acknowledged predictions lost (kills after {moments})"
    )
    assert n_rows == len(set(stored))  # once each
    assert len(moments) == KILLS
