"""The prediction log writer: rows are queued on the request path and written in batches.

A background thread drains the queue every `flush_seconds` or `batch_size` rows. Guarantees:

- every row is normalised when it is queued to the full column set of `predictions` (column
  defaults filled in, unknown keys dropped with a warning, too-long strings cut to the column
  length), so rows with different keys go into one multi-row INSERT and a row that could never
  be written is refused at once (`ValueError` for a missing required column) instead of
  blocking the queue later;
- a failed write (database down, locked, unreachable) keeps the rows in memory and is retried;
  rows are removed from memory only after their transaction committed, so nothing is written
  twice either;
- a row the database refuses on its own (a duplicate id, a value it rejects) is found by
  splitting the batch, kept in `rejected` and logged; the rest of the batch is written;
- `close()` writes everything still queued, so a graceful shutdown loses nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import DataError, IntegrityError, StatementError

from nfl_mlops.db import Prediction, get_engine

log = logging.getLogger(__name__)

_TABLE = Prediction.__table__
# per column: (name, length limit or None, default factory or None, required)
_COLUMNS: list[tuple[str, int | None, Any, bool]] = []
for _c in _TABLE.columns:
    _default = None
    if _c.default is not None:
        _arg = _c.default.arg
        _default = (lambda f=_arg: f(None)) if _c.default.is_callable else (lambda v=_arg: v)
    _COLUMNS.append(
        (_c.key, getattr(_c.type, "length", None), _default, not _c.nullable and _default is None)
    )
COLUMN_NAMES = frozenset(name for name, *_ in _COLUMNS)
MAX_ROWS_PER_INSERT = 2000
MAX_REJECTED_KEPT = 10_000


def normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with every column of `predictions`: defaults filled, strings cut to their column length.

    Raises:
        ValueError: a required column (no default, not nullable) is missing or None.
    """
    out: dict[str, Any] = {}
    for name, length, default, required in _COLUMNS:
        value = row.get(name)
        if value is None:
            if default is not None:
                value = default()
            elif required:
                raise ValueError(f"prediction log row lacks required column {name!r}")
        elif length is not None and isinstance(value, str) and len(value) > length:
            value = value[:length]
        out[name] = value
    return out


def _is_data_error(exc: BaseException) -> bool:
    """True when the database refused the rows themselves (retrying the same rows cannot help)."""
    if isinstance(exc, (IntegrityError, DataError)):
        return True
    # a value that could not even be bound (wrong type): StatementError without a DBAPI error
    return isinstance(exc, StatementError) and not hasattr(exc, "connection_invalidated")


class PredictionLogWriter:
    def __init__(self, db_url: str | None = None, batch_size: int = 500, flush_seconds: float = 0.5) -> None:
        self.db_url = db_url
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._pending: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.rejected: list[tuple[dict[str, Any], str]] = []  # (row, why) the database refused
        self.rejected_count = 0
        self._unknown_seen: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def _normalise(self, row: dict[str, Any]) -> dict[str, Any]:
        unknown = row.keys() - COLUMN_NAMES
        if unknown and not unknown <= self._unknown_seen:
            self._unknown_seen |= unknown
            log.warning(
                "prediction log: dropping unknown key(s) %s (not columns of predictions)", sorted(unknown)
            )
        return normalise_row(row)

    def put(self, row: dict[str, Any]) -> None:
        """Queue one row (normalised now; raises ValueError if it could never be written)."""
        self._queue.put(self._normalise(row))
        if self._queue.qsize() >= self.batch_size:
            self._wake.set()

    def put_many(self, rows: Iterable[dict[str, Any]]) -> None:
        """Queue rows; all are checked before any is queued, so a bad one queues none."""
        normalised = [self._normalise(r) for r in rows]
        for row in normalised:
            self._queue.put(row)
        if self._queue.qsize() >= self.batch_size:
            self._wake.set()

    @property
    def queued(self) -> int:
        return self._queue.qsize() + len(self._pending)

    def _drain(self) -> None:
        while True:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        with get_engine(self.db_url).begin() as conn:
            conn.execute(insert(Prediction), rows)

    def _reject(self, row: dict[str, Any], exc: BaseException) -> None:
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
        log.error(
            "prediction log: the database refused row id=%s request_id=%s: %s",
            row.get("id"),
            row.get("request_id"),
            why,
        )
        self.rejected_count += 1
        if len(self.rejected) < MAX_REJECTED_KEPT:
            self.rejected.append((row, why))

    def _write_pending(self) -> int:
        """Write `_pending` in chunks; on a transient error keep what was not committed, re-raise."""
        rows = self._pending
        done = [False] * len(rows)
        written = 0
        stack = [
            (lo, min(lo + MAX_ROWS_PER_INSERT, len(rows))) for lo in range(0, len(rows), MAX_ROWS_PER_INSERT)
        ]
        stack.reverse()
        try:
            while stack:
                lo, hi = stack.pop()
                try:
                    self._insert(rows[lo:hi])
                except Exception as exc:
                    if not _is_data_error(exc):
                        raise
                    if hi - lo == 1:
                        self._reject(rows[lo], exc)
                        done[lo] = True
                        continue
                    mid = (lo + hi) // 2  # split to find the refused row(s); the others go in
                    stack.extend([(mid, hi), (lo, mid)])
                    continue
                for i in range(lo, hi):
                    done[i] = True
                written += hi - lo
        finally:
            self._pending = [r for r, d in zip(rows, done, strict=True) if not d]
            self.written += written
        return written

    def flush(self) -> int:
        """Write everything queued now; returns the number of rows written."""
        with self._lock:
            self._drain()
            if not self._pending:
                return 0
            return self._write_pending()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.flush()
            except Exception:  # keep the rows, try again next round
                log.exception("prediction log write failed; %d rows kept for retry", self.queued)
                self._stop.wait(1.0)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread and write what is left (retrying until `timeout`)."""
        self._stop.set()
        self._wake.set()
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
