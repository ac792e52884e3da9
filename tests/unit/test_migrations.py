"""The state DB's schema under Alembic: a new database is built by the migrations and matches the models;
a database made by `create_all` before migrations existed, with real rows in it, is upgraded in place and
keeps every row; on SQLite and on throwaway PostgreSQL databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path) -> Iterator[str]:
    """A URL of an empty database of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    server = make_url(
        request.getfixturevalue("postgres_url").replace("postgresql://", "postgresql+psycopg://", 1)
    )
    name = f"nfl_mlops_migr_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield server.set(database=name).render_as_string(hide_password=False).replace("+psycopg", "", 1)
    from nfl_mlops.db import dispose_engines

    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _engine(url: str):
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def _revision(url: str) -> str | None:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            if "alembic_version" not in inspect(conn).get_table_names():
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def test_a_new_database_is_built_by_the_migrations_and_matches_the_models(empty_db) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import nfl_mlops.features.store  # noqa: F401  (their tables join the metadata on import)
    import nfl_mlops.registry.hub  # noqa: F401
    from nfl_mlops.db import HEAD, Base, dispose_engines, get_engine

    get_engine(empty_db)
    dispose_engines()
    assert _revision(empty_db) == HEAD
    engine = _engine(empty_db)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], diff


def test_a_registry_made_before_migrations_is_upgraded_and_keeps_its_rows(empty_db) -> None:
    """The baseline schema (what `create_all` of main made, = revision 0001) with rows: a model version,
    an alias, two rollouts left active by the old race, predictions; then today's code connects."""
    from alembic import command
    from alembic.config import Config

    from nfl_mlops.db import HEAD, MIGRATIONS, dispose_engines, get_engine
    from nfl_mlops.rollout.state import activate, active_rollout

    old = _engine(empty_db)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    with old.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text("DROP TABLE alembic_version"))  # create_all left no trace of a revision
        conn.execute(
            text(
                "INSERT INTO model_versions (model_name, version, path, status, model_type, metrics, params, "
                "lineage, reason, created_at) VALUES ('m', 1, '/models/m/v1', 'ready', 'transformers', '{}', "
                "'{}', '{}', NULL, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            text(
                "INSERT INTO model_aliases (model_name, alias, version, updated_at) "
                "VALUES ('m', 'champion', 1, :t)"
            ),
            {"t": now},
        )
        for rid, created in (("r-old", datetime(2026, 11, 1, tzinfo=UTC)), ("r-new", now)):
            conn.execute(
                text(
                    "INSERT INTO rollouts (id, model_name, environment, version, previous_version, strategy, "
                    "status, arms, config, history, reason, created_at, updated_at) VALUES (:id, 'm', "
                    "'production', 1, NULL, 'blue_green', 'active', :arms, '{}', '[]', 'old race', :c, :c)"
                ),
                {"id": rid, "c": created, "arms": '{"stable": {"version": 1, "weight": 100.0}}'},
            )
        for i in range(3):
            conn.execute(
                text(
                    "INSERT INTO predictions (id, request_id, created_at, model_name, model_version, arm, "
                    "served, text, text_hash, label, confidence, latency_ms) VALUES (:id, 'r', :t, 'm', "
                    "1, 'stable', :served, 'a tweet', 'h', 'positive', 0.9, 1.0)"
                ),
                {"id": f"p{i}", "t": now, "served": True},
            )
    old.dispose()
    assert _revision(empty_db) is None

    get_engine(empty_db)  # today's code: recognises the baseline, upgrades
    assert _revision(empty_db) == HEAD
    engine = _engine(empty_db)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM predictions")).scalar() == 3
        assert conn.execute(text("SELECT count(*) FROM model_versions")).scalar() == 1
        statuses = dict(conn.execute(text("SELECT id, status FROM rollouts")).all())
        assert statuses == {"r-new": "active", "r-old": "superseded"}
        assert set(conn.execute(text("SELECT revision FROM rollouts")).scalars()) == {0}
        assert {"drift_episodes", "serving_replicas"} <= set(inspect(conn).get_table_names())
    engine.dispose()
    # the rollout code works on the upgraded rows: one active, a new activation supersedes it
    assert active_rollout("m", db_url=empty_db).id == "r-new"
    new = activate("m", 1, reason="after the upgrade", db_url=empty_db)
    assert active_rollout("m", db_url=empty_db).id == new.id
    dispose_engines()
    get_engine(empty_db)  # connecting again changes nothing
    assert _revision(empty_db) == HEAD


def _connect(url: str) -> str:
    from nfl_mlops.db import get_engine

    get_engine(url)
    return "ok"


def test_processes_starting_together_build_the_schema_once(empty_db) -> None:
    """Four processes connect to a new database at the same moment (an API, a worker and flows do)."""
    import multiprocessing as mp

    from nfl_mlops.db import HEAD

    with mp.get_context("spawn").Pool(4) as pool:
        assert pool.map(_connect, [empty_db] * 4) == ["ok"] * 4
    assert _revision(empty_db) == HEAD
