"""Registry tasks: score the champion on the candidate's sets, register a version, move aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nfl_mlops.data.datasets import TrainingData
from nfl_mlops.modeling.candidate import Candidate
from nfl_mlops.modeling.metrics import evaluate
from nfl_mlops.registry.card import write_model_card
from nfl_mlops.registry.hub import HubMirror
from nfl_mlops.registry.store import Registry, VersionInfo


@task(name="score-champion", cache_policy=NO_CACHE)
def score_champion(candidate: Candidate) -> tuple[VersionInfo | None, dict[str, Any]]:
    """The champion's metrics on the candidate's test and recent sets (the same rows)."""
    from nfl_mlops.modeling.predictor import SentimentModel

    champion = Registry.from_settings().get_alias(candidate.model_name, "champion")
    if champion is None:
        return None, {}
    data = TrainingData.load(Path(candidate.dataset_dir))
    model = SentimentModel.load(champion.path)
    out = {}
    for name in ("test", "recent"):
        frame = getattr(data, name)
        if len(frame):
            out[name] = evaluate(frame["label"].tolist(), model.predict_proba(frame["text"].tolist())).as_dict()
    get_run_logger().info("champion v%d: %s", champion.version, {k: round(v["macro_f1"], 4) for k, v in out.items()})
    return champion, out


@task(name="register-version", cache_policy=NO_CACHE)
def register_version(candidate: Candidate, status: str, reason: str | None, extra_lineage: dict[str, Any]) -> VersionInfo:
    """Atomically add the candidate to the registry (with its model card)."""
    info = Registry.from_settings().register(
        candidate.model_name,
        candidate.model_dir,
        metrics={**candidate.metrics, "baseline": candidate.baseline_metrics},
        params=candidate.params,
        lineage={**candidate.lineage, **extra_lineage},
        status=status,
        reason=reason,
        description="Three-class sentiment of NFL tweets, fine-tuned from "
                    f"{candidate.lineage.get('base_model', 'a base encoder')}.",
        write_card=write_model_card,
    )
    get_run_logger().info("registered %s v%d (%s) at %s", info.model_name, info.version, status, info.path)
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
        logger.info("mirrored %s v%d to %s@%s (%s)", info.model_name, info.version, push.repo_id, push.tag,
                    push.commit_sha)
    elif push is not None:
        logger.warning("Hub push of %s v%d is queued (%s): %s; run `nfl-mlops registry sync` later",
                       info.model_name, info.version, push.status, push.last_error)
    return push.as_dict() if push is not None else None
