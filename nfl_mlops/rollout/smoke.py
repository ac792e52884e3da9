"""Smoke test of a loaded model before it takes traffic (pure over the model's outputs)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from nfl_mlops import LABEL2ID

SMOKE_CASES: dict[str, list[str]] = {
    "positive": [
        "What a game! So proud of this team, best Super Bowl ever #SB49",
        "Love the Seahawks, amazing win today, great job guys",
        "Thank you @united for the great service, awesome flight",
    ],
    "negative": [
        "Worst call ever, the refs ruined the game. Disgusting",
        "I hate the Patriots, cheaters, this is a disgrace",
        "@united lost my bag again, terrible service, never flying with you again",
    ],
}


def smoke_test(
    model: Any, cases: dict[str, list[str]] = SMOKE_CASES, max_latency_ms: float = 5000.0
) -> dict[str, Any]:
    """Valid probabilities, sane direction (positive texts score more positive than negative ones), fast enough."""
    started = time.perf_counter()
    pos = model.predict_proba(cases["positive"])
    neg = model.predict_proba(cases["negative"])
    latency_ms = (time.perf_counter() - started) * 1000.0
    proba = np.concatenate([pos, neg])
    valid = bool(np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1.0, atol=1e-3))
    p_pos = LABEL2ID["positive"]
    margin = float(pos[:, p_pos].mean() - neg[:, p_pos].mean()) if valid else math.nan
    return {
        "passed": valid and margin > 0 and latency_ms <= max_latency_ms,
        "valid_probabilities": valid,
        "positive_margin": round(margin, 4) if valid else None,
        "latency_ms": round(latency_ms, 1),
    }
