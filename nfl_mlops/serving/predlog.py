"""The prediction log writer: rows are queued on the request path and written in batches.

With a spool folder (`spool.py`, what the API uses), `log(rows)` first appends the rows to a write-ahead
segment and fsyncs it, one fsync for every row that arrived meanwhile (group commit), and its future
completes only then: the API answers a prediction after its row is durable. Rows left in segments by a
process that died are written to the DB (skipping ids already there) by the next writer on the folder.

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
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
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
ORPHAN_SCAN_S = 30.0
"""How often a writer looks for spool segments of dead processes (and at start)."""


def normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with every column of `predictions`: defaults filled, strings cut to their column length, and
    NUL characters stored as U+FFFD (PostgreSQL text cannot hold NUL; one rule on every database).

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
        elif isinstance(value, str):
            if "\x00" in value:
                value = value.replace("\x00", "\ufffd")
            if length is not None and len(value) > length:
                value = value[:length]
        out[name] = value
    return out


def _is_data_error(exc: BaseException) -> bool:
    """True when the database refused the rows themselves (retrying the same rows cannot help)."""
    if isinstance(exc, (IntegrityError, DataError)):
        return True
    # a value that could not even be bound (wrong type): StatementError without a DBAPI error
    return isinstance(exc, StatementError) and not hasattr(exc, "connection_invalidated")


Item = tuple[dict[str, Any], str | None]  # a normalised row and its spool segment (None: not spooled)


class PredictionLogWriter:
    def __init__(
        self,
        db_url: str | None = None,
        batch_size: int = 500,
        flush_seconds: float = 0.5,
        spool_dir: Path | None = None,
    ) -> None:
        from nfl_mlops.serving.spool import Spool

        self.db_url = db_url
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.spool = Spool(spool_dir) if spool_dir is not None else None
        self._queue: queue.Queue[Item] = queue.Queue()
        self._pending: list[Item] = []
        self._commits: queue.Queue[tuple[list[dict[str, Any]], Future[None]] | None] = queue.Queue()
        self._spool_thread: threading.Thread | None = None
        self._orphans: list[tuple[str, list[dict[str, Any]]]] = []
        self._next_scan = 0.0
        self.replayed = 0
        self.group_commits = 0
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
        if self.spool is not None and self._spool_thread is None:
            self._spool_thread = threading.Thread(
                target=self._commit_loop, name="prediction-spool", daemon=True
            )
            self._spool_thread.start()

    # Durable path (spool)
    def log(self, rows: Iterable[dict[str, Any]]) -> Future[None]:
        """Queue rows durably: the future completes once they are fsynced in the spool (at once, without
        a spool). All rows are checked before any is queued (ValueError: none is)."""
        normalised = [self._normalise(r) for r in rows]
        done: Future[None] = Future()
        if self.spool is None or self._spool_thread is None:
            for row in normalised:
                self._queue.put((row, None))
            done.set_result(None)
        else:
            self._commits.put((normalised, done))
        if self._queue.qsize() >= self.batch_size:
            self._wake.set()
        return done

    def _commit_loop(self) -> None:
        """Group commit: everything that arrived meanwhile goes into one append + fsync."""
        assert self.spool is not None
        while True:
            first = self._commits.get()
            group = [first]
            while True:
                try:
                    group.append(self._commits.get_nowait())
                except queue.Empty:
                    break
            stop = any(g is None for g in group)
            work = [g for g in group if g is not None]
            if work:
                rows = [r for batch, _ in work for r in batch]
                try:
                    segment = self.spool.append(rows)
                except Exception as exc:  # a full or failing disk: the requests fail, nothing is acknowledged
                    log.exception("prediction spool: append failed")
                    for _, fut in work:
                        fut.set_exception(exc)
                else:
                    self.group_commits += 1
                    for row in rows:
                        self._queue.put((row, segment))
                    for _, fut in work:
                        fut.set_result(None)
                    if self._queue.qsize() >= self.batch_size:
                        self._wake.set()
            if stop:
                return

    def _normalise(self, row: dict[str, Any]) -> dict[str, Any]:
        unknown = row.keys() - COLUMN_NAMES
        if unknown and not unknown <= self._unknown_seen:
            self._unknown_seen |= unknown
            log.warning(
                "prediction log: dropping unknown key(s) %s (not columns of predictions)", sorted(unknown)
            )
        return normalise_row(row)

    def put(self, row: dict[str, Any]) -> None:
        """Queue one row, not durably (normalised now; raises ValueError if it could never be written)."""
        self._queue.put((self._normalise(row), None))
        if self._queue.qsize() >= self.batch_size:
            self._wake.set()

    def put_many(self, rows: Iterable[dict[str, Any]]) -> None:
        """Queue rows, not durably; all are checked before any is queued, so a bad one queues none."""
        normalised = [self._normalise(r) for r in rows]
        for row in normalised:
            self._queue.put((row, None))
        if self._queue.qsize() >= self.batch_size:
            self._wake.set()

    @property
    def backlog(self) -> int:
        """Rows not yet in the DB (spooled or queued): what an outage piles up."""
        return self.spool.pending_rows if self.spool is not None else self.queued

    @property
    def queued(self) -> int:
        return self._queue.qsize() + len(self._pending) + self._commits.qsize()

    def _drain(self) -> None:
        while True:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        with get_engine(self.db_url).begin() as conn:
            conn.execute(insert(Prediction), rows)

    def _insert_new(self, rows: list[dict[str, Any]]) -> int:
        """Insert the rows whose id is not in the DB yet (a replayed segment); returns how many."""
        written = 0
        for lo in range(0, len(rows), MAX_ROWS_PER_INSERT):
            chunk = rows[lo : lo + MAX_ROWS_PER_INSERT]
            with get_engine(self.db_url).begin() as conn:
                ids = [r["id"] for r in chunk]
                have = set(conn.scalars(select(Prediction.id).where(Prediction.id.in_(ids))))
                fresh = [r for r in chunk if r["id"] not in have]
                if fresh:
                    conn.execute(insert(Prediction), fresh)
            written += len(fresh)
        return written

    def replay_orphans(self) -> int:
        """Write the rows of dead processes' spool segments to the DB (each once); returns rows written.
        Raises (and keeps the claimed segments for the next try) when the DB fails."""
        if self.spool is None:
            return 0
        self._orphans += self.spool.claim_orphans()
        written = 0
        while self._orphans:
            name, rows = self._orphans[0]
            n = self._insert_new([normalise_row(r) for r in rows])
            written += n
            self.spool.committed(name, len(rows))
            self._orphans.pop(0)
            log.warning(
                "prediction log: %d rows replayed from spool segment %s (%d were in the DB already)",
                n,
                name,
                len(rows) - n,
            )
        self.replayed += written
        return written

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
        items = self._pending
        rows = [r for r, _ in items]
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
            self._pending = [it for it, d in zip(items, done, strict=True) if not d]
            self.written += written
            if self.spool is not None:
                counts = Counter(seg for (_, seg), d in zip(items, done, strict=True) if d and seg)
                for seg, n in counts.items():
                    self.spool.committed(seg, n)
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
            if self.spool is not None and time.monotonic() >= self._next_scan:
                self._next_scan = time.monotonic() + ORPHAN_SCAN_S
                try:
                    with self._lock:
                        self.replay_orphans()
                except Exception:  # the DB is down: the claimed segments stay, tried again next scan
                    log.exception("prediction log: replaying spool segments failed; retried later")
                    self._next_scan = time.monotonic() + 2.0
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
        """Stop the threads and write what is left (retrying until `timeout`). Rows that could not be written
        stay in the spool's segments (when there is one) for the next writer."""
        if self._spool_thread is not None:
            self._commits.put(None)
            self._spool_thread.join(timeout=timeout)
            self._spool_thread = None
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    self.flush()
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        if self.spool is not None:  # on disk: the next writer on the folder writes them
                            log.warning(
                                "prediction log: %d rows not written at shutdown stay in the spool %s",
                                self.queued,
                                self.spool.directory,
                            )
                            return
                        log.exception("prediction log: %d rows could not be written at shutdown", self.queued)
                        raise
                    time.sleep(0.5)
        finally:
            if self.spool is not None:
                self.spool.close()
