"""Registry tasks: score both models for the gate, register a version, fix the golden set, move aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.data.datasets import TrainingData
from nfl_mlops.modeling.candidate import Candidate
from nfl_mlops.registry.behaviour import BehaviourParams, BehaviourResult, check_model_folder
from nfl_mlops.registry.card import write_model_card
from nfl_mlops.registry.evaluation import GateEvidence, gather_evidence, load_golden, save_golden
from nfl_mlops.registry.gate import Metric
from nfl_mlops.registry.hub import HubMirror
from nfl_mlops.registry.store import Registry, VersionInfo
from nfl_mlops.settings import get_settings


@task(name="score-for-gate", cache_policy=NO_CACHE)
def score_for_gate(candidate: Candidate, metric: Metric) -> tuple[VersionInfo | None, GateEvidence]:
    """Score the candidate and the champion from their folders on the same rows (test, recent, golden).

    The candidate's own metrics are not read: the gate decides on what is measured here.
    """
    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.registry.artifacts import resolve_version

    registry = Registry.from_settings()
    champion = registry.get_alias(candidate.model_name, "champion")
    data = TrainingData.load_verified(Path(candidate.dataset_dir), get_settings().datasets_path)
    golden = load_golden(get_settings().mlops_home, candidate.model_name)

    def load_reference():
        try:
            return SentimentModel.load(
                resolve_version(registry.get(candidate.model_name, golden.reference_version))
            )
        except Exception as exc:  # noqa: BLE001 - a missing reference folder falls back to the recorded score
            get_run_logger().warning("golden reference v%d not loadable (%s)", golden.reference_version, exc)
            return None

    evidence = gather_evidence(
        SentimentModel.load(candidate.model_dir),
        SentimentModel.load(resolve_version(champion)) if champion is not None else None,
        data,
        golden,
        metric,
        load_reference if golden is not None else None,
    )
    get_run_logger().info(
        "measured %s: candidate %s, champion v%s %s",
        metric,
        {k: round(v[metric], 4) for k, v in evidence.candidate_metrics.items()},
        champion.version if champion else None,
        {k: round(v[metric], 4) for k, v in evidence.champion_metrics.items()},
    )
    return champion, evidence


@task(name="behavioural-tests", cache_policy=NO_CACHE)
def behavioural_tests(candidate: Candidate, params: BehaviourParams) -> BehaviourResult:
    """The behavioural tests on the candidate's folder, loaded as the gate scores it (a checkpoint: a model load)."""
    result = check_model_folder(candidate.model_dir, params)
    get_run_logger().info(
        "behavioural tests of %s: %s", candidate.model_name, {t.name: t.pass_rate for t in result.tests}
    )
    return result


@task(name="fix-golden-set", cache_policy=NO_CACHE)
def fix_golden_set(candidate: Candidate, version: int, metric: Metric, test_score: float) -> dict[str, Any]:
    """Keep this version's test split as the model's golden set, once (the first version that passes)."""
    data = TrainingData.load_verified(Path(candidate.dataset_dir), get_settings().datasets_path)
    golden = save_golden(
        get_settings().mlops_home,
        candidate.model_name,
        data.test,
        version,
        metric,
        test_score,
        dataset_version=data.version,
    )
    get_run_logger().info(
        "golden set of %s: v%d's %d test rows, %s %.4f",
        candidate.model_name,
        golden.reference_version,
        len(golden.rows),
        golden.metric,
        golden.reference_score,
    )
    return golden.meta


@task(name="export-runtimes", cache_policy=NO_CACHE)
def export_runtimes(candidate: Candidate) -> dict[str, Any]:
    """ONNX fp32 and dynamic int8 beside the candidate's weights, each admitted only when it matches torch on
    the candidate's test split (`nfl_mlops.modeling.runtimes`). Never fails: torch serving remains."""
    from nfl_mlops.modeling.runtimes import export_runtimes as export

    data = TrainingData.load_verified(Path(candidate.dataset_dir), get_settings().datasets_path)
    record = export(candidate.model_dir, data.test["text"].tolist(), data.test["label"].tolist())
    get_run_logger().info(
        "runtimes of %s: %s",
        candidate.model_name,
        {k: v.get("admitted") for k, v in record.items() if isinstance(v, dict) and "admitted" in v},
    )
    return record


@task(name="register-version", cache_policy=NO_CACHE)
def register_version(
    candidate: Candidate,
    status: str,
    reason: str | None,
    extra_lineage: dict[str, Any],
    measured_metrics: dict[str, Any] | None = None,
) -> VersionInfo:
    """Atomically add the candidate to the registry (with its model card).

    `measured_metrics` (what registration measured itself, per set) replace the candidate's own.
    """
    info = Registry.from_settings().register(
        candidate.model_name,
        candidate.model_dir,
        metrics={**candidate.metrics, **(measured_metrics or {}), "baseline": candidate.baseline_metrics},
        params=candidate.params,
        lineage={**candidate.lineage, **extra_lineage},
        status=status,
        reason=reason,
        description="Three-class sentiment of NFL tweets, fine-tuned from "
        f"{candidate.lineage.get('base_model', 'a base encoder')}.",
        write_card=write_model_card,
    )
    get_run_logger().info(
        "registered %s v%d (%s) at %s (%d files)",
        info.model_name,
        info.version,
        status,
        info.artifact_uri,
        len(info.files),
    )
    return info


@task(name="set-alias", cache_policy=NO_CACHE)
def set_alias(model_name: str, alias: str, version: int) -> None:
    Registry.from_settings().set_alias(model_name, alias, version)


@task(name="promote", cache_policy=NO_CACHE)
def promote(model_name: str, version: int) -> None:
    """Move `champion` to the version now serving all traffic."""
    Registry.from_settings().promote(model_name, version)


@task(name="mirror-to-hub", cache_policy=NO_CACHE)
def mirror_to_hub(info: VersionInfo) -> dict[str, Any] | None:
    """Upload a registered version to the Hugging Face Hub mirror, tagged v{N}.

    Network failures are retried with backoff inside the mirror; a push that still fails waits in
    the queue for `nfl-mlops registry sync` and never fails the registration. None when no mirror
    is configured (HUGGINGFACE_TOKEN and HUGGINGFACE_REPO).
    """
    mirror = HubMirror()
    if not mirror.enabled:
        return None
    push = mirror.mirror(info.model_name, info.version, info.path)
    logger = get_run_logger()
    if push is not None and push.status == "pushed":
        logger.info(
            "mirrored %s v%d to %s@%s (%s)",
            info.model_name,
            info.version,
            push.repo_id,
            push.tag,
            push.commit_sha,
        )
    elif push is not None:
        logger.warning(
            "Hub push of %s v%d is queued (%s): %s; run `nfl-mlops registry sync` later",
            info.model_name,
            info.version,
            push.status,
            push.last_error,
        )
    return push.as_dict() if push is not None else None
