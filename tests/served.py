"""Predictions written into the prediction log as an API replica would have served them (what monitoring reads)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any


def log_served(
    db_url: str,
    model_name: str,
    version: int,
    texts: Sequence[str],
    predictions: Sequence[Any],
    at: datetime,
    prefix: str,
    request_id: str = "t",
) -> None:
    """Log `texts` with their `predictions` (label, confidence) as served by `version` at `at`; ids are
    `prefix` + a counter."""
    from nfl_mlops.serving.predlog import PredictionLogWriter
    from nfl_mlops.serving.service import text_hash

    writer = PredictionLogWriter(db_url)
    writer.put_many(
        [
            dict(
                id=f"{prefix}{i:05d}",
                request_id=request_id,
                created_at=at,
                model_name=model_name,
                model_version=version,
                arm="stable",
                served=True,
                text=t,
                text_hash=text_hash(t),
                label=p.label,
                confidence=p.confidence,
                latency_ms=1.0,
            )
            for i, (t, p) in enumerate(zip(texts, predictions, strict=True))
        ]
    )
    writer.close()
