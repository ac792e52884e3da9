"""Rollout strategies: their typed settings, their starting traffic, and their step decisions (pure).

- blue-green: all traffic at once (no steps; `state.activate`).
- canary: traffic steps (default 5 -> 25 -> 50 -> 100 %); each step is held until the gates pass on
  at least `min_requests` candidate requests, rolls back on a failed gate, and rolls back when the
  step saw too little traffic to judge within `max_wait_s`. Passing the step before 100 % promotes.
- shadow: the candidate gets a copy of every request (logged, never returned); after `min_requests`
  paired predictions the gates (errors, latency, agreement with stable) decide: promote or roll back.
- A/B test: arms `a` and `b` split by `traffic_split` (percent on B), sticky per request key; the
  significance test in `abtest.py` decides, and when `duration_days` is over the winner takes all
  traffic (B only when it is significantly better; otherwise A stays).

A decision is pure: (settings, step state, now, prediction-log rows) -> `Decision`. The controller
(`controller.py`) reads the rows, applies the decision to the state DB and says which event to emit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from nfl_mlops.rollout.gates import GateParams, GateResult, canary_gates, failures, overall, shadow_gates

DEFAULT_CHECK_SECONDS = 5.0
"""How often the gates of a driven rollout are evaluated, unless its settings say otherwise."""


class Strategy(StrEnum):
    """How a version goes out; flows, routes, SDK and CLI validate against this one list before any work."""

    BLUE_GREEN = "blue_green"
    CANARY = "canary"
    SHADOW = "shadow"
    AB_TEST = "ab_test"


DRIVEN = (Strategy.CANARY, Strategy.SHADOW, Strategy.AB_TEST)
"""Strategies whose rollout is advanced step by step after it starts."""

Action = Literal["hold", "confirm", "advance", "promote", "rollback", "finish"]
"""`confirm`: every live API replica serves the traffic of the current step (see `replicas.confirmation`)."""


class CanaryParams(BaseModel):
    """Canary settings: traffic steps, each held until its gates pass."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    steps: list[float] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0],
        min_length=2,
        max_length=20,
        description="Percent of traffic on the candidate at each step, increasing, ending at 100 (promotion).",
    )
    min_requests: int = Field(
        50,
        ge=1,
        le=1_000_000,
        description="Candidate requests (and as many stable ones) a step needs before its gates are judged.",
    )
    max_wait_s: float = Field(
        1800.0,
        gt=0,
        le=7 * 86400,
        description="Longest a step is held; a step that saw too little traffic to judge by then is rolled back.",
    )
    check_seconds: float = Field(
        DEFAULT_CHECK_SECONDS, gt=0, le=3600, description="How often the gates are evaluated."
    )
    gates: GateParams = Field(default_factory=GateParams, description="Gate thresholds.")

    @field_validator("steps")
    @classmethod
    def _increasing_to_100(cls, v: list[float]) -> list[float]:
        if any(not (0 < s <= 100) for s in v):
            raise ValueError("each step is a percentage in (0, 100]")
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("steps must increase")
        if v[-1] != 100:
            raise ValueError("the last step must be 100 (promotion)")
        return v


class ShadowParams(BaseModel):
    """Shadow settings: how much mirrored traffic to judge, and what to do when it passes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_requests: int = Field(
        200, ge=1, le=1_000_000, description="Paired (shadow, stable) predictions needed before the verdict."
    )
    max_wait_s: float = Field(
        3600.0,
        gt=0,
        le=7 * 86400,
        description="Longest the shadow runs; too little traffic by then rolls it back.",
    )
    promote_on_pass: bool = Field(
        True,
        description="Move all traffic to the candidate when the shadow passes "
        "(otherwise the shadow just ends with its verdict).",
    )
    check_seconds: float = Field(
        DEFAULT_CHECK_SECONDS, gt=0, le=3600, description="How often the gates are evaluated."
    )
    gates: GateParams = Field(default_factory=GateParams, description="Gate thresholds.")


class ABTestParams(BaseModel):
    """A/B test settings (`traffic_split` and `duration_days` as in `create_ab_test`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    traffic_split: float = Field(50.0, gt=0, lt=100, description="Percent of traffic on B (the rest on A).")
    duration_days: float = Field(
        7.0, gt=0, le=365, description="How long the test runs; at the end the winner takes all traffic."
    )
    min_samples: int = Field(
        100,
        ge=1,
        le=10_000_000,
        description="Feedback-labelled predictions each arm needs before a winner is declared.",
    )
    alpha: float = Field(
        0.05, gt=0, lt=0.5, description="Significance level of the two-sided two-proportion z-test."
    )
    promote_winner: bool = Field(
        True, description="At the end, move all traffic to B when B won (else A stays)."
    )
    check_seconds: float = Field(
        60.0, gt=0, le=86400, description="How often the end of the test is checked."
    )


def retraining_canary() -> CanaryParams:
    """The canary a retrained challenger goes out by (the retraining flow's default for `strategy=canary`).

    Shorter steps than a hand-made canary (10 -> 50 -> 100 %, 30 requests per arm per step) and no
    predicted-label-shift gate: a challenger retrained because the traffic drifted is expected to label
    that traffic differently from the stale champion, and it has already beaten the champion on the
    standard test set and the recent labelled window at registration. The canary guards what labelled
    data cannot show: errors, latency, and the loading of the new version in every replica.
    """
    return CanaryParams(
        steps=[10.0, 50.0, 100.0],
        min_requests=30,
        check_seconds=2.0,
        max_wait_s=1800.0,
        gates=GateParams(max_label_tvd=1.0, latency_slack_ms=100.0),
    )


def check_interval(strategy: str, raw: dict[str, Any] | None) -> float:
    """Seconds between two gate checks of a rollout with these settings."""
    params = params_for(strategy, raw)
    return float(getattr(params, "check_seconds", DEFAULT_CHECK_SECONDS))


StrategyParams = CanaryParams | ShadowParams | ABTestParams
"""The typed settings of a driven strategy."""


def params_for(strategy: str, raw: dict[str, Any] | None) -> StrategyParams | None:
    """The typed settings of a strategy from their JSON form (None for blue-green)."""
    kinds: dict[str, type[StrategyParams]] = {
        "canary": CanaryParams,
        "shadow": ShadowParams,
        "ab_test": ABTestParams,
    }
    kind = kinds.get(strategy)
    return kind.model_validate(raw or {}) if kind else None


def initial_arms(
    strategy: str, stable_version: int | None, candidate_version: int, params: StrategyParams | None = None
) -> dict[str, Any]:
    """The traffic a rollout starts with."""
    if strategy in ("blue_green", "rollback") or stable_version is None:
        return {"stable": {"version": candidate_version, "weight": 100.0}}
    if strategy == "canary":
        first = float(params.steps[0]) if isinstance(params, CanaryParams) else CanaryParams().steps[0]
        return {
            "stable": {"version": stable_version, "weight": 100.0 - first},
            "candidate": {"version": candidate_version, "weight": first},
        }
    if strategy == "shadow":
        return {
            "stable": {"version": stable_version, "weight": 100.0},
            "shadow": {"version": candidate_version, "weight": 0.0, "shadow": True},
        }
    if strategy == "ab_test":
        split = (
            float(params.traffic_split) if isinstance(params, ABTestParams) else ABTestParams().traffic_split
        )
        return {
            "a": {"version": stable_version, "weight": 100.0 - split},
            "b": {"version": candidate_version, "weight": split},
        }
    raise ValueError(f"unknown strategy {strategy!r}")


@dataclass(frozen=True)
class Decision:
    """What to do with a driven rollout now, and why."""

    action: Action
    reason: str
    arms: dict[str, Any] | None = None
    gates: list[GateResult] = field(default_factory=list)
    step_index: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. an A/B test's winner and verdict

    @property
    def terminal(self) -> bool:
        return self.action in ("promote", "rollback", "finish")

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "arms": self.arms,
            "step_index": self.step_index,
            "gates": [g.as_dict() for g in self.gates],
            **self.extra,
        }


def _elapsed(now: datetime, since: datetime) -> float:
    return (now - since).total_seconds()


def canary_decision(
    params: CanaryParams,
    step_index: int,
    step_started_at: datetime,
    now: datetime,
    rows: pd.DataFrame,
    stable_version: int,
    candidate_version: int,
) -> Decision:
    """Hold, advance, promote or roll back a canary at step `step_index`, from the rows logged since
    the step started."""
    weight = params.steps[step_index]
    gates = canary_gates(rows, params.gates, params.min_requests)
    verdict = overall(gates)
    where = f"step {step_index + 1}/{len(params.steps)} ({weight:g} %)"
    if verdict == "fail":
        return Decision(
            "rollback", f"canary {where}: gate failed: {failures(gates)}", gates=gates, step_index=step_index
        )
    if verdict == "pass":
        nxt = step_index + 1
        if nxt >= len(params.steps) - 1 or params.steps[nxt] >= 100:
            return Decision(
                "promote",
                f"canary {where}: all gates passed; promoting v{candidate_version}",
                arms={"stable": {"version": candidate_version, "weight": 100.0}},
                gates=gates,
                step_index=len(params.steps) - 1,
            )
        w = params.steps[nxt]
        return Decision(
            "advance",
            f"canary {where}: all gates passed; moving to {w:g} %",
            arms={
                "stable": {"version": stable_version, "weight": 100.0 - w},
                "candidate": {"version": candidate_version, "weight": w},
            },
            gates=gates,
            step_index=nxt,
        )
    waited = _elapsed(now, step_started_at)
    if waited >= params.max_wait_s:
        pending = "; ".join(f"{g.name}: {g.detail}" for g in gates if g.passed is None)
        return Decision(
            "rollback",
            f"canary {where}: held {waited:.0f} s (max {params.max_wait_s:g} s) without "
            f"enough traffic to judge: {pending}",
            gates=gates,
            step_index=step_index,
        )
    return Decision("hold", f"canary {where}: waiting for traffic", gates=gates, step_index=step_index)


def shadow_decision(
    params: ShadowParams,
    started_at: datetime,
    now: datetime,
    rows: pd.DataFrame,
    stable_version: int,
    candidate_version: int,
) -> Decision:
    """Promote, end or roll back a shadow rollout from the rows logged since it started."""
    gates = shadow_gates(rows, params.gates, params.min_requests)
    verdict = overall(gates)
    if verdict == "fail":
        return Decision("rollback", f"shadow: gate failed: {failures(gates)}", gates=gates)
    if verdict == "pass":
        if params.promote_on_pass:
            return Decision(
                "promote",
                f"shadow: all gates passed; promoting v{candidate_version}",
                arms={"stable": {"version": candidate_version, "weight": 100.0}},
                gates=gates,
            )
        return Decision(
            "finish",
            f"shadow: all gates passed; v{candidate_version} not promoted "
            f"(promote_on_pass is false), v{stable_version} keeps serving",
            gates=gates,
        )
    waited = _elapsed(now, started_at)
    if waited >= params.max_wait_s:
        pending = "; ".join(f"{g.name}: {g.detail}" for g in gates if g.passed is None)
        return Decision(
            "rollback",
            f"shadow: ran {waited:.0f} s (max {params.max_wait_s:g} s) without enough "
            f"traffic to judge: {pending}",
            gates=gates,
        )
    return Decision("hold", "shadow: waiting for traffic", gates=gates)
