"""Shared fixtures: an isolated MLOPS_HOME per session, a real (tiny) model, a real Prefect server."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import pytest

# Everything the suite writes goes under one temporary home; nothing reaches the network.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the suite's models (a few hundred rows, one epoch) are toys that fail the behavioural tests by design;
# the tests of those switch them on per gate (tests/unit/test_behaviour.py, tests/flows/test_gate_real_models.py)
os.environ.setdefault("MLOPS_GATE_BEHAVIOUR", "false")
# the project root, as `nfl-mlops up` gives its worker and API (the retraining triggers read its prefect.yaml)
os.environ.setdefault("NFL_MLOPS_ROOT", str(Path(__file__).resolve().parents[1]))
for _secret in ("MLOPS_API_KEY", "HUGGINGFACE_TOKEN", "HF_TOKEN", "WANDB_API_KEY", "HOPSWORKS_API_KEY"):
    os.environ.pop(_secret, None)


@pytest.fixture(scope="session", autouse=True)
def mlops_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MLOPS_HOME (and the state DB) for the whole session.

    The state DB is SQLite under it, unless MLOPS_TEST_DATABASE_URL names another, or CI (CI=true)
    sets MLOPS_DATABASE_URL: then the suite runs on that database (e.g. PostgreSQL), whose tables it
    resets first. Outside CI a MLOPS_DATABASE_URL in the environment is ignored, never reset.
    """
    from nfl_mlops.db import dispose_engines
    from nfl_mlops.settings import get_settings

    home = tmp_path_factory.mktemp("mlops_home")
    os.environ["MLOPS_HOME"] = str(home)
    url = os.environ.get("MLOPS_TEST_DATABASE_URL")
    if not url and os.environ.get("CI") and os.environ.get("MLOPS_DATABASE_URL"):
        url = os.environ["MLOPS_DATABASE_URL"]  # CI's disposable database (its tables are reset below)
    if url:
        os.environ["MLOPS_DATABASE_URL"] = url
        _reset_database(url)
    else:
        os.environ.pop("MLOPS_DATABASE_URL", None)
    get_settings.cache_clear()
    yield home
    dispose_engines()
    get_settings.cache_clear()


def _reset_database(url: str) -> None:
    import nfl_mlops.features.store  # noqa: F401  (their tables join Base.metadata on import)
    import nfl_mlops.registry.hub  # noqa: F401
    from nfl_mlops.db import Base, get_engine

    engine = get_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)


@pytest.fixture(scope="session")
def settings(mlops_home: Path):
    from nfl_mlops.settings import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MiniLM classifier fine-tuned for a few steps on real corpus tweets (~15 s on 2 cores)."""
    from nfl_mlops.data import load_corpus, prepare, select
    from nfl_mlops.modeling.params import TrainParams
    from nfl_mlops.modeling.train import fine_tune

    rows = select(prepare(load_corpus()), topics_exclude=["nfl"], max_rows=256, seed=1)
    out = tmp_path_factory.mktemp("tiny_model")
    fine_tune(
        rows["text"].tolist(),
        rows["label"].tolist(),
        TrainParams(epochs=2, batch_size=32, learning_rate=2e-4, max_length=48),
        out,
        base_model="sentence-transformers/all-MiniLM-L6-v2",
    )
    return out


@pytest.fixture(scope="session")
def prefect_server():
    """A real temporary Prefect server (API + events + automations) for flow and e2e tests: on a temporary
    SQLite file, or on the PostgreSQL database MLOPS_TEST_PREFECT_DATABASE_URL names (tests/e2e/
    test_prefect_postgres.py runs the automation test that way)."""
    from prefect.testing.utilities import prefect_test_harness

    url = os.environ.get("MLOPS_TEST_PREFECT_DATABASE_URL")
    if url:
        with prefect_harness_on(url, startup_timeout=180):
            yield
    else:
        with prefect_test_harness(server_startup_timeout=180):
            yield


@contextmanager
def prefect_harness_on(database_url: str, startup_timeout: int) -> Iterator[str]:
    """`prefect_test_harness` on a database of our choosing (Prefect's own harness always uses SQLite): a
    Prefect server subprocess on `database_url` (SQLAlchemy form, e.g. postgresql+asyncpg://...), this
    process' settings pointed at it until exit. Yields the API URL."""
    import socket

    import prefect.context
    import prefect.settings
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.server.database.dependencies import temporary_database_interface
    from prefect.utilities.asyncutils import run_coro_as_sync

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with ExitStack() as stack:
        stack.enter_context(temporary_database_interface())
        stack.enter_context(
            prefect.settings.temporary_settings(
                updates={prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL: database_url}
            )
        )
        server = SubprocessASGIServer(port=port)
        prior = SubprocessASGIServer._instances.get(None)
        SubprocessASGIServer._instances[None] = server  # flows that look for "the" server find this one
        server.start(timeout=startup_timeout)
        stack.enter_context(
            prefect.settings.temporary_settings(updates={prefect.settings.PREFECT_API_URL: server.api_url})
        )
        stack.enter_context(
            prefect.context._temporary_global_settings_context(prefect.context.get_settings_context())
        )
        try:
            yield server.api_url
        finally:

            async def drain() -> None:  # logs and events out before the server stops
                with suppress(RuntimeError):  # the log worker may never have started
                    logs = APILogWorker.instance().drain()
                    if inspect.isawaitable(logs):
                        await logs
                events = EventsWorker.drain_all()
                if inspect.isawaitable(events):
                    await events

            run_coro_as_sync(drain())
            server.stop()
            if prior is not None:
                SubprocessASGIServer._instances[None] = prior
            else:
                SubprocessASGIServer._instances.pop(None, None)


def _postgres_server_url() -> str | None:
    """The PostgreSQL server the suite may use: MLOPS_TEST_POSTGRES_URL, a postgresql MLOPS_TEST_DATABASE_URL,
    else the one of this machine and of CI when it listens on 127.0.0.1:5432 (trust auth)."""
    import socket

    for name in ("MLOPS_TEST_POSTGRES_URL", "MLOPS_TEST_DATABASE_URL"):
        url = os.environ.get(name, "")
        if url.startswith("postgresql"):
            return url
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return "postgresql://postgres@127.0.0.1:5432/test"
    except OSError:
        return None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway database of its own on the PostgreSQL server, created for this session and dropped after.

    Tests never share a schema with an earlier run (a new column would otherwise meet an old table).
    Skips where no PostgreSQL listens; under CI (CI=true), where one must, that fails instead.
    """
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = _postgres_server_url()
    if server is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs PostgreSQL at 127.0.0.1:5432 (or MLOPS_TEST_POSTGRES_URL)")
        pytest.skip("needs PostgreSQL at 127.0.0.1:5432 (or MLOPS_TEST_POSTGRES_URL)")
    url = make_url(server.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"nfl_mlops_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {server} is configured but cannot make a test database: {exc}")
    fresh = url.set(database=name).render_as_string(hide_password=False).replace("+psycopg", "", 1)
    yield fresh
    from nfl_mlops.db import dispose_engines

    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
