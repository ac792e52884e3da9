"""The prediction log's write-ahead spool: acknowledged rows are on disk, a dead process's rows are
replayed once, a live process's segment is never taken."""

from __future__ import annotations

import fcntl
import json
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from nfl_mlops.db import Prediction, session_scope, utcnow
from nfl_mlops.serving.predlog import PredictionLogWriter, normalise_row
from nfl_mlops.serving.spool import Spool, read_segment


def _rows(model: str, n: int) -> list[dict[str, Any]]:
    return [
        dict(
            id=uuid.uuid4().hex[:16],
            request_id="r",
            created_at=utcnow(),
            model_name=model,
            model_version=1,
            arm="stable",
            text=f"tweet {i}",
            text_hash=f"h{i}",
            label="neutral",
            confidence=0.5,
            latency_ms=1.0,
        )
        for i in range(n)
    ]


def _ids(model: str) -> list[str]:
    with session_scope() as s:
        return list(s.scalars(select(Prediction.id).where(Prediction.model_name == model)))


def _count(model: str) -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Prediction).where(Prediction.model_name == model))


def test_a_logged_row_is_in_a_segment_before_its_future_completes(tmp_path: Path) -> None:
    model = f"spool-{uuid.uuid4().hex[:8]}"
    w = PredictionLogWriter(spool_dir=tmp_path, flush_seconds=3600)  # no DB write on its own
    w.start()
    try:
        futures = [w.log(rows) for rows in (_rows(model, 3), _rows(model, 2))]
        for f in futures:
            f.result(timeout=10)
        [segment] = list(tmp_path.glob("*.jsonl"))
        on_disk = read_segment(segment)
        assert len(on_disk) == 5 and {r["model_name"] for r in on_disk} == {model}
        assert _count(model) == 0  # durable before it is in the DB
        assert w.flush() == 5 and _count(model) == 5
    finally:
        w.close()
    assert not list(tmp_path.glob("*.jsonl"))  # drained and closed: the segment is gone


def test_a_dead_process_segment_is_replayed_once_and_a_torn_line_skipped(tmp_path: Path) -> None:
    model = f"spool-{uuid.uuid4().hex[:8]}"
    rows = [normalise_row(r) for r in _rows(model, 6)]
    # a process wrote 6 rows and died; 2 of them had reached the DB before it died
    dead = tmp_path / "otherhost-4242-deadbeef.jsonl"
    lines = [
        json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}) for r in rows
    ]
    dead.write_text("\n".join(lines) + "\n" + lines[0][:20])  # + a torn write (never acknowledged)
    w0 = PredictionLogWriter()
    w0.put_many(rows[:2])
    assert w0.flush() == 2

    w = PredictionLogWriter(spool_dir=tmp_path)
    assert w.replay_orphans() == 4
    assert sorted(_ids(model)) == sorted(r["id"] for r in rows)  # each once
    assert not dead.exists()
    assert w.replay_orphans() == 0
    w.close()


def test_a_segment_held_by_a_live_process_is_not_claimed(tmp_path: Path) -> None:
    model = f"spool-{uuid.uuid4().hex[:8]}"
    live = Spool(tmp_path)
    live.append(_rows(model, 3))
    other = PredictionLogWriter(spool_dir=tmp_path)
    assert other.replay_orphans() == 0 and _count(model) == 0
    # the holder dies (its file closes: the lock goes with it) -> the rows are claimed
    for seg in live.segments.values():
        seg.file.close()
    assert other.replay_orphans() == 3 and _count(model) == 3
    other.close()


def test_flock_is_per_open_file(tmp_path: Path) -> None:
    """What the claim relies on: a second open of a locked segment cannot lock it, even in one process."""
    path = tmp_path / "x.jsonl"
    a = path.open("ab")
    fcntl.flock(a.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    b = path.open("ab")
    try:
        fcntl.flock(b.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        raise AssertionError("a held segment was locked twice")
    except BlockingIOError:
        pass
    finally:
        a.close()
        b.close()


def test_rows_not_written_at_close_stay_in_the_spool(tmp_path: Path, monkeypatch) -> None:
    model = f"spool-{uuid.uuid4().hex[:8]}"
    w = PredictionLogWriter(spool_dir=tmp_path, flush_seconds=3600)
    w.start()
    w.log(_rows(model, 4)).result(timeout=10)

    def down(rows):
        raise ConnectionError("the state DB is down")

    monkeypatch.setattr(w, "_insert", down)
    try:
        w.close(timeout=1)
    except ConnectionError:
        pass
    assert sum(len(read_segment(p)) for p in tmp_path.glob("*.jsonl")) == 4  # kept on disk
    later = PredictionLogWriter(spool_dir=tmp_path)
    assert later.replay_orphans() == 4 and _count(model) == 4
    later.close()
