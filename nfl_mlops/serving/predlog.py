"""The prediction log writer: rows are queued on the request path and written in batches.

A background thread drains the queue every `flush_seconds` or `batch_size` rows. `close()`
writes everything still queued, so a graceful shutdown loses nothing; a failed write is retried
with the rows kept in memory.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from sqlalchemy import insert

from nfl_mlops.db import Prediction, get_engine

log = logging.getLogger(__name__)


class PredictionLogWriter:
    def __init__(self, db_url: str | None = None, batch_size: int = 500, flush_seconds: float = 0.5) -> None:
        self.db_url = db_url
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._pending: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def put(self, row: dict[str, Any]) -> None:
        self._queue.put(row)

    def put_many(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._queue.put(row)

    @property
    def queued(self) -> int:
        return self._queue.qsize() + len(self._pending)

    def _drain(self, limit: int | None = None) -> None:
        while limit is None or len(self._pending) < limit:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break

    def flush(self) -> int:
        """Write everything queued now; returns the number of rows written."""
        with self._lock:
            self._drain()
            if not self._pending:
                return 0
            rows = self._pending
            with get_engine(self.db_url).begin() as conn:
                conn.execute(insert(Prediction), rows)
            self._pending = []
            self.written += len(rows)
            return len(rows)

    def _run(self) -> None:
        while not self._stop.is_set():
            deadline = time.monotonic() + self.flush_seconds
            while time.monotonic() < deadline and self._queue.qsize() < self.batch_size and not self._stop.is_set():
                time.sleep(0.02)
            try:
                self.flush()
            except Exception:  # keep the rows, try again next round
                log.exception("prediction log write failed; %d rows kept for retry", len(self._pending))
                time.sleep(1.0)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread and write what is left (retrying until `timeout`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.flush()
                return
            except Exception:
                if time.monotonic() > deadline:
                    log.exception("prediction log: %d rows could not be written at shutdown", self.queued)
                    raise
                time.sleep(0.5)
