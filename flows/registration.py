"""Registration flow: quality gate against the champion -> atomic registry version -> alias."""

from __future__ import annotations

from prefect import flow, get_run_logger

from nfl_mlops.lineage import current_flow_run_id
from nfl_mlops.modeling.candidate import Candidate, RegistrationResult
from nfl_mlops.registry.gate import Comparison, quality_gate
from nfl_mlops.reports import registration_markdown
from tasks.alerts import publish_markdown
from tasks.registry import mirror_to_hub, register_version, score_champion, set_alias


@flow(name="registration", log_prints=True)
def registration_flow(
    candidate: Candidate,
    metric: str = "macro_f1",
    tolerance: float = 0.01,
    min_score: float | None = None,
) -> RegistrationResult:
    """Register the candidate: `challenger` when it is no worse than the champion, else `rejected`."""
    # Gate
    champion, champion_metrics = score_champion(candidate)
    comparisons = [
        Comparison(name, candidate.metrics[name], champion_metrics.get(name), n=candidate.metrics[name]["n"])
        for name in ("test", "recent") if name in candidate.metrics
    ]
    decision = quality_gate(comparisons, metric=metric, tolerance=tolerance, min_score=min_score)

    # Register
    status = "ready" if decision.passed else "rejected"
    info = register_version(
        candidate, status, None if decision.passed else "; ".join(decision.reasons),
        {"registration_flow_run_id": current_flow_run_id(),
         "gate": decision.as_dict(),
         "champion_at_registration": champion.version if champion else None,
         "champion_metrics_at_registration": champion_metrics},
    )
    if decision.passed:
        set_alias(info.model_name, "challenger", info.version)

    # Mirror (Hub; queued when offline, never fails the registration)
    if decision.passed:
        mirror_to_hub(info)
    result = RegistrationResult(
        model_name=info.model_name, version=info.version, status=status, passed=decision.passed,
        reasons=decision.reasons, champion_version=champion.version if champion else None,
        comparisons={"candidate": {k: v for k, v in candidate.metrics.items()}, "champion": champion_metrics},
    )
    publish_markdown("registration-report", registration_markdown(result, candidate, champion_metrics),
                     f"{info.model_name} v{info.version}")
    get_run_logger().info("%s v%d %s: %s", info.model_name, info.version, status, decision.reasons)
    return result
