"""The promotion quality gate: may a candidate replace the champion? (pure, unit-tested).

The gate never trusts numbers it is told. Registration scores the candidate and the champion
itself, on the same rows, and hands this module the true labels and both models' predicted
classes per evaluation set. The decision is then:

- **non-inferiority on the test split**: the lower bound of the paired bootstrap interval of
  (candidate - champion) on `metric` is above `-margin`;
- **improvement** (only when asked, e.g. a retraining started by drift or degradation): better
  somewhere, worse nowhere. On the recent labelled window the candidate is non-inferior (lower bound
  above `-margin`), and it is shown better (lower bound above 0) on the recent window or, failing
  that, on the test split. A candidate no worse on the drifted traffic and clearly better in general
  is an improvement; one merely as good is not (a retraining must earn its rollout);
- **golden floor**: on the model's fixed golden set (the first registered version's test split)
  the candidate scores at least the first version's score there minus `margin`, so small
  losses cannot add up over generations;
- **no class collapse**: on every evaluation set, each class with enough true rows has F1 of at
  least `min_class_f1`;
- **behaviour** (unless switched off): the candidate meets the pass rate of every behavioural test
  (`registry.behaviour`: clear tweets, invariance to names and links, negation and insults), so a
  model that scores well on the test split for the wrong reasons is still rejected.

Burden of proof: "not shown" is a rejection. On a small set the interval is wide, so a candidate
that is about as good as the champion may fail non-inferiority; the reason says how wide the
interval was, and the remedy is more evaluation rows (or a deliberately wider margin), not a
gate that passes on missing evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from nfl_mlops import LABELS
from nfl_mlops.registry.behaviour import BehaviourParams, BehaviourResult

Metric = Literal["macro_f1", "accuracy"]


class GateParams(BaseModel):
    """How the registration gate judges a candidate (each default is defined here, once)."""

    metric: Metric = Field("macro_f1", description="Metric compared between candidate and champion.")
    margin: float = Field(
        0.02,
        ge=0.0,
        lt=1.0,
        description="Non-inferiority margin: the candidate may be at most this much worse than the champion "
        "(lower bound of the paired interval) on the test split, and than the first version's "
        "score on the golden set. 0.02: with about 1,000 test rows the paired interval of a "
        "macro-F1 difference is about +-0.02 wide, so a margin of 0.01 would reject most "
        "candidates that are as good as the champion; the golden floor stops the erosion that "
        "a wider margin would otherwise allow over generations.",
    )
    min_class_f1: float = Field(
        0.10,
        ge=0.0,
        le=1.0,
        description="Per-class F1 floor on every evaluation set; a class at 0.0 always fails. 0.10 is well "
        "below what a working 3-class model gets on its rarest class (0.4+) and below chance "
        "(about 0.2 for a class of 15 % predicted a third of the time), so it only catches a "
        "class the model (almost) never predicts correctly: collapse, not mediocrity.",
    )
    min_class_support: int = Field(
        10,
        ge=1,
        description="A class with fewer true rows than this in an evaluation set is reported but not held "
        "to the floor there (its F1 is noise); it is still held to it on the larger sets.",
    )
    n_bootstrap: int = Field(1000, ge=100, le=100_000, description="Paired bootstrap resamples.")
    confidence: float = Field(
        0.90,
        gt=0.5,
        lt=1.0,
        description="Two-sided level of the bootstrap interval; the rules use its lower bound, so 0.90 is "
        "a one-sided test at 5 % (the usual non-inferiority convention).",
    )
    seed: int = Field(0, description="Seed of the bootstrap resampling (the decision is reproducible).")
    behaviour: bool | None = Field(
        None,
        description="Run the behavioural tests (`registry.behaviour`: minimum functionality, invariance, "
        "directional) and reject a candidate that fails one. None = the `MLOPS_GATE_BEHAVIOUR` setting "
        "(on unless switched off). Switch off for a model whose task is not English tweet sentiment, "
        "where the NFL templates say nothing.",
    )
    behaviour_params: BehaviourParams = Field(
        default_factory=BehaviourParams, description="Pass-rate thresholds of the behavioural tests."
    )

    def runs_behaviour(self) -> bool:
        """Whether the behavioural tests are part of this gate (`behaviour`, else the setting)."""
        if self.behaviour is not None:
            return self.behaviour
        from nfl_mlops.settings import get_settings

        return get_settings().gate_behaviour


# --------------------------------------------------------------------------------------------
# Statistics (pure numpy)
# --------------------------------------------------------------------------------------------


def confusion_batch(
    y_true: np.ndarray, y_pred: np.ndarray, index: np.ndarray | None = None, k: int = len(LABELS)
) -> np.ndarray:
    """Confusion matrices (B x k x k, rows true) of the resamples `index` (B x n row indices).

    Without `index`, one matrix (1 x k x k) of all rows.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if index is None:
        index = np.arange(len(y_true))[None, :]
    b = index.shape[0]
    codes = np.arange(b)[:, None] * (k * k) + y_true[index] * k + y_pred[index]
    return np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k)


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 per class (..., k) from confusion matrices (..., k, k); 0 where undefined."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    true = cm.sum(axis=-1).astype(float)
    pred = cm.sum(axis=-2).astype(float)
    denom = true + pred
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def metric_from_confusion(cm: np.ndarray, metric: Metric = "macro_f1") -> np.ndarray:
    """`metric` of each confusion matrix (..., k, k).

    Macro-F1 averages over the classes present (true or predicted), as `modeling.metrics.evaluate`.
    """
    if metric == "accuracy":
        total = cm.sum(axis=(-2, -1))
        return np.diagonal(cm, axis1=-2, axis2=-1).sum(axis=-1) / np.maximum(total, 1)
    if metric == "macro_f1":
        f1 = per_class_f1(cm)
        present = (cm.sum(axis=-1) + cm.sum(axis=-2)) > 0
        return (f1 * present).sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)
    raise ValueError(f"unknown metric {metric!r}")


@dataclass(frozen=True)
class PairedInterval:
    """Candidate minus champion on the same rows, with a paired bootstrap interval."""

    n: int
    candidate: float
    champion: float
    diff: float
    low: float
    high: float
    confidence: float
    n_bootstrap: int

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def paired_bootstrap(
    y_true: np.ndarray,
    pred_candidate: np.ndarray,
    pred_champion: np.ndarray,
    metric: Metric = "macro_f1",
    n_bootstrap: int = 1000,
    confidence: float = 0.90,
    seed: int = 0,
) -> PairedInterval:
    """Percentile interval of metric(candidate) - metric(champion), resampling rows (both models together)."""
    y = np.asarray(y_true, dtype=np.int64)
    a = np.asarray(pred_candidate, dtype=np.int64)
    b = np.asarray(pred_champion, dtype=np.int64)
    if not len(y) == len(a) == len(b):
        raise ValueError(f"lengths differ: {len(y)} labels, {len(a)} and {len(b)} predictions")
    if len(y) == 0:
        raise ValueError("cannot compare on an empty set")
    cand = float(metric_from_confusion(confusion_batch(y, a), metric)[0])
    champ = float(metric_from_confusion(confusion_batch(y, b), metric)[0])
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_bootstrap)
    chunk = max(1, 2_000_000 // len(y))  # bound memory: at most ~2M indices at once
    for start in range(0, n_bootstrap, chunk):
        idx = rng.integers(0, len(y), size=(min(chunk, n_bootstrap - start), len(y)))
        diffs[start : start + len(idx)] = metric_from_confusion(
            confusion_batch(y, a, idx), metric
        ) - metric_from_confusion(confusion_batch(y, b, idx), metric)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return PairedInterval(
        n=len(y),
        candidate=cand,
        champion=champ,
        diff=cand - champ,
        low=float(low),
        high=float(high),
        confidence=confidence,
        n_bootstrap=n_bootstrap,
    )


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test on the rows exactly one of the two models gets right."""

    candidate_only: int  # candidate right, champion wrong
    champion_only: int
    p_value: float

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "p_value": round(self.p_value, 4)}


def mcnemar(y_true: np.ndarray, pred_candidate: np.ndarray, pred_champion: np.ndarray) -> McNemar:
    """Two-sided exact (binomial) McNemar p-value of H0: both models are right equally often."""
    y = np.asarray(y_true)
    right_a = np.asarray(pred_candidate) == y
    right_b = np.asarray(pred_champion) == y
    n10 = int((right_a & ~right_b).sum())
    n01 = int((~right_a & right_b).sum())
    n = n10 + n01
    if n == 0:
        return McNemar(n10, n01, 1.0)
    tail = sum(math.comb(n, i) for i in range(min(n10, n01) + 1))
    return McNemar(n10, n01, min(1.0, 2 * tail / 2**n))


# --------------------------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------------------------

Rule = Literal["non_inferiority", "improvement", "report", "golden_floor"]


@dataclass(frozen=True)
class EvalSet:
    """True labels and predicted classes (ids) of one evaluation set, scored by the gate itself."""

    name: str  # "test", "recent" or "golden"
    y_true: np.ndarray
    candidate: np.ndarray
    champion: np.ndarray | None = None  # None: no champion, or not compared on this set


@dataclass(frozen=True)
class GoldenFloor:
    """The fixed golden set's reference: the first version's score there."""

    reference_version: int
    reference_score: float


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    deltas: dict[str, float] = field(default_factory=dict)
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    behaviour: dict[str, Any] | None = None  # {test: pass rate, passed}; the full result is in the metrics

    def as_dict(self) -> dict:
        return asdict(self)


def _class_floor(name: str, y: np.ndarray, pred: np.ndarray, params: GateParams) -> tuple[dict, list[str]]:
    cm = confusion_batch(y, pred)[0]
    f1 = per_class_f1(cm)
    support = cm.sum(axis=1)
    out, failures = {}, []
    for i, label in enumerate(LABELS):
        checked = bool(support[i] >= params.min_class_support)
        ok = bool(f1[i] >= params.min_class_f1) if checked else None
        out[label] = {"f1": round(float(f1[i]), 4), "support": int(support[i]), "passed": ok}
        if ok is False:
            failures.append(
                f"{name}: class {label} F1 {f1[i]:.3f} < floor {params.min_class_f1:.2f} "
                f"(support {int(support[i])})"
            )
    return out, failures


def independent_gate(
    sets: Sequence[EvalSet],
    params: GateParams | None = None,
    require_recent_improvement: bool = False,
    golden: GoldenFloor | None = None,
    behaviour: BehaviourResult | None = None,
) -> GateDecision:
    """Judge a candidate from labels and both models' predictions (see the module docstring).

    Args:
        sets: "test" (required), "recent" (optional) with champion predictions where there is a
            champion; "golden" (optional, candidate only) when the model has a golden set.
        params: the gate's parameters.
        require_recent_improvement: the candidate must be an improvement: non-inferior on "recent" and
            better than the champion there, or on "test" (see the module docstring).
        golden: the first version's score on the golden set; None before there is one.
        behaviour: the candidate's behavioural test results (`registry.behaviour.behavioural_checks`): each
            failed test is a rejection, named in the reasons (unless `params.behaviour` is False). None:
            not run (switched off, or the caller judges predictions only), so nothing is said about them.
    """
    params = params or GateParams()
    by_name = {s.name: s for s in sets if len(s.y_true)}
    if "test" in by_name:  # judged first: the improvement rule on "recent" may rest on it
        by_name = {"test": by_name["test"], **{k: v for k, v in by_name.items() if k != "test"}}
    reasons: list[str] = []
    passed = True
    out_sets: dict[str, dict[str, Any]] = {}
    deltas: dict[str, float] = {}
    lows: dict[str, float] = {}  # lower bound of each compared set's interval ("test" comes first)
    m = params.metric

    if "test" not in by_name:
        return GateDecision(False, ["test: no test rows to judge on"], params=params.model_dump())

    for name, s in by_name.items():
        y, cand = np.asarray(s.y_true), np.asarray(s.candidate)
        entry: dict[str, Any] = {"n": len(y)}
        cand_score = float(metric_from_confusion(confusion_batch(y, cand), m)[0])
        entry["candidate"] = round(cand_score, 4)
        floors, failures = _class_floor(name, y, cand, params)
        entry["class_f1"] = floors
        if failures:
            passed = False
            reasons.extend(failures)

        if name == "golden":
            entry["rule"] = "golden_floor"
            if golden is None:
                entry["passed"] = None
                reasons.append(
                    f"golden: candidate {m} {cand_score:.4f} (n={len(y)}); no reference score to hold it to"
                )
            else:
                floor = golden.reference_score - params.margin
                ok = cand_score >= floor
                entry.update(
                    reference_version=golden.reference_version,
                    reference_score=round(golden.reference_score, 4),
                    floor=round(floor, 4),
                    passed=ok,
                )
                passed &= ok
                reasons.append(
                    f"golden: candidate {m} {cand_score:.4f} {'>=' if ok else '<'} floor {floor:.4f} "
                    f"(v{golden.reference_version} scored {golden.reference_score:.4f}, margin {params.margin:.2f}, "
                    f"n={len(y)})"
                )
            out_sets[name] = entry
            continue

        rule: Rule = (
            "non_inferiority" if name == "test" else "improvement" if require_recent_improvement else "report"
        )
        entry["rule"] = rule
        if s.champion is None:
            entry["champion"] = None
            entry["passed"] = None
            reasons.append(
                f"{name}: no champion to compare with; candidate {m} {cand_score:.4f} (n={len(y)})"
            )
            out_sets[name] = entry
            continue
        ci = paired_bootstrap(y, cand, s.champion, m, params.n_bootstrap, params.confidence, params.seed)
        entry.update(
            champion=round(ci.champion, 4),
            interval=ci.as_dict(),
            mcnemar=mcnemar(y, cand, s.champion).as_dict(),
        )
        deltas[name] = ci.diff
        bound = {"non_inferiority": -params.margin, "improvement": 0.0, "report": None}[rule]
        lows[name] = ci.low
        text = (
            f"{name}: candidate {m} {ci.candidate:.4f} vs champion {ci.champion:.4f}, difference "
            f"{ci.diff:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}] ({params.confidence:.0%} paired bootstrap, n={ci.n})"
        )
        test_low = lows.get("test")
        if (
            rule == "improvement"
            and ci.low <= 0.0
            and ci.low > -params.margin
            and test_low is not None
            and test_low > 0
        ):
            # not shown better on the drifted traffic, but no worse there and shown better in general
            entry["passed"] = True
            reasons.append(
                text + f"; non-inferior here (lower bound > {-params.margin:+.4f}) and better on test "
                f"(lower bound {test_low:+.4f} > +0.0000): an improvement"
            )
        elif bound is None:
            entry["passed"] = None
            reasons.append(text + "; reported, not a pass condition")
        else:
            ok = ci.low > bound
            entry["passed"] = ok
            passed &= ok
            what = "non-inferior" if rule == "non_inferiority" else "better"
            reasons.append(
                text
                + (
                    f"; {what} (lower bound > {bound:+.4f})"
                    if ok
                    else f"; not shown {what}: lower bound {ci.low:+.4f} <= {bound:+.4f}"
                )
            )
        out_sets[name] = entry

    if golden is not None and "golden" not in by_name:
        passed = False
        reasons.append(
            "golden: no golden row left to check the floor on (all were in the candidate's training "
            "data, or none were scored)"
        )
        out_sets["golden"] = {"n": 0, "rule": "golden_floor", "passed": False}
    if require_recent_improvement and "recent" not in by_name:
        passed = False
        reasons.append("recent: no recent labelled window, so no evidence that the candidate is better there")
    elif require_recent_improvement and by_name["recent"].champion is None:
        reasons.append("recent: improvement required but there is no champion to improve on")
    summary = None
    if behaviour is not None and params.behaviour is not False:
        summary = {
            t.name: {"pass_rate": t.pass_rate, "threshold": t.threshold, "passed": t.passed}
            for t in behaviour.tests
        }
        if behaviour.passed:
            reasons.append(f"behaviour: all {len(behaviour.tests)} behavioural tests met their pass rates")
        else:
            passed = False
            reasons.extend(behaviour.reasons())
    return GateDecision(bool(passed), reasons, deltas, out_sets, params.model_dump(), summary)


def reported_scores(metrics: Mapping[str, Any], metric: str = "macro_f1") -> dict[str, float | None]:
    """What a candidate says about itself, per set (kept for comparison, never decides)."""
    return {name: (m.get(metric) if isinstance(m, Mapping) else None) for name, m in metrics.items()}
