"""The state DB goes away for 60 s under load: the API keeps answering, the prediction log waits on disk,
and nothing acknowledged is lost.

On PostgreSQL, a throwaway cluster (its own folder and port, `tests/pgcluster.py`) is the state DB of a real
API process; under a steady load it is stopped (`pg_ctl stop -m fast`) for 60 s and started again. On
SQLite, another process holds the database file's exclusive lock for 60 s (what a long backup or a stuck
writer does): no write gets through. During
the outage predictions are still answered 200 (the model and the rollout are in memory, the rows go to the
spool) until the spool holds `MLOPS_MAX_SPOOLED_ROWS`; then 503 with Retry-After, never a 500. After the
outage the spool drains to the DB and every acknowledged prediction is there exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, select

from tests import pgcluster
from tests.api.helpers import wait_until
from tests.api.processes import one_version_replica

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

OUTAGE_S = 60.0
MAX_SPOOLED = 300


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


class SQLiteLockHolder:
    """A SQLite state DB made unwritable: `stop` takes the file's exclusive lock in another process (a
    `sqlite3` child that holds `BEGIN EXCLUSIVE` until told to release), `start` releases it."""

    def __init__(self, path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.proc: subprocess.Popen | None = None

    def stop(self) -> None:
        code = (
            "import sqlite3, sys\n"
            f"c = sqlite3.connect({str(self.path)!r}, timeout=30, isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n"
            "c.execute('ROLLBACK')\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "locked"

    def start(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.wait(30) == 0


@pytest.fixture
def sqlite_db(tmp_path):
    return SQLiteLockHolder(tmp_path / "outage-state.db")


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_a_60_s_database_outage_loses_nothing(database, settings, tiny_model_dir, tmp_path, request):
    from nfl_mlops.db import Prediction, dispose_engines, session_scope

    cluster = request.getfixturevalue("cluster" if database == "postgresql" else "sqlite_db")
    name = f"outage-{uuid.uuid4().hex[:8]}"
    replica = one_version_replica(
        name,
        cluster.url,
        settings.mlops_home,
        tiny_model_dir,
        tmp_path,
        "outage test",
        MLOPS_MAX_SPOOLED_ROWS=str(MAX_SPOOLED),
    )
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
        wait_until(replica.ready, timeout=180, what="ready")
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
