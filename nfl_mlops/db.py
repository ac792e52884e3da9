"""The state DB: registry index, aliases, rollouts, prediction log, experiments, retraining jobs.

SQLite under MLOPS_HOME by default, PostgreSQL (or any SQLAlchemy 2 URL) through
MLOPS_DATABASE_URL. Tables are created on first use; there is no import-time work.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(ts: datetime) -> datetime:
    """`ts` as an aware datetime: SQLite hands back naive UTC timestamps, PostgreSQL aware ones."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def new_id() -> str:
    return uuid.uuid4().hex[:16]


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class ModelVersion(Base):
    """One registered version: its folder on the host that registered it (`path`), where every process loads
    it from (`artifact_uri`: that folder as a file URI, or s3://... / hf://...@v<version>) and the sha256 of
    each of its files (`files`, what `registry.artifacts.resolve_version` verifies before a load)."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="ready")  # ready | rejected | archived
    path: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_type: Mapped[str] = mapped_column(String(50), default="sentiment_analysis")
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    lineage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # NULL for versions registered before 0004 (they load from `path`, checked for presence only)
    artifact_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    files: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # relative path -> sha256


class Alias(Base):
    """A movable name (`champion`, `challenger`) pointing at a version."""

    __tablename__ = "model_aliases"

    model_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    alias: Mapped[str] = mapped_column(String(50), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Rollout(Base):
    """A deployment of a version with a strategy; at most one is `active` per (model, environment).

    The database enforces that invariant (a partial unique index); every write of a row is a
    compare-and-set on `revision` (`rollout.state`), so concurrent drivers never apply a step twice.
    """

    __tablename__ = "rollouts"
    __table_args__ = (
        Index(
            "uq_rollouts_one_active",
            "model_name",
            "environment",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    environment: Mapped[str] = mapped_column(String(50), default="production")
    version: Mapped[int] = mapped_column(Integer)
    previous_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    strategy: Mapped[str] = mapped_column(String(20), default="blue_green")
    status: Mapped[str] = mapped_column(String(20), default="pending")
    # Traffic: {"stable": {"version": 1, "weight": 95}, "candidate": {"version": 2, "weight": 5}}
    arms: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    history: Mapped[list[Any]] = mapped_column(default=list)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Prediction(Base):
    """One answered prediction; feedback labels arrive later in `true_label`."""

    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_model_time", "model_name", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[int] = mapped_column(Integer)
    rollout_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    arm: Mapped[str] = mapped_column(String(20), default="stable")
    served: Mapped[bool] = mapped_column(default=True)  # False for shadow answers
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(20))
    confidence: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # a failed arm (canary/shadow)
    true_label: Mapped[str | None] = mapped_column(String(20), nullable=True)
    feedback_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Experiment(Base):
    """A tracked run (W&B offline by default), mirrored here so the API can list it."""

    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    tracker: Mapped[str] = mapped_column(String(30), default="wandb")
    tracker_run_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    run_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="running")
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class RetrainingJob(Base):
    """A request to retrain: from the API, the SDK, a schedule or an automation."""

    __tablename__ = "retraining_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    reason: Mapped[str] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(String(30), default="manual")
    status: Mapped[str] = mapped_column(String(20), default="scheduled")
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class MonitoringRun(Base):
    """One monitoring verdict, so triggers and the API can read the latest state."""

    __tablename__ = "monitoring_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    model_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    window_start: Mapped[datetime | None] = mapped_column(nullable=True)
    window_end: Mapped[datetime | None] = mapped_column(nullable=True)
    n_predictions: Mapped[int] = mapped_column(Integer, default=0)
    drift_share: Mapped[float] = mapped_column(Float, default=0.0)
    drift_detected: Mapped[bool] = mapped_column(default=False)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    report_path: Mapped[str | None] = mapped_column(Text, nullable=True)


class Episode(Base):
    """A drift or degradation episode of one serving version: opened by monitoring, closed when a retrained
    version serves or the signals clear; it starts at most one retraining (`retraining_job_id`, set by
    compare-and-set)."""

    __tablename__ = "drift_episodes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    arm: Mapped[str] = mapped_column(String(20), default="stable")
    # "<model>/v<version>" while open, NULL once closed: the unique index allows one open episode per version
    open_key: Mapped[str | None] = mapped_column(String(250), unique=True, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | closed
    kind: Mapped[str] = mapped_column(String(20), default="drift")  # drift | degraded
    reason: Mapped[str] = mapped_column(Text, default="")
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    close_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    n_alarms: Mapped[int] = mapped_column(Integer, default=1)
    retraining_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failed retrainings of this episode
    next_attempt_at: Mapped[datetime | None] = mapped_column(nullable=True)
    retrained_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ExperimentLog(Base):
    """One `POST /mlops/experiments/metrics` call: the metric history of an experiment, step by step."""

    __tablename__ = "experiment_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(String(32), index=True)
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    logged_at: Mapped[datetime] = mapped_column(default=utcnow)


class ABTest(Base):
    """An A/B test: two versions split by percentage, sticky per key; outcomes from feedback labels.

    Its traffic is the rollout `rollout_id` (strategy `ab_test`, arms `a` and `b`).
    """

    __tablename__ = "ab_tests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    test_name: Mapped[str] = mapped_column(String(200), index=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    environment: Mapped[str] = mapped_column(String(50), default="production")
    version_a: Mapped[int] = mapped_column(Integer)
    version_b: Mapped[int] = mapped_column(Integer)
    traffic_split: Mapped[float] = mapped_column(Float)  # percent of traffic on B
    duration_days: Mapped[float] = mapped_column(Float)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    rollout_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | completed | stopped
    winner: Mapped[str | None] = mapped_column(String(10), nullable=True)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ends_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ServingReplica(Base):
    """The heartbeat of one API process: what it has loaded and which rollout (and traffic) it serves.

    Upserted on every rollout poll, marked `stopping` on shutdown (`rollout.replicas`); a rollout step
    is done when every live replica serves it (`replicas.confirmation`).
    """

    __tablename__ = "serving_replicas"
    __table_args__ = (Index("ix_serving_replicas_model_seen", "model_name", "environment", "last_seen"),)

    replica_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200))
    environment: Mapped[str] = mapped_column(String(50), default="production")
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    rollout_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the rollout it serves
    arms: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the traffic it serves
    target_rollout_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the newest one it read
    loaded_versions: Mapped[list[Any]] = mapped_column(default=list)
    load_errors: Mapped[dict[str, Any]] = mapped_column(default=dict)  # "<version>" -> error, for the target
    ready: Mapped[bool] = mapped_column(default=False)
    stopping: Mapped[bool] = mapped_column(default=False)


class LabelingTask(Base):
    """One served prediction queued for a human label for an episode (`monitoring.labeling`); it counts as
    labelled once its prediction has a `true_label`."""

    __tablename__ = "labeling_tasks"
    __table_args__ = (UniqueConstraint("prediction_id", name="uq_labeling_tasks_prediction"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    episode_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    prediction_id: Mapped[str] = mapped_column(String(32))
    rank: Mapped[int] = mapped_column(Integer)  # order of selection within the episode (0 = first picked)
    margin: Mapped[float] = mapped_column(Float)  # top-1 minus top-2 probability of the served version
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


MIGRATIONS = Path(__file__).parent / "migrations"
BASELINE, HEAD = "0001", "0004"
"""The baseline revision (the schema `create_all` made before migrations existed) and the newest one."""
_MIGRATION_LOCK = 74_000_111  # PostgreSQL advisory lock key: one process migrates at a time


def migrate(engine: Engine) -> str:
    """Bring the state DB to the newest schema (Alembic, `nfl_mlops/migrations`); returns the revision.

    A new database is built by the migrations. A database made by `create_all` before migrations existed
    (no `alembic_version` table) is recognised by its columns, stamped as the revision it matches, and
    upgraded, so an existing registry, its rollouts and prediction log are kept. Concurrent processes on
    PostgreSQL serialise on an advisory lock; on SQLite the first writer's transaction does.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        current = MigrationContext.configure(conn).get_current_revision()
        if current == HEAD:
            return HEAD
        cfg.attributes["connection"] = conn
        if current is None:
            inspector = inspect(conn)
            tables = set(inspector.get_table_names())
            if tables and "rollouts" not in tables:  # a partial create_all: complete it in today's shape
                Base.metadata.create_all(conn)
                inspector = inspect(conn)
                tables = set(inspector.get_table_names())
            if "rollouts" in tables:  # made by create_all: which generation?
                columns = {c["name"] for c in inspector.get_columns("rollouts")}
                version_columns = {c["name"] for c in inspector.get_columns("model_versions")}
                made = (
                    HEAD
                    if "labeling_tasks" in tables and "artifact_uri" in version_columns
                    else "0003"
                    if "labeling_tasks" in tables
                    else "0002"
                    if "revision" in columns and "drift_episodes" in tables
                    else BASELINE
                )
                command.stamp(cfg, made)
                if made == HEAD:
                    return HEAD
        command.upgrade(cfg, "head")
    return HEAD


@contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    """Processes migrating one SQLite file take turns (pysqlite runs DDL outside the transaction, so the
    database alone cannot serialise them); other databases lock inside `migrate`."""
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        yield
        return
    import fcntl

    with open(url.removeprefix("sqlite:///") + ".migrate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def get_engine(url: str | None = None) -> Engine:
    """One engine per URL per process; brings the schema up to date the first time (`migrate`)."""
    if url is None:
        from nfl_mlops.settings import get_settings

        url = get_settings().db_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                if url.startswith("postgresql://"):
                    url_ = url.replace("postgresql://", "postgresql+psycopg://", 1)
                else:
                    url_ = url
                engine = create_engine(url_, pool_pre_ping=True, pool_size=5, max_overflow=10)
            for attempt in range(3):
                try:
                    with _sqlite_file_lock(url):
                        migrate(engine)
                    break
                except DBAPIError:  # another process built the schema at the same moment: look again
                    if attempt == 2:
                        raise
                    time.sleep(0.5 * (attempt + 1))
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests, shutdown)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A transaction: commit on success, roll back on any error."""
    factory = sessionmaker(get_engine(url), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


__all__ = [
    "ABTest",
    "Alias",
    "Base",
    "Episode",
    "Experiment",
    "ExperimentLog",
    "ModelVersion",
    "MonitoringRun",
    "Prediction",
    "RetrainingJob",
    "Rollout",
    "ServingReplica",
    "dispose_engines",
    "get_engine",
    "new_id",
    "session_scope",
    "utcnow",
]
