"""Helpers of the HTTP tests: real uvicorn servers on free 127.0.0.1 ports, httpx clients.

Each server runs `create_app(settings)` in a background thread; stopping it sets
`should_exit`, so uvicorn runs the lifespan shutdown (the prediction log is flushed there).
Every API test uses its own model name, so the other suites sharing the session DB never see
(or change) the rollouts these tests make.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

MODEL = "api-sentiment"  # served by the main server: v1 and v2
KEYED_MODEL = "api-keyed"  # served by the server that requires MLOPS_API_KEY
API_KEY = "test-key-0f3a9c1e77d24b6b"
POLL_SECONDS = 0.2
MAX_BATCH = 16
MAX_CHARS = 500


def api_settings(model_name: str, **overrides: Any):
    """Settings for one test server: the session's MLOPS_HOME/DB, a fast rollout poll, and the session's
    temporary folder (MLOPS_HOME's parent: test models live beside it) as the import root."""
    from nfl_mlops.settings import Settings

    values: dict[str, Any] = dict(
        model_name=model_name,
        import_roots=(Path(os.environ["MLOPS_HOME"]).resolve().parent,),
        rollout_poll_seconds=POLL_SECONDS,
        max_batch_items=MAX_BATCH,
        max_text_chars=MAX_CHARS,
    )
    values.update(overrides)
    return Settings(**values)


def wait_until(
    predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.05, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last value {last!r}")


@dataclass
class ServerHandle:
    settings: Any
    base_url: str
    server: Any
    thread: threading.Thread
    app: Any
    stopped: bool = False

    @property
    def service(self):
        return self.app.state.service

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful stop: uvicorn closes connections and runs the lifespan shutdown."""
        if self.stopped:
            return
        self.server.should_exit = True
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "uvicorn did not shut down in time"
        self.stopped = True


def start_server(
    settings: Any, timeout: float = 120.0, log_level: str = "info", host: str = "127.0.0.1"
) -> ServerHandle:
    """Serve `create_app(settings)` with uvicorn on a free port of `host`, in a daemon thread (the handle's
    URL is on loopback)."""
    import uvicorn

    from nfl_mlops.serving.app import create_app

    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        lifespan="on",
        access_log=True,
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise AssertionError("uvicorn exited during startup (lifespan failed?)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise AssertionError("uvicorn did not start in time")
        time.sleep(0.02)
    return ServerHandle(settings, f"http://127.0.0.1:{port}", server, thread, app)


@dataclass
class BodyChecker:
    """A response hook: reads every body and fails on a stack trace or a forbidden string."""

    forbidden: tuple[str, ...] = ("Traceback",)
    seen: list[tuple[str, int, str]] = field(default_factory=list)

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        text = response.text
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.seen.append(
            (f"{response.request.method} {response.request.url.path}", response.status_code, text)
        )
        for s in self.forbidden:
            assert s not in text, (
                f"{s!r} in the body of {response.request.method} {response.request.url}: {text}"
            )
            assert s not in headers, f"{s!r} in the headers of {response.request.url}"


def make_client(base_url: str, forbidden: Iterable[str] = ("Traceback",), **kwargs: Any) -> httpx.Client:
    checker = BodyChecker(tuple(forbidden))
    client = httpx.Client(base_url=base_url, timeout=60.0, event_hooks={"response": [checker]}, **kwargs)
    client.checker = checker  # type: ignore[attr-defined]
    return client


def register_versions(model_name: str, model_dir: Path, n: int, settings: Any) -> list[int]:
    from nfl_mlops.registry.store import Registry

    registry = Registry.from_settings(settings)
    versions = []
    for i in range(n):
        info = registry.register(
            model_name,
            model_dir,
            metrics={"accuracy": 0.5 + i / 100, "macro_f1": 0.4 + i / 100},
            params={"epochs": 2, "learning_rate": 2e-4},
            lineage={
                "dataset_version": f"api-test-{i}",
                "base_model": "sentence-transformers/all-MiniLM-L6-v2",
            },
            description=f"api test version {i + 1}",
        )
        versions.append(info.version)
    return versions


@contextmanager
def serving(settings: Any, version: int = 1, **kwargs: Any) -> Iterator[ServerHandle]:
    """A server (`start_server(settings, **kwargs)`) that serves `version` when entered; stopped on exit."""
    handle = start_server(settings, **kwargs)
    try:
        with make_client(handle.base_url) as c:
            wait_serving(c, version)
        yield handle
    finally:
        handle.stop()


def wait_serving(client: httpx.Client, version: int | None, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until /mlops/health reports `version` serving (loaded and healthy)."""

    def ready():
        body = client.get("/mlops/health").json()
        if version is None:
            return body if body.get("serving_version") is None else None
        return body if body.get("status") == "healthy" and body.get("serving_version") == version else None

    return wait_until(ready, timeout, what=f"v{version} to serve")


class LogCapture(logging.Handler):
    """Every log record of the process (any logger, any level) while installed."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken format string must not hide the raw parts
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        with self._lock2:
            self.lines.append(f"{record.name} {record.levelname} {text}")

    @property
    def text(self) -> str:
        with self._lock2:
            return "\n".join(self.lines)


@contextmanager
def capture_logs() -> Iterator[LogCapture]:
    root = logging.getLogger()
    handler = LogCapture()
    old_level = root.level
    watched = [
        logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access", "nfl_mlops", "fastapi")
    ]
    old = [(lg, lg.level, lg.propagate) for lg in watched]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for lg in watched:
        lg.setLevel(logging.DEBUG)
        lg.propagate = True
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for lg, level, propagate in old:
            lg.setLevel(level)
            lg.propagate = propagate
