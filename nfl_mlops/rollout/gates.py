"""Rollout gates: pure functions over prediction-log rows that say whether a candidate may take more traffic.

Each gate compares the candidate arm with the stable arm over the same window of one rollout and
returns a `GateResult` whose `passed` is True (pass), False (fail: roll back) or None (not enough
data yet: hold). The rows are the `predictions` table's: `arm`, `served`, `error`, `label`,
`latency_ms`, `request_id`, `text_hash`. A candidate that raised leaves rows with `error` set
(the request itself was answered by the stable arm); a shadow arm's rows have `served=False`.

Defaults live once, in `GateParams`; flows and the API take it as a typed parameter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from nfl_mlops import LABELS

LOG_FIELDS = (
    "request_id",
    "created_at",
    "arm",
    "served",
    "label",
    "latency_ms",
    "error",
    "text_hash",
    "model_version",
)
"""Columns of the prediction log the gates read."""

WILSON_Z = 2.576
"""z of the one-sided bound used to fail the error-rate gate before the minimum sample (99.5 %)."""


class GateParams(BaseModel):
    """Thresholds of the rollout gates (candidate vs. stable over the same window)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_error_rate: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Most share of the candidate's predictions that may fail (raise or give invalid output).",
    )
    max_latency_ratio: float = Field(
        1.5,
        ge=1,
        description="The candidate's p95 latency may be at most this multiple of the stable arm's ...",
    )
    latency_slack_ms: float = Field(
        50.0,
        ge=0,
        description="... unless it is within this many milliseconds of it (tiny latencies are noisy).",
    )
    max_p95_ms: float = Field(
        2000.0, gt=0, description="Absolute ceiling on the candidate's p95 latency (ms)."
    )
    max_label_tvd: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Predicted-label distribution shift: total-variation distance vs. the stable arm above "
        "which the shift counts (when also significant, see label_shift_alpha).",
    )
    label_shift_alpha: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="Significance level of the chi-square test of the label distributions (candidate vs. stable).",
    )
    min_agreement: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Shadow: least share of the same requests on which the candidate and stable labels agree.",
    )


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict: `passed` is True, False, or None when there is not enough data yet."""

    name: str
    passed: bool | None
    value: float | None
    threshold: float | None
    n: int
    detail: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["value"] is not None:
            d["value"] = round(float(d["value"]), 4)
        return d


def _frame(rows: pd.DataFrame | Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for col in LOG_FIELDS:
        if col not in frame.columns:
            frame = frame.assign(**{col: None})
    return frame


def arm_attempts(rows: pd.DataFrame, arm: str) -> pd.DataFrame:
    """Every row the arm produced: its answers and its failures."""
    return rows[rows["arm"] == arm]


def arm_answers(rows: pd.DataFrame, arm: str) -> pd.DataFrame:
    """The arm's successful answers (served, or logged for a shadow arm)."""
    mine = rows[rows["arm"] == arm]
    return mine[mine["error"].isna()]


def _per_request(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per request (a batch request logs one row per text, all with the request's latency)."""
    return (
        rows.drop_duplicates("request_id")
        if "request_id" in rows and rows["request_id"].notna().all()
        else rows
    )


def wilson_lower(errors: int, n: int, z: float = WILSON_Z) -> float:
    """Lower end of the Wilson score interval of a proportion."""
    if n == 0:
        return 0.0
    p = errors / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z * z / n))


def error_rate_gate(rows: pd.DataFrame, candidate: str, params: GateParams, min_n: int) -> GateResult:
    """Share of the candidate's predictions that failed.

    Judged once `min_n` predictions exist; fails earlier when even the lower 99.5 % bound of the rate
    is above the limit (a candidate that fails every request is stopped after a handful).
    """
    rows = _frame(rows)
    attempts = arm_attempts(rows, candidate)
    n = len(attempts)
    errors = int(attempts["error"].notna().sum())
    rate = errors / n if n else None
    limit = params.max_error_rate
    if n and errors >= 3 and wilson_lower(errors, n) > limit:
        return GateResult(
            "error_rate",
            False,
            rate,
            limit,
            n,
            f"{errors} of {n} candidate predictions failed ({rate:.1%} > {limit:.1%}); "
            f"last error: {attempts['error'].dropna().iloc[-1]}",
        )
    if n < min_n:
        return GateResult("error_rate", None, rate, limit, n, f"{n}/{min_n} candidate predictions so far")
    passed = rate is not None and rate <= limit
    return GateResult(
        "error_rate",
        passed,
        rate,
        limit,
        n,
        f"{errors} of {n} candidate predictions failed ({rate:.1%} {'<=' if passed else '>'} {limit:.1%})",
    )


def p95(values: Sequence[float] | pd.Series) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), 95))


def latency_gate(
    rows: pd.DataFrame, candidate: str, stable: str, params: GateParams, min_n: int
) -> GateResult:
    """p95 latency per request: the candidate fails when it is above `max_p95_ms`, or above
    `max_latency_ratio` x the stable p95 and more than `latency_slack_ms` slower than it."""
    rows = _frame(rows)
    cand = _per_request(arm_answers(rows, candidate))
    base = _per_request(arm_answers(rows, stable))
    base = base[base["served"].astype(bool)]
    n = min(len(cand), len(base))
    if len(cand) < min_n or len(base) < min_n:
        return GateResult(
            "latency_p95",
            None,
            None,
            None,
            n,
            f"{len(cand)} candidate and {len(base)} stable requests so far (need {min_n} each)",
        )
    c, s = p95(cand["latency_ms"]), p95(base["latency_ms"])
    allowed = max(s * params.max_latency_ratio, s + params.latency_slack_ms)
    limit = min(allowed, params.max_p95_ms)
    ratio = c / s if s > 0 else math.inf
    passed = c <= limit
    why = (
        f"candidate p95 {c:.0f} ms vs. stable {s:.0f} ms (x{ratio:.2f}); allowed "
        f"{limit:.0f} ms (x{params.max_latency_ratio} or +{params.latency_slack_ms:.0f} ms, ceiling "
        f"{params.max_p95_ms:.0f} ms)"
    )
    return GateResult("latency_p95", passed, c, limit, n, why)


def label_counts(labels: Iterable[str]) -> np.ndarray:
    counts = pd.Series(list(labels), dtype=object).value_counts()
    return np.array([int(counts.get(label, 0)) for label in LABELS], dtype=float)


def total_variation(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """Total-variation distance between two count vectors' distributions (0 same, 1 disjoint)."""
    p = p_counts / p_counts.sum()
    q = q_counts / q_counts.sum()
    return float(0.5 * np.abs(p - q).sum())


def homogeneity_p_value(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """Chi-square test that two samples share one label distribution (1.0 when nothing to test)."""
    from scipy.stats import chi2_contingency

    table = np.vstack([p_counts, q_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(chi2_contingency(table, correction=False).pvalue)


def label_shift_gate(
    rows: pd.DataFrame, candidate: str, stable: str, params: GateParams, min_n: int
) -> GateResult:
    """The candidate's predicted-label distribution vs. the stable arm's: fails when the total-variation
    distance is above `max_label_tvd` and the chi-square test finds it significant (both, so that
    neither noise on small samples nor a tiny shift on huge ones rolls back)."""
    rows = _frame(rows)
    cand = arm_answers(rows, candidate)
    base = arm_answers(rows, stable)
    base = base[base["served"].astype(bool)]
    n = min(len(cand), len(base))
    if len(cand) < min_n or len(base) < min_n:
        return GateResult(
            "label_shift",
            None,
            None,
            params.max_label_tvd,
            n,
            f"{len(cand)} candidate and {len(base)} stable predictions so far (need {min_n} each)",
        )
    pc, pb = label_counts(cand["label"]), label_counts(base["label"])
    tvd = total_variation(pc, pb)
    pval = homogeneity_p_value(pc, pb)
    passed = not (tvd > params.max_label_tvd and pval < params.label_shift_alpha)
    dist = ", ".join(
        f"{lab} {c / pc.sum():.0%}/{b / pb.sum():.0%}" for lab, c, b in zip(LABELS, pc, pb, strict=True)
    )
    return GateResult(
        "label_shift",
        passed,
        tvd,
        params.max_label_tvd,
        n,
        f"TVD {tvd:.3f} (limit {params.max_label_tvd}), chi-square p={pval:.3g} "
        f"(alpha {params.label_shift_alpha}); candidate/stable: {dist}",
    )


def agreement_gate(
    rows: pd.DataFrame, candidate: str, stable: str, params: GateParams, min_n: int
) -> GateResult:
    """Shadow: on the same requests and texts, the share where the candidate's label equals the stable one's."""
    rows = _frame(rows)
    cand = arm_answers(rows, candidate)[["request_id", "text_hash", "label"]]
    base = arm_answers(rows, stable)
    base = base[base["served"].astype(bool)][["request_id", "text_hash", "label"]]
    pairs = cand.merge(base, on=["request_id", "text_hash"], suffixes=("_c", "_s")).drop_duplicates(
        ["request_id", "text_hash"]
    )
    n = len(pairs)
    rate = float((pairs["label_c"] == pairs["label_s"]).mean()) if n else None
    if n < min_n:
        return GateResult(
            "agreement", None, rate, params.min_agreement, n, f"{n}/{min_n} paired predictions so far"
        )
    passed = rate is not None and rate >= params.min_agreement
    return GateResult(
        "agreement",
        passed,
        rate,
        params.min_agreement,
        n,
        f"candidate agrees with stable on {rate:.1%} of {n} predictions "
        f"({'>=' if passed else '<'} {params.min_agreement:.0%})",
    )


def canary_gates(
    rows: pd.DataFrame, params: GateParams, min_n: int, candidate: str = "candidate", stable: str = "stable"
) -> list[GateResult]:
    """Error rate, p95 latency and label shift of a canary step."""
    rows = _frame(rows)
    return [
        error_rate_gate(rows, candidate, params, min_n),
        latency_gate(rows, candidate, stable, params, min_n),
        label_shift_gate(rows, candidate, stable, params, min_n),
    ]


def shadow_gates(
    rows: pd.DataFrame, params: GateParams, min_n: int, candidate: str = "shadow", stable: str = "stable"
) -> list[GateResult]:
    """Error rate, p95 latency and agreement of a shadow arm with the stable arm on the same requests."""
    rows = _frame(rows)
    return [
        error_rate_gate(rows, candidate, params, min_n),
        latency_gate(rows, candidate, stable, params, min_n),
        agreement_gate(rows, candidate, stable, params, min_n),
    ]


def overall(results: Sequence[GateResult]) -> str:
    """`fail` when any gate failed, `pass` when every gate passed, else `wait`."""
    if any(r.passed is False for r in results):
        return "fail"
    if results and all(r.passed is True for r in results):
        return "pass"
    return "wait"


def failures(results: Sequence[GateResult]) -> str:
    return "; ".join(f"{r.name}: {r.detail}" for r in results if r.passed is False)
