"""Version numbers, once: `max(version) + 1` in the transaction that writes the row, retried on a collision.

The registry (model versions) and the feature store (feature groups, training datasets) all number
their records this way; the database's unique constraint on (name, version) is what makes it safe
when two processes register at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nfl_mlops.db import session_scope

T = TypeVar("T")

ATTEMPTS = 5


def highest(session: Session, column: Any, *where: Any) -> int:
    """The highest `column` among the rows matching `where` (0 when there is none)."""
    return int(session.scalar(select(func.max(column)).where(*where)) or 0)


def allocate(
    db_url: str | None,
    current: Callable[[Session], int],
    create: Callable[[Session, int], T],
    what: str,
    error: type[Exception] = RuntimeError,
    on_conflict: Callable[[], T | None] | None = None,
    attempts: int = ATTEMPTS,
) -> T:
    """Call `create(session, current(session) + 1)` in one transaction and return its result.

    When another writer took that number first (the unique constraint fires: IntegrityError), `on_conflict`
    may return what that writer made (e.g. the same content, made concurrently); otherwise the next number
    is tried, up to `attempts` times.

    Raises:
        error: no number could be allocated in `attempts` tries.
    """
    for _attempt in range(attempts):
        try:
            with session_scope(db_url) as s:
                return create(s, current(s) + 1)
        except IntegrityError:
            if on_conflict is not None and (found := on_conflict()) is not None:
                return found
    raise error(f"could not allocate a version number for {what} after {attempts} attempts")
