"""The prediction log's write-ahead spool: append-only segment files, fsynced once per group of rows.

A prediction is answered only after its row is in a segment on disk (`fsync`); the rows then go to the
state DB in batches (`predlog.PredictionLogWriter`), and a segment is deleted once every row in it is
committed there. So a `kill -9`, an OOM kill or a power cut loses no acknowledged prediction: the rows
still in a segment are written to the DB by whoever opens the spool folder next.

Each process writes its own segments and holds an exclusive `flock` on the one it appends to (and on the
ones it still has to drain); a segment nobody holds belongs to a process that died. Any writer sharing the
folder (the restarted replica, or another replica on the host) claims such orphans by taking their lock,
writes their rows to the DB skipping the ids already there (a crash between the DB commit and the
segment's deletion must not write a row twice), and deletes them.

Format: one JSON object per line. A torn last line (the process died inside a write, before the fsync that
would have acknowledged it) is skipped.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

SEGMENT_ROWS = 20_000
"""A segment is closed (and later deleted, once drained) after this many rows."""

SUFFIX = ".jsonl"


def _encode(row: dict[str, Any]) -> bytes:
    out = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
    return (json.dumps(out, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def decode(line: bytes) -> dict[str, Any]:
    row = json.loads(line)
    if isinstance(row.get("created_at"), str):
        row["created_at"] = datetime.fromisoformat(row["created_at"])
    if isinstance(row.get("feedback_at"), str):
        row["feedback_at"] = datetime.fromisoformat(row["feedback_at"])
    return row


def read_segment(path: Path) -> list[dict[str, Any]]:
    """The rows of a segment; a torn or unreadable line ends it (it was never acknowledged)."""
    rows = []
    with path.open("rb") as f:
        for i, line in enumerate(f):
            if not line.endswith(b"\n"):
                log.warning("spool %s: torn last line %d skipped (never acknowledged)", path.name, i + 1)
                break
            try:
                rows.append(decode(line))
            except (ValueError, TypeError):
                log.error(
                    "spool %s: unreadable line %d; the rest of the segment is skipped", path.name, i + 1
                )
                break
    return rows


@dataclass
class Segment:
    path: Path
    file: BinaryIO
    rows: int = 0  # appended
    open: bool = True  # still appended to
    pending: int = 0  # appended and not yet committed to the DB


class Spool:
    """This process's segments in `directory` (created), and the orphans it claims."""

    def __init__(self, directory: Path, segment_rows: int = SEGMENT_ROWS) -> None:
        self.directory = Path(directory)
        self.segment_rows = segment_rows
        self.segments: dict[str, Segment] = {}
        self.current: Segment | None = None
        self.prefix = f"{socket.gethostname()}-{os.getpid()}-"

    # Writing
    def _new_segment(self) -> Segment:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{self.prefix}{uuid.uuid4().hex[:12]}{SUFFIX}"
        f = path.open("ab")
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        seg = Segment(path, f)
        self.segments[path.name] = seg
        return seg

    def append(self, rows: list[dict[str, Any]]) -> str:
        """Append rows and fsync (one group commit); returns the segment's name (for `committed`)."""
        if self.current is None or self.current.rows >= self.segment_rows:
            if self.current is not None:
                self.current.open = False
                self._maybe_delete(self.current)
            self.current = self._new_segment()
        seg = self.current
        seg.file.write(b"".join(_encode(r) for r in rows))
        seg.file.flush()
        os.fsync(seg.file.fileno())
        seg.rows += len(rows)
        seg.pending += len(rows)
        return seg.path.name

    def committed(self, segment: str, n: int) -> None:
        """`n` rows of `segment` are in the DB now; a closed segment with none left is deleted."""
        seg = self.segments.get(segment)
        if seg is not None:
            seg.pending -= n
            self._maybe_delete(seg)

    def _maybe_delete(self, seg: Segment) -> None:
        if not seg.open and seg.pending <= 0:
            seg.path.unlink(missing_ok=True)
            seg.file.close()  # releases the lock after the file is gone
            self.segments.pop(seg.path.name, None)

    @property
    def pending_rows(self) -> int:
        return sum(s.pending for s in list(self.segments.values()))

    # Recovery
    def claim_orphans(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Segments of dead processes (nobody holds their lock): claimed (locked, closed for appends) and read."""
        out: list[tuple[str, list[dict[str, Any]]]] = []
        if not self.directory.exists():
            return out
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path.name in self.segments:
                continue
            try:
                f = path.open("ab")
            except FileNotFoundError:  # drained and deleted by another process meanwhile
                continue
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live process holds it
                f.close()
                continue
            if not path.exists():  # deleted between open and lock
                f.close()
                continue
            rows = read_segment(path)
            seg = Segment(path, f, rows=len(rows), open=False, pending=len(rows))
            self.segments[path.name] = seg
            if not rows:
                self._maybe_delete(seg)
                continue
            out.append((path.name, rows))
        return out

    def close(self) -> None:
        """Close this process's open segment (deleted when drained); locks are released with the files."""
        if self.current is not None:
            self.current.open = False
            self._maybe_delete(self.current)
            self.current = None
        for seg in list(self.segments.values()):
            if seg.pending <= 0:
                seg.open = False
                self._maybe_delete(seg)
            else:
                seg.file.close()
