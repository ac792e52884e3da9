"""`nfl-mlops up` with the Prefect server on PostgreSQL (MLOPS_PREFECT_DATABASE_URL / --prefect-database-url):
the database is created when missing, the server keeps the deployments and the code-kept automations there,
and a URL that cannot work fails with a message that names it without its password."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.conftest import _postgres_server_url


@pytest.fixture
def server_url() -> str:
    server = _postgres_server_url()
    if server is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs PostgreSQL at 127.0.0.1:5432 (or MLOPS_TEST_POSTGRES_URL)")
        pytest.skip("needs PostgreSQL at 127.0.0.1:5432 (or MLOPS_TEST_POSTGRES_URL)")
    return server


def test_prefect_database_urls_are_checked_before_anything_starts():
    from deployments.stack import prefect_database

    url = prefect_database("postgresql://u:secret@db.example:5432/prefect", create=False)
    assert url == "postgresql+asyncpg://u:secret@db.example:5432/prefect"
    with pytest.raises(ValueError, match="must be PostgreSQL"):
        prefect_database("sqlite:///x.db", create=False)
    with pytest.raises(ValueError, match="names no database"):
        prefect_database("postgresql://u@db.example:5432", create=False)


@pytest.mark.postgres
def test_an_unreachable_prefect_database_is_named_without_its_password(server_url):
    from deployments.stack import prefect_database

    with pytest.raises(RuntimeError, match="is not usable") as err:
        prefect_database("postgresql://u:hunter2@127.0.0.1:1/prefect")
    assert "hunter2" not in str(err.value) and "***" in str(err.value)


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.postgres
def test_up_runs_the_prefect_server_on_postgresql(server_url, tmp_path):
    import httpx
    import psycopg

    from deployments.stack import LocalStack

    name = f"prefect_up_{uuid.uuid4().hex[:10]}"  # not created here: `up` creates it
    url = f"{server_url.rsplit('/', 1)[0]}/{name}"
    stack = LocalStack(home=tmp_path / "home", prefect_port=4200, prefect_database_url=url)
    try:
        stack.start(api=False)
        assert httpx.get(f"{stack.prefect_api_url}/health", timeout=10).status_code == 200
        assert name in stack.prefect_database
        with psycopg.connect(url) as conn:
            deployments = {r[0] for r in conn.execute("SELECT name FROM deployment")}
            automations = {r[0] for r in conn.execute("SELECT name FROM automation")}
        assert {"pipeline", "monitoring", "retraining"} <= deployments, deployments
        assert "crash-unresponsive-runs" in automations, automations
        # nothing of the Prefect state went to SQLite
        assert not list((tmp_path / "home" / "prefect").glob("*.db")), list((tmp_path / "home").rglob("*.db"))
    finally:
        stack.stop()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
