"""The e2e automation test again, on a Prefect server whose database is PostgreSQL (as in production:
`nfl-mlops up --prefect-database-url`, docker-compose, Kubernetes), in a database of its own.

The automation test runs in a pytest subprocess whose session-wide Prefect server (tests/conftest.py
`prefect_server`) is started on MLOPS_TEST_PREFECT_DATABASE_URL; afterwards the runs, the deployment and the
automation are read back from PostgreSQL itself, so the test fails if the server quietly used SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _postgres_server_url

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prefect_database() -> Iterator[str]:
    """A fresh database for the Prefect server (SQLAlchemy URL with asyncpg), dropped afterwards."""
    import psycopg

    server = _postgres_server_url()
    if server is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs PostgreSQL at 127.0.0.1:5432 (or MLOPS_TEST_POSTGRES_URL)")
        pytest.skip("needs PostgreSQL at 127.0.0.1:5432 (or MLOPS_TEST_POSTGRES_URL)")
    name = f"prefect_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = server.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_drift_automation_on_a_postgresql_backed_prefect_server(prefect_database):
    import psycopg

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLOPS_"))}
    env.update({k: v for k, v in os.environ.items() if k.startswith("MLOPS_TEST_")})
    env["MLOPS_TEST_PREFECT_DATABASE_URL"] = prefect_database.replace(
        "postgresql://", "postgresql+asyncpg://", 1
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/e2e/test_drift_automation.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    out = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, out
    assert "1 passed" in proc.stdout, out

    # what the server kept is in PostgreSQL: the deployment, its automation, both triggered runs
    with psycopg.connect(prefect_database) as conn:
        runs = conn.execute(
            "SELECT fr.state_type FROM flow_run fr JOIN deployment d ON fr.deployment_id = d.id "
            "WHERE d.name = 'e2e-retraining'"
        ).fetchall()
        automations = conn.execute("SELECT name FROM automation").fetchall()
        events = conn.execute(
            "SELECT count(*) FROM events WHERE event = 'nfl-mlops.drift.detected'"
        ).fetchone()
    assert sorted(str(r[0]) for r in runs) == ["COMPLETED", "COMPLETED"], runs
    assert any("e2e-retraining" in a[0] for a in automations), automations
    assert events is not None and events[0] == 2, events
