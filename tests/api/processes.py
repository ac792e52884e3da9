"""A real API process (uvicorn subprocess) for the tests that need several, or need to kill one."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


class Replica:
    """One API process (a real uvicorn subprocess) on a free port."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.name = name
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self._log = self.log_path.open("wb")
        self._spawn()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "nfl_mlops.serving.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "30",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def health(self) -> dict:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.name} exited ({self.proc.returncode}):\n{self.log_path.read_text()[-3000:]}"
            )
        try:
            return httpx.get(f"{self.base_url}/mlops/health", timeout=10).json()
        except httpx.HTTPError:
            return {}

    def serving(self, version: int) -> bool:
        h = self.health()
        return h.get("status") == "healthy" and h.get("serving_version") == version

    def stop(self) -> int:
        """SIGTERM: uvicorn's graceful shutdown runs the lifespan, which writes the prediction log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def kill9(self) -> None:
        """SIGKILL: no shutdown of any kind (what an OOM kill or a lost node does)."""
        self.proc.kill()
        self.proc.wait(30)

    def restart(self) -> None:
        """Start the process again on the same port (after `kill9` or `stop`)."""
        if self._log.closed:
            self._log = self.log_path.open("ab")
        self._spawn()

    def ready(self) -> bool:
        """Readiness over HTTP; fails at once (with its log) when the process has exited."""
        assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
        try:
            return httpx.get(f"{self.base_url}/mlops/health/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False


def one_version_replica(
    name: str, db_url: str, home: Path, model_dir: Path, log_dir: Path, reason: str, **env: str
) -> Replica:
    """Register `model_dir` as v1 of `name` on `db_url`, activate it, and start one API process serving it
    (one torch thread; `env` adds MLOPS_* settings)."""
    import os

    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import state as rollouts
    from nfl_mlops.settings import Settings

    assert (
        Registry.from_settings(Settings(model_name=name, database_url=db_url))
        .register(name, model_dir)
        .version
        == 1
    )
    rollouts.activate(name, 1, reason=reason, db_url=db_url)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    environ.update(
        MLOPS_HOME=str(home), MLOPS_DATABASE_URL=db_url, MLOPS_MODEL_NAME=name, MLOPS_TORCH_THREADS="1", **env
    )
    return Replica(name, environ, log_dir)
