"""Feedback labels and windows of the prediction log (what monitoring and retraining read)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import select

from nfl_mlops.db import Prediction, get_engine, session_scope, utcnow

LOG_COLUMNS = (
    "id",
    "created_at",
    "model_version",
    "arm",
    "served",
    "text",
    "label",
    "confidence",
    "latency_ms",
    "true_label",
)


def record_feedback(prediction_id: str, label: str, db_url: str | None = None) -> bool:
    """Attach a true label to a logged prediction; False when the id is unknown."""
    with session_scope(db_url) as s:
        row = s.get(Prediction, prediction_id)
        if row is None:
            return False
        row.true_label = label
        row.feedback_at = utcnow()
        return True


def prediction_window(
    model_name: str,
    start: datetime | None = None,
    end: datetime | None = None,
    served_only: bool = True,
    db_url: str | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """The logged predictions of `model_name` in [start, end), newest last."""
    cols = [getattr(Prediction, c) for c in LOG_COLUMNS]
    q = select(*cols).where(Prediction.model_name == model_name)
    if start is not None:
        q = q.where(Prediction.created_at >= start)
    if end is not None:
        q = q.where(Prediction.created_at < end)
    if served_only:
        q = q.where(Prediction.served.is_(True))
    q = q.order_by(Prediction.created_at.desc())
    if limit is not None:
        q = q.limit(limit)
    with get_engine(db_url).connect() as conn:
        df = pd.DataFrame(conn.execute(q).all(), columns=list(LOG_COLUMNS))
    return df.iloc[::-1].reset_index(drop=True)


def labelled_feedback(
    model_name: str, since: datetime | None = None, db_url: str | None = None
) -> pd.DataFrame:
    """Distinct (text, true label) pairs from feedback, for retraining and the recent-window gate, with
    when the labelled prediction was served (`served_at`, UTC).

    Each pair's role (train or evaluation) is fixed by its content when it arrives
    (`nfl_mlops.data.datasets.feedback_role`), so reading more feedback later never moves a row
    an earlier version trained on into a later evaluation window.
    """
    q = select(Prediction.text, Prediction.true_label, Prediction.feedback_at, Prediction.created_at).where(
        Prediction.model_name == model_name, Prediction.true_label.is_not(None)
    )
    if since is not None:
        q = q.where(Prediction.feedback_at >= since)
    with get_engine(db_url).connect() as conn:
        df = pd.DataFrame(conn.execute(q).all(), columns=["text", "label", "feedback_at", "served_at"])
    # the latest label wins when one text got several
    df = df.sort_values("feedback_at").drop_duplicates("text", keep="last")
    df["served_at"] = pd.to_datetime(df["served_at"], utc=True)
    return df[["text", "label", "served_at"]].reset_index(drop=True)
