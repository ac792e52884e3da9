"""A/B tests: per-arm outcomes from feedback labels, a significance test (pure), and the test records.

The outcome of a prediction is whether its label equals the feedback label (`true_label`) sent
later through `POST /mlops/feedback`. Arms are compared on accuracy with a two-sided
two-proportion z-test, judged only once each arm has `min_samples` labelled predictions; the
Bayesian probability that B is better (uniform Beta priors) is reported beside it.

Looking at the verdict every day inflates the false-positive rate of any fixed-level test; the
decision that moves traffic is taken once, when `duration_days` is over (`ab_decision`). The
verdict shown before that is a progress report.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Any, overload

from sqlalchemy import case, func, select

from nfl_mlops.db import ABTest, Prediction, session_scope, utcnow
from nfl_mlops.rollout.strategies import ABTestParams, Decision

ARMS = ("a", "b")


class ABTestNotFound(LookupError):
    pass


# Statistics (pure)
@dataclass(frozen=True)
class ArmOutcome:
    """Served predictions of one arm and how many of the feedback-labelled ones were right."""

    arm: str
    version: int
    predictions: int
    labelled: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def as_dict(self) -> dict[str, Any]:
        acc = self.accuracy
        return {**asdict(self), "accuracy": round(acc, 4) if acc is not None else None}


def two_proportion_ztest(x_a: int, n_a: int, x_b: int, n_b: int) -> tuple[float, float]:
    """z statistic (B minus A) and two-sided p-value of H0: both proportions are equal (pooled SE)."""
    if n_a <= 0 or n_b <= 0:
        return 0.0, 1.0
    pooled = (x_a + x_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 0.0, 1.0
    z = (x_b / n_b - x_a / n_a) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def diff_interval(x_a: int, n_a: int, x_b: int, n_b: int, alpha: float) -> tuple[float, float]:
    """Wald interval of accuracy(B) - accuracy(A) at level 1 - alpha."""
    pa, pb = x_a / n_a, x_b / n_b
    se = math.sqrt(pa * (1 - pa) / n_a + pb * (1 - pb) / n_b)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    d = pb - pa
    return d - z * se, d + z * se


def prob_b_better(x_a: int, n_a: int, x_b: int, n_b: int) -> float:
    """P(accuracy B > accuracy A) under independent Beta(1 + correct, 1 + wrong) posteriors."""
    a1, b1, a2, b2 = 1 + x_a, 1 + n_a - x_a, 1 + x_b, 1 + n_b - x_b
    if n_a + n_b > 4000:  # posteriors are close to normal; a grid would be too coarse for them
        m1, m2 = a1 / (a1 + b1), a2 / (a2 + b2)
        v1 = a1 * b1 / ((a1 + b1) ** 2 * (a1 + b1 + 1))
        v2 = a2 * b2 / ((a2 + b2) ** 2 * (a2 + b2 + 1))
        return NormalDist().cdf((m2 - m1) / math.sqrt(v1 + v2))
    import numpy as np
    from scipy.stats import beta

    grid = np.linspace(0.0, 1.0, 4001)
    density_b = beta.pdf(grid, a2, b2)
    cdf_a = beta.cdf(grid, a1, b1)
    return float(np.clip(np.trapezoid(density_b * cdf_a, grid), 0.0, 1.0))


@dataclass(frozen=True)
class ABVerdict:
    """The test's state: a winner when B and A differ significantly on enough labelled predictions."""

    decision: str  # a_better | b_better | no_difference_yet | no_difference
    winner: str | None
    significant: bool
    enough_data: bool
    final: bool
    z: float | None
    p_value: float | None
    accuracy_diff: float | None  # B - A
    ci: tuple[float, float] | None
    prob_b_better: float | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("z", "p_value", "accuracy_diff", "prob_b_better"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 6)
        d["ci"] = [round(c, 6) for c in self.ci] if self.ci else None
        return d


def ab_verdict(
    a: ArmOutcome, b: ArmOutcome, alpha: float, min_samples: int, final: bool = False
) -> ABVerdict:
    """Declare a winner, or `no_difference_yet` (`no_difference` once the test is over).

    Args:
        final: the test's duration is over; an undecided test then ends as `no_difference`.
    """
    undecided = "no_difference" if final else "no_difference_yet"
    if a.labelled < min_samples or b.labelled < min_samples:
        return ABVerdict(
            undecided,
            None,
            False,
            False,
            final,
            None,
            None,
            None,
            None,
            None,
            f"{a.labelled} labelled predictions on A and {b.labelled} on B; "
            f"{min_samples} per arm are needed before a winner can be declared",
        )
    z, p = two_proportion_ztest(a.correct, a.labelled, b.correct, b.labelled)
    diff = b.correct / b.labelled - a.correct / a.labelled
    ci = diff_interval(a.correct, a.labelled, b.correct, b.labelled, alpha)
    pb = prob_b_better(a.correct, a.labelled, b.correct, b.labelled)
    accs = f"accuracy A {a.accuracy:.1%} (n={a.labelled}) vs. B {b.accuracy:.1%} (n={b.labelled})"
    if p < alpha:
        winner = "b" if diff > 0 else "a"
        return ABVerdict(
            f"{winner}_better",
            winner,
            True,
            True,
            final,
            z,
            p,
            diff,
            ci,
            pb,
            f"{winner.upper()} is better: {accs}, z={z:.2f}, p={p:.3g} < {alpha}",
        )
    return ABVerdict(
        undecided,
        None,
        False,
        True,
        final,
        z,
        p,
        diff,
        ci,
        pb,
        f"no significant difference: {accs}, z={z:.2f}, p={p:.3g} >= {alpha}",
    )


def ab_decision(
    params: ABTestParams, ends_at: datetime, now: datetime, outcomes: dict[str, ArmOutcome]
) -> Decision:
    """At the end of the test, the winner takes all traffic (B only when significantly better and
    `promote_winner`); before the end, hold."""
    a, b = outcomes["a"], outcomes["b"]
    if now < ends_at:
        verdict = ab_verdict(a, b, params.alpha, params.min_samples, final=False)
        return Decision("hold", f"A/B test running until {ends_at.isoformat()}: {verdict.reason}")
    verdict = ab_verdict(a, b, params.alpha, params.min_samples, final=True)
    extra = {"winner": verdict.winner, "verdict": verdict.as_dict()}
    if verdict.winner == "b" and params.promote_winner:
        return Decision(
            "promote",
            f"A/B test over: {verdict.reason}; promoting v{b.version}",
            arms={"stable": {"version": b.version, "weight": 100.0}},
            extra=extra,
        )
    kept = f"{verdict.reason} (promote_winner is false)" if verdict.winner == "b" else verdict.reason
    return Decision("finish", f"A/B test over: {kept}; v{a.version} (A) keeps serving", extra=extra)


# Records
@dataclass(frozen=True)
class ABTestInfo:
    id: str
    test_name: str
    model_name: str
    environment: str
    version_a: int
    version_b: int
    traffic_split: float
    duration_days: float
    params: dict[str, Any]
    rollout_id: str | None
    status: str
    winner: str | None
    result: dict[str, Any]
    created_at: datetime
    ends_at: datetime
    finished_at: datetime | None


@overload
def aware(ts: datetime) -> datetime: ...
@overload
def aware(ts: None) -> None: ...
def aware(ts: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back; every time here is UTC."""
    if ts is None:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _info(row: ABTest) -> ABTestInfo:
    return ABTestInfo(
        id=row.id,
        test_name=row.test_name,
        model_name=row.model_name,
        environment=row.environment,
        version_a=row.version_a,
        version_b=row.version_b,
        traffic_split=row.traffic_split,
        duration_days=row.duration_days,
        params=dict(row.params or {}),
        rollout_id=row.rollout_id,
        status=row.status,
        winner=row.winner,
        result=dict(row.result or {}),
        created_at=aware(row.created_at),
        ends_at=aware(row.ends_at),
        finished_at=aware(row.finished_at),
    )


def create_record(
    test_name: str,
    model_name: str,
    environment: str,
    version_a: int,
    version_b: int,
    params: ABTestParams,
    rollout_id: str | None,
    db_url: str | None = None,
    now: datetime | None = None,
) -> ABTestInfo:
    now = now or utcnow()
    with session_scope(db_url) as s:
        row = ABTest(
            test_name=test_name,
            model_name=model_name,
            environment=environment,
            version_a=version_a,
            version_b=version_b,
            traffic_split=params.traffic_split,
            duration_days=params.duration_days,
            params=params.model_dump(mode="json"),
            rollout_id=rollout_id,
            status="running",
            created_at=now,
            ends_at=now + timedelta(days=params.duration_days),
        )
        s.add(row)
        s.flush()
        return _info(row)


def check_pair(
    model_a: str, model_b: str, version_a: int | None = None, version_b: int | None = None
) -> None:
    """An A/B test compares two versions of one served model (the SDK and the HTTP route both ask here).

    Raises:
        ValueError: A and B name different models, or (once resolved) the same version.
    """
    if model_a != model_b:
        raise ValueError(
            "model_a_id and model_b_id must name the same registered model: an A/B test "
            "compares two versions of one served model"
        )
    if version_a is not None and version_a == version_b:
        raise ValueError(f"A and B are the same version (v{version_a})")


def running_test_named(test_name: str, db_url: str | None = None) -> ABTestInfo | None:
    with session_scope(db_url) as s:
        row = s.scalar(
            select(ABTest).where(ABTest.test_name == test_name, ABTest.status == "running").limit(1)
        )
        return _info(row) if row else None


def get_ab_test(test_id: str, db_url: str | None = None) -> ABTestInfo:
    with session_scope(db_url) as s:
        row = s.get(ABTest, test_id)
        if row is None:
            raise ABTestNotFound(f"no A/B test with id {test_id!r}")
        return _info(row)


def ab_test_for_rollout(rollout_id: str, db_url: str | None = None) -> ABTestInfo | None:
    with session_scope(db_url) as s:
        row = s.scalar(select(ABTest).where(ABTest.rollout_id == rollout_id).limit(1))
        return _info(row) if row else None


def list_ab_tests(
    model_name: str | None = None, db_url: str | None = None, limit: int = 100
) -> list[ABTestInfo]:
    with session_scope(db_url) as s:
        q = select(ABTest).order_by(ABTest.created_at.desc()).limit(limit)
        if model_name:
            q = q.where(ABTest.model_name == model_name)
        return [_info(r) for r in s.scalars(q)]


def finish_record(
    test_id: str, status: str, winner: str | None, result: dict[str, Any], db_url: str | None = None
) -> None:
    with session_scope(db_url) as s:
        row = s.get(ABTest, test_id)
        if row is None or row.status != "running":
            return
        row.status, row.winner, row.result, row.finished_at = status, winner, result, utcnow()


def outcomes(test: ABTestInfo, db_url: str | None = None) -> dict[str, ArmOutcome]:
    """Served predictions per arm of the test's rollout and the correct share of the labelled ones."""
    correct = func.sum(case((Prediction.label == Prediction.true_label, 1), else_=0))
    q = (
        select(Prediction.arm, func.count(), func.count(Prediction.true_label), correct)
        .where(
            Prediction.rollout_id == test.rollout_id, Prediction.served.is_(True), Prediction.arm.in_(ARMS)
        )
        .group_by(Prediction.arm)
    )
    with session_scope(db_url) as s:
        got = {arm: (int(n), int(lab), int(c or 0)) for arm, n, lab, c in s.execute(q)}
    versions = {"a": test.version_a, "b": test.version_b}
    return {arm: ArmOutcome(arm, versions[arm], *got.get(arm, (0, 0, 0))) for arm in ARMS}


def report(test: ABTestInfo, now: datetime | None = None, db_url: str | None = None) -> dict[str, Any]:
    """The test's current statistics and verdict (what `GET /mlops/ab-tests/{id}` returns)."""
    now = now or utcnow()
    params = ABTestParams.model_validate(test.params)
    arms = outcomes(test, db_url)
    over = now >= test.ends_at
    verdict = ab_verdict(
        arms["a"], arms["b"], params.alpha, params.min_samples, final=over or test.status != "running"
    )
    return {
        "arms": {k: v.as_dict() for k, v in arms.items()},
        "verdict": verdict.as_dict(),
        "duration_over": over,
    }
