"""Registration flow: an independent gate (both models scored here) -> atomic registry version -> alias."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as this_run

from nfl_mlops.lineage import current_flow_run_id
from nfl_mlops.modeling.candidate import Candidate, RegistrationResult
from nfl_mlops.naming import run_name
from nfl_mlops.registry.gate import GateParams, independent_gate, reported_scores
from nfl_mlops.reports import registration_markdown
from tasks.alerts import publish_markdown, publish_model_status
from tasks.registry import (
    behavioural_tests,
    export_runtimes,
    fix_golden_set,
    mirror_to_hub,
    register_version,
    score_for_gate,
    set_alias,
)


@flow(
    name="registration", log_prints=True, flow_run_name=lambda: run_name("registration", this_run.parameters)
)
def registration_flow(
    candidate: Candidate,
    gate: GateParams = GateParams(),
    require_recent_improvement: bool = False,
    export_onnx: bool = True,
) -> RegistrationResult:
    """Register the candidate: `challenger` when it passes the gate, else `rejected`.

    Args:
        candidate: what training handed over; its model and dataset folders are read, its own
            metrics are only reported beside the measured ones.
        gate: how the gate judges (margin, per-class floor, bootstrap, behavioural tests and their
            pass rates; `behaviour=False` skips them).
        require_recent_improvement: the candidate must also be an improvement on the recent labelled
            window (retraining for drift or degradation; see `independent_gate`).
        export_onnx: a passing candidate also gets ONNX fp32 and int8 variants, each admitted only when
            it matches torch on the test split (`MLOPS_INFERENCE_BACKEND` picks what serves).
    """
    # Score (both models, from their folders, on the same rows)
    champion, evidence = score_for_gate(candidate, gate.metric)
    behaviour = behavioural_tests(candidate, gate.behaviour_params) if gate.runs_behaviour() else None

    # Gate
    decision = independent_gate(evidence.sets, gate, require_recent_improvement, evidence.golden, behaviour)
    gate_record = {
        **decision.as_dict(),
        "require_recent_improvement": require_recent_improvement,
        "golden": {**evidence.golden_info, **decision.sets.get("golden", {})} or None,
        "reported_by_candidate": reported_scores(candidate.metrics, gate.metric),
    }

    # Register
    status = "ready" if decision.passed else "rejected"
    measured = {k: v for k, v in evidence.candidate_metrics.items() if k != "golden"}
    if behaviour is not None:  # kept with the version's metrics; its model card lists pass rates and failures
        measured["behaviour"] = behaviour.as_dict()
    if decision.passed and export_onnx:  # a rejected version never serves: nothing to export
        measured["runtimes"] = export_runtimes(candidate)
    info = register_version(
        candidate,
        status,
        None if decision.passed else "; ".join(decision.reasons),
        {
            "registration_flow_run_id": current_flow_run_id(),
            "gate": gate_record,
            "champion_at_registration": champion.version if champion else None,
            "champion_metrics_at_registration": evidence.champion_metrics,
        },
        measured,
    )
    if decision.passed:
        set_alias(info.model_name, "challenger", info.version)
        # Golden set: fixed once, by the first version that passes
        if not evidence.golden_info:
            fix_golden_set(candidate, info.version, gate.metric, float(measured["test"][gate.metric]))

    # Mirror (Hub; queued when offline, never fails the registration)
    if decision.passed:
        mirror_to_hub(info)
    result = RegistrationResult(
        model_name=info.model_name,
        version=info.version,
        status=status,
        passed=decision.passed,
        reasons=decision.reasons,
        champion_version=champion.version if champion else None,
        comparisons={
            "candidate": measured,
            "champion": evidence.champion_metrics,
            "reported_by_candidate": dict(candidate.metrics),
            "gate": gate_record,
        },
    )
    publish_markdown(
        "registration-report",
        registration_markdown(result, candidate, evidence.champion_metrics),
        f"{info.model_name} v{info.version}",
    )
    get_run_logger().info("%s v%d %s: %s", info.model_name, info.version, status, decision.reasons)
    publish_model_status(info.model_name)
    return result
