"""The local stack: Prefect server (SQLite, or PostgreSQL with MLOPS_PREFECT_DATABASE_URL), process work pool +
deployments, worker, serving API.

Everything runs as child processes of the caller, logs go to MLOPS_HOME/logs, and `stop()`
ends them in reverse order (the worker needs two signals in Prefect 3.9.1).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deployments.automations import HEARTBEAT_SECONDS

ROOT = Path(__file__).resolve().parent.parent


def declared_work_pool(path: Path = ROOT / "prefect.yaml") -> str:
    """The work pool that `prefect.yaml` sends every deployment to: its one authority (the stack creates
    it and starts the worker on it)."""
    import yaml

    spec = yaml.safe_load(path.read_text()) or {}
    pools = {(d.get("work_pool") or {}).get("name") for d in spec.get("deployments") or []}
    if len(pools) != 1 or None in pools:
        raise ValueError(
            f"{path} must send every deployment to one named work pool, found {sorted(map(str, pools))}"
        )
    return str(pools.pop())


def free_port(preferred: int) -> int:
    """`preferred` when nothing listens there, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port")


def prefect_database(url: str, create: bool = True) -> str:
    """The Prefect server's SQLAlchemy URL for a PostgreSQL URL (`postgresql://` gets Prefect's asyncpg
    driver); its database is created when missing (Prefect makes its tables, not the database)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"the Prefect database must be PostgreSQL, not {parsed.get_backend_name()!r}")
    if not parsed.database:
        raise ValueError("the Prefect database URL names no database (postgresql://host:5432/prefect)")
    if create:
        import psycopg
        from psycopg import sql

        admin = parsed.set(drivername="postgresql", database="postgres")
        try:
            with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
                known = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,))
                if known.fetchone() is None:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(parsed.database)))
        except psycopg.Error as exc:
            where = parsed.render_as_string(hide_password=True)
            raise RuntimeError(f"the Prefect database {where} is not usable: {exc}".strip()) from None
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def _prefect_bin() -> str:
    local = Path(sys.executable).with_name("prefect")
    return str(local) if local.exists() else (shutil.which("prefect") or "prefect")


@dataclass
class LocalStack:
    home: Path
    prefect_port: int | None = None  # default: settings (MLOPS_PREFECT_PORT)
    api_port: int | None = None  # default: settings (MLOPS_API_PORT)
    prefect_database_url: str | None = None  # default: settings (MLOPS_PREFECT_DATABASE_URL); None = SQLite
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    automations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from nfl_mlops.settings import get_settings

        settings = get_settings()
        self.home = Path(self.home).resolve()
        self.prefect_port = self.prefect_port or settings.prefect_port
        self.api_port = self.api_port or settings.api_port
        if self.prefect_database_url is None and settings.prefect_database_url is not None:
            self.prefect_database_url = settings.prefect_database_url.get_secret_value()
        self.host = settings.api_host
        self.work_pool = declared_work_pool()
        self.logs = self.home / "logs"

    @property
    def prefect_api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def prefect_database(self) -> str:
        """Where the Prefect server keeps its state, without a password (for people to read)."""
        if not self.prefect_database_url:
            return f"SQLite under {self.home / 'prefect'}"
        from sqlalchemy.engine import make_url

        return make_url(self.prefect_database_url).render_as_string(hide_password=True)

    def _environment(self) -> dict[str, str]:
        prefect_home = self.home / "prefect"
        prefect_home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            {
                "MLOPS_HOME": str(self.home),
                "NFL_MLOPS_ROOT": str(ROOT),
                "PREFECT_HOME": str(prefect_home),
                "PREFECT_API_URL": self.prefect_api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
                "PREFECT_WORKER_QUERY_SECONDS": "2",
                # flow runs heartbeat so that `crash-unresponsive-runs` (deployments/automations.py) can mark
                # a run whose process died `Crashed`
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
                "PREFECT_UI_API_URL": self.prefect_api_url,
                "MLOPS_API_URL": self.api_url,
                "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
                "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            }
        )
        if "WANDB_API_KEY" not in env:
            env.setdefault("WANDB_MODE", "offline")
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes[name] = proc
        return proc

    def _wait(self, name: str, url: str, ok, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}; see {self.logs / (name + '.log')}"
                )
            try:
                r = httpx.get(url, timeout=3)
                if ok(r):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(
            f"{name} did not answer {url} within {timeout:.0f}s; see {self.logs / (name + '.log')}"
        )

    def _run(self, args: list[str], what: str) -> None:
        out = subprocess.run(args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(
                f"{what} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
            )

    # The pieces
    def start_server(self) -> None:
        self.prefect_port = free_port(self.prefect_port)
        self.env = self._environment()
        server_env = dict(self.env)
        if self.prefect_database_url:  # only the server holds the database's credentials
            server_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = prefect_database(self.prefect_database_url)
        self._spawn(
            "prefect-server",
            [_prefect_bin(), "server", "start", "--host", "127.0.0.1", "--port", str(self.prefect_port)],
            server_env,
        )
        self._wait("prefect-server", f"{self.prefect_api_url}/health", lambda r: r.status_code == 200, 180)

    def deploy(self) -> None:
        prefect = _prefect_bin()
        self._run(
            [prefect, "work-pool", "create", self.work_pool, "--type", "process", "--overwrite"],
            "work-pool create",
        )
        self._run([prefect, "--no-prompt", "deploy", "--all"], "prefect deploy --all")
        self.automations = self._ensure_automations()

    def _ensure_automations(self) -> dict[str, str]:
        """The code-kept automations (by name, ids stable across restarts), on this stack's server. In a child
        process: importing Prefect here would fix this process's Prefect settings before the caller points
        them at the stack."""
        import json

        out = subprocess.run(
            [sys.executable, "-m", "deployments.automations"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"creating the automations failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
            )
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    def start_worker(self) -> None:
        self._spawn("prefect-worker", [_prefect_bin(), "worker", "start", "--pool", self.work_pool])
        time.sleep(2)

    def start_api(self) -> None:
        self.api_port = free_port(self.api_port)
        self.env["MLOPS_API_URL"] = self.api_url
        self._spawn(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "nfl_mlops.serving.app:create_app",
                "--factory",
                "--host",
                self.host,
                "--port",
                str(self.api_port),
                "--log-level",
                "warning",
            ],
        )
        self._wait("api", f"{self.api_url}/mlops/health", lambda r: r.status_code in (200, 503), 180)

    def start(self, api: bool = True) -> LocalStack:
        """Server, pool + deployments, worker and (optionally) the API, in that order."""
        self.start_server()
        self.deploy()
        self.start_worker()
        if api:
            self.start_api()
        return self

    def stop(self) -> None:
        """Stop the API, the worker (two signals) and the server."""
        for name in ("api", "prefect-worker", "prefect-server"):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            signals = [signal.SIGTERM, signal.SIGTERM] if name == "prefect-worker" else [signal.SIGTERM]
            for i, sig in enumerate(signals):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=3 if i + 1 < len(signals) else 15)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
