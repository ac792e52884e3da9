"""The promotion quality gate: may a candidate replace the champion? (pure, unit-tested)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Comparison:
    """Candidate and champion scored on the same evaluation set."""

    name: str  # e.g. "test" (standard test split) or "recent" (recent labelled window)
    candidate: Mapping[str, float]
    champion: Mapping[str, float] | None  # None: there is no champion yet
    n: int = 0


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    deltas: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def quality_gate(
    comparisons: Sequence[Comparison],
    metric: str = "macro_f1",
    tolerance: float = 0.01,
    min_score: float | None = None,
) -> GateDecision:
    """Pass when, on every evaluation set, the candidate is at most `tolerance` worse than the champion.

    The first version (no champion anywhere) passes unless it is below `min_score`. A comparison
    whose candidate lacks `metric` fails: a gate never passes on missing evidence.
    """
    if not comparisons:
        return GateDecision(False, ["no evaluation set to compare on"])
    reasons: list[str] = []
    deltas: dict[str, float] = {}
    passed = True
    for comp in comparisons:
        cand = comp.candidate.get(metric)
        if cand is None or math.isnan(cand):  # NaN is no evidence either
            passed = False
            reasons.append(f"{comp.name}: candidate has no {metric}" + ("" if cand is None else " (NaN)"))
            continue
        if min_score is not None and cand < min_score:
            passed = False
            reasons.append(f"{comp.name}: candidate {metric} {cand:.4f} < minimum {min_score:.4f}")
        if comp.champion is None or comp.champion.get(metric) is None:
            reasons.append(f"{comp.name}: no champion to compare with; candidate {metric} {cand:.4f}")
            continue
        champ = comp.champion[metric]
        delta = cand - champ
        deltas[comp.name] = delta
        if delta < -tolerance:
            passed = False
            reasons.append(
                f"{comp.name}: candidate {metric} {cand:.4f} is {-delta:.4f} below champion {champ:.4f} "
                f"(tolerance {tolerance:.4f})"
            )
        else:
            reasons.append(f"{comp.name}: candidate {metric} {cand:.4f} vs champion {champ:.4f} ({delta:+.4f})")
    return GateDecision(passed, reasons, deltas)
