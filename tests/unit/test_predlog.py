"""Unit tests of the batched prediction-log writer: no row is lost (threads, failures, shutdown)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import nfl_mlops.serving.predlog as predlog
from nfl_mlops.db import Prediction, get_engine, session_scope, utcnow
from nfl_mlops.serving.predlog import PredictionLogWriter


def _model() -> str:
    return f"predlog-{uuid.uuid4().hex[:8]}"


def _row(model: str, i: int, request_id: str = "r") -> dict[str, Any]:
    return dict(
        id=uuid.uuid4().hex[:16],
        request_id=request_id,
        created_at=utcnow(),
        model_name=model,
        model_version=1,
        rollout_id=None,
        arm="stable",
        served=True,
        text=f"tweet {i}",
        text_hash=f"h{i}",
        label="neutral",
        confidence=0.5,
        latency_ms=1.0,
    )


def _count(model: str, db_url: str | None = None) -> int:
    with session_scope(db_url) as s:
        return s.scalar(select(func.count()).select_from(Prediction).where(Prediction.model_name == model))


def _texts(model: str, db_url: str | None = None) -> set[str]:
    with session_scope(db_url) as s:
        return set(s.scalars(select(Prediction.text).where(Prediction.model_name == model)))


def test_flush_returns_counts_and_writes() -> None:
    model = _model()
    w = PredictionLogWriter()
    assert w.flush() == 0
    w.put(_row(model, 0))
    w.put_many([_row(model, i) for i in range(1, 4)])
    assert w.queued == 4
    assert w.flush() == 4
    assert w.queued == 0 and w.written == 4
    assert w.flush() == 0
    assert _count(model) == 4
    assert _texts(model) == {f"tweet {i}" for i in range(4)}


def test_rows_without_id_or_time_get_defaults() -> None:
    model = _model()
    row = _row(model, 0)
    del row["id"], row["created_at"]
    w = PredictionLogWriter()
    w.put_many([row, {**row, "text": "tweet 1"}])
    assert w.flush() == 2
    with session_scope() as s:
        got = list(s.scalars(select(Prediction).where(Prediction.model_name == model)))
    assert len({p.id for p in got}) == 2 and all(p.created_at is not None for p in got)


def test_concurrent_puts_are_all_written_after_close() -> None:
    model = _model()
    w = PredictionLogWriter(batch_size=100, flush_seconds=0.05)
    w.start()
    n_threads, per_thread = 4, 500

    def producer(t: int) -> None:
        for i in range(per_thread):
            w.put(_row(model, t * per_thread + i, request_id=f"t{t}"))

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    w.flush()  # an explicit flush racing the background thread must not lose or duplicate rows
    for t in threads:
        t.join()
    w.close()
    assert w.queued == 0
    assert w.written == n_threads * per_thread
    assert _count(model) == n_threads * per_thread
    assert _texts(model) == {f"tweet {i}" for i in range(n_threads * per_thread)}


def test_background_thread_writes_without_close() -> None:
    model = _model()
    w = PredictionLogWriter(batch_size=10, flush_seconds=0.05)
    w.start()
    try:
        w.put_many([_row(model, i) for i in range(25)])
        for _ in range(100):
            if _count(model) == 25:
                break
            time.sleep(0.05)
        assert _count(model) == 25
    finally:
        w.close()


def test_rows_are_kept_when_a_write_fails_and_written_later(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    real = predlog.get_engine
    failures = {"left": 1}

    def flaky(url: str | None = None):
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("database unavailable")
        return real(url)

    monkeypatch.setattr(predlog, "get_engine", flaky)
    w = PredictionLogWriter()
    w.put_many([_row(model, i) for i in range(5)])
    with pytest.raises(ConnectionError):
        w.flush()
    assert w.queued == 5 and w.written == 0
    assert _count(model) == 0
    w.put_many([_row(model, i) for i in range(5, 8)])  # more arrive while the DB is down
    assert w.flush() == 8
    assert _count(model) == 8 and w.queued == 0


def test_background_thread_retries_after_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    real = predlog.get_engine
    calls = {"n": 0}

    def flaky(url: str | None = None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("database unavailable")
        return real(url)

    monkeypatch.setattr(predlog, "get_engine", flaky)
    w = PredictionLogWriter(batch_size=5, flush_seconds=0.05)
    w.start()
    w.put_many([_row(model, i) for i in range(20)])
    w.close(timeout=10)
    assert calls["n"] >= 2
    assert _count(model) == 20 and w.written == 20 and w.queued == 0


def test_broken_db_url_recovers_without_losing_rows(tmp_path: Path) -> None:
    # The SQLite file's folder cannot be created while a plain file sits where it should be.
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker / 'log.db'}"
    model = _model()
    w = PredictionLogWriter(db_url=url)
    w.put_many([_row(model, i) for i in range(10)])
    with pytest.raises(OSError):
        w.flush()
    assert w.queued == 10
    blocker.unlink()  # the volume comes back
    w.put(_row(model, 10))
    w.close(timeout=5)
    assert _count(model, url) == 11
    assert _texts(model, url) == {f"tweet {i}" for i in range(11)}
    assert _count(model) == 0  # nothing went to the session DB
    get_engine(url).dispose()


def test_close_raises_when_db_stays_broken_and_keeps_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(url: str | None = None):
        raise ConnectionError("database unavailable")

    monkeypatch.setattr(predlog, "get_engine", down)
    w = PredictionLogWriter()
    w.put_many([_row(_model(), i) for i in range(3)])
    with pytest.raises(ConnectionError):
        w.close(timeout=0.6)
    assert w.queued == 3  # still in memory for a last try


# Rows with different keys, bad rows, partial failures
def test_rows_with_different_keys_are_written_in_one_flush() -> None:
    model = _model()
    full = _row(model, 0)
    no_optional = {k: v for k, v in _row(model, 1).items() if k not in ("rollout_id", "arm", "served")}
    with_error = {**_row(model, 2), "error": "ValueError: broken canary", "label": ""}
    minimal = {
        k: _row(model, 3)[k]
        for k in (
            "request_id",
            "model_name",
            "model_version",
            "text",
            "text_hash",
            "label",
            "confidence",
            "latency_ms",
        )
    }
    w = PredictionLogWriter()
    w.put_many([with_error, full, no_optional])
    w.put(minimal)
    assert w.flush() == 4
    with session_scope() as s:
        got = {p.text: p for p in s.scalars(select(Prediction).where(Prediction.model_name == model))}
    assert set(got) == {f"tweet {i}" for i in range(4)}
    assert got["tweet 2"].error == "ValueError: broken canary" and got["tweet 0"].error is None
    assert (
        got["tweet 1"].arm == "stable" and got["tweet 1"].served is True and got["tweet 1"].rollout_id is None
    )
    assert got["tweet 3"].id and got["tweet 3"].created_at is not None


def test_unknown_keys_are_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    model = _model()
    w = PredictionLogWriter()
    with caplog.at_level("WARNING", logger="nfl_mlops.serving.predlog"):
        w.put_many([{**_row(model, i), "user_key": "u1", "scores": {"a": 1}} for i in range(3)])
    assert w.flush() == 3 and _count(model) == 3
    warnings = [r.getMessage() for r in caplog.records if "unknown key" in r.getMessage()]
    assert len(warnings) == 1 and "user_key" in warnings[0]


def test_a_row_missing_a_required_column_is_refused_when_queued() -> None:
    model = _model()
    w = PredictionLogWriter()
    bad = _row(model, 1)
    del bad["text"]
    with pytest.raises(ValueError, match="text"):
        w.put_many([_row(model, 0), bad])
    assert w.queued == 0  # nothing of that call was queued
    with pytest.raises(ValueError, match="label"):
        w.put({**_row(model, 2), "label": None})
    w.put(_row(model, 3))
    assert w.flush() == 1 and _count(model) == 1


def test_too_long_strings_are_cut_to_the_column_length() -> None:
    model = _model()
    w = PredictionLogWriter()
    w.put({**_row(model, 0), "arm": "canary-with-a-very-long-arm-name", "request_id": "r" * 100})
    assert w.flush() == 1
    with session_scope() as s:
        p = s.scalars(select(Prediction).where(Prediction.model_name == model)).one()
    assert p.arm == "canary-with-a-very-long-arm-name"[:20] and p.request_id == "r" * 64


def test_a_row_the_database_refuses_is_set_aside_and_the_rest_is_written() -> None:
    model = _model()
    w = PredictionLogWriter()
    rows = [_row(model, i) for i in range(9)]
    rows[6]["id"] = rows[2]["id"]  # a duplicate primary key: the database refuses one of the two
    w.put_many(rows)
    assert w.flush() == 8
    assert w.queued == 0 and w.written == 8
    assert w.rejected_count == 1 and w.rejected[0][0]["text"] in ("tweet 2", "tweet 6")
    assert "IntegrityError" in w.rejected[0][1]
    assert _count(model) == 8
    w.put(_row(model, 9))  # the queue is not blocked by the refused row
    assert w.flush() == 1 and _count(model) == 9


def test_a_failure_after_some_chunks_committed_writes_nothing_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    monkeypatch.setattr(predlog, "MAX_ROWS_PER_INSERT", 10)
    w = PredictionLogWriter()
    real = w._insert
    calls = {"n": 0}

    def flaky(rows):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionError("connection lost")
        return real(rows)

    monkeypatch.setattr(w, "_insert", flaky)
    w.put_many([_row(model, i) for i in range(45)])
    with pytest.raises(ConnectionError):
        w.flush()
    assert w.written == 20 and w.queued == 25 and _count(model) == 20
    assert w.flush() == 25  # a duplicate would raise IntegrityError and be rejected instead
    assert w.rejected_count == 0
    assert _count(model) == 45 and _texts(model) == {f"tweet {i}" for i in range(45)}


ODD_TEXTS = [
    "nul\x00inside",
    "bell\x07 tab\t cr\r esc\x1b del\x7f",
    "🏈🔥 TD!!! 👨‍👩‍👧 family (ZWJ)",
    "هدف رائع للفريق",  # right-to-left
    "zero\u200bwidth\u200djoiner\u2066isolate\u2069",
    "\ufeffbom first",
]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_odd_but_valid_texts_are_stored_safely_on_both_databases(database: str, request) -> None:
    """Every text that JSON can carry is logged; NUL (which PostgreSQL text cannot hold) as U+FFFD."""
    db_url = request.getfixturevalue("postgres_url") if database == "postgresql" else None
    model = _model()
    w = PredictionLogWriter(db_url=db_url)
    w.put_many([{**_row(model, i), "text": t} for i, t in enumerate(ODD_TEXTS)])
    assert w.flush() == len(ODD_TEXTS)
    stored = _texts(model, db_url)
    assert stored == {t.replace("\x00", "\ufffd") for t in ODD_TEXTS}
