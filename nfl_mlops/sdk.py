"""The Python facade of the spec: one object over the registry, rollouts, tracking, monitoring and retraining.

    from nfl_mlops.sdk import mlops_service, DeploymentStrategy, ModelType, ModelPerformanceMetrics

    await mlops_service.initialize()
    meta = await mlops_service.register_model("nfl_sentiment", "./my-model", ModelType.SENTIMENT_ANALYSIS,
                                              metrics={"accuracy": 0.87, "f1_score": 0.85})
    await mlops_service.deploy_model(meta.model_id, meta.version, strategy=DeploymentStrategy.BLUE_GREEN)

Every method delegates to the code the flows and the `/mlops` API use (`Registry`, `rollout.controller`,
`ExperimentTracker`, `nfl_mlops.retraining`); blocking work runs in a thread, so the methods can be awaited
from a running event loop. The facade keeps no state of its own beyond the one open experiment run:
whatever it changes is in the state DB, where the API replicas and the flows see it.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nfl_mlops.registry.store import VersionInfo as ModelMetadata  # a registered version; model_id = its name
from nfl_mlops.rollout.strategies import Strategy


class ModelType(StrEnum):
    SENTIMENT_ANALYSIS = "sentiment_analysis"


DeploymentStrategy = Strategy
"""The spec's name for the rollout strategies (`nfl_mlops.rollout.strategies.Strategy`)."""


class ModelPerformanceMetrics(BaseModel):
    """Performance of a served version over some window, as measured by the caller."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model_id: str
    model_version: str | int
    timestamp: datetime
    accuracy: float | None = Field(None, ge=0, le=1)
    f1_score: float | None = Field(None, ge=0, le=1, description="Macro-F1.")
    precision: float | None = Field(None, ge=0, le=1)
    recall: float | None = Field(None, ge=0, le=1)
    error_rate: float | None = Field(None, ge=0, le=1, description="Share of requests that failed.")
    avg_prediction_time_ms: float | None = Field(None, ge=0)
    prediction_count: int | None = Field(None, ge=0)


@dataclass
class PerformanceVerdict:
    """What `monitor_model_performance` concluded; `event_id` is set when the event reached Prefect."""

    model_id: str
    model_version: int
    degraded: bool
    reasons: list[str]
    reference: dict[str, float | None]
    reported: dict[str, Any]
    monitoring_run_id: str
    event_emitted: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ExperimentNotRunning(RuntimeError):
    """`log_metrics` or `finish_experiment` without a `start_experiment` before it."""


def _reference_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Accuracy and macro-F1 a version was registered with (flows store them under "test"; the SDK flat)."""
    test = metrics.get("test")
    source: dict[str, Any] = test if isinstance(test, dict) else metrics
    f1 = source.get("macro_f1", source.get("f1_score"))
    acc = source.get("accuracy")
    return {
        "accuracy": float(acc) if isinstance(acc, int | float) else None,
        "f1_score": float(f1) if isinstance(f1, int | float) else None,
    }


class RetrainingService:
    """Retraining: what would start one now, and the jobs so far."""

    def __init__(self, owner: MLOpsService) -> None:
        self._owner = owner

    async def check_retraining_triggers(self, model_name: str) -> dict[str, Any]:
        """The latest monitoring verdict, the cooldown and daily budget, schedules and event triggers
        (the same answer as `GET /mlops/retraining/triggers/{model_name}`).

        Raises:
            LookupError: nothing is known about `model_name`.
        """
        from nfl_mlops import retraining as rt

        cfg = self._owner.settings
        known = bool(await asyncio.to_thread(self._owner.registry.list_versions, model_name))
        out = await asyncio.to_thread(rt.trigger_check, cfg.db_url, model_name, known)
        return out.model_dump(mode="json")

    async def list_jobs(self, model_name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        from nfl_mlops import retraining as rt

        jobs = await asyncio.to_thread(rt.list_jobs, self._owner.settings.db_url, model_name, limit)
        return [j.model_dump(mode="json") for j in jobs]


class MLOpsService:
    """The facade. `mlops_service` is the process-wide instance; build others for other settings."""

    def __init__(self, settings: Any = None) -> None:
        self._settings = settings
        self._registry: Any = None
        self._tracker: Any = None
        self.initialized = False
        self.retraining_service = RetrainingService(self)

    @property
    def settings(self) -> Any:
        if self._settings is None:
            from nfl_mlops.settings import get_settings

            self._settings = get_settings()
        return self._settings

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from nfl_mlops.registry.store import Registry

            self._registry = Registry.from_settings(self.settings)
        return self._registry

    # Set-up and status
    async def initialize(self) -> dict[str, Any]:
        """Create the state DB schema and the folders; returns the service status."""
        from nfl_mlops.db import get_engine

        cfg = self.settings
        for folder in (cfg.mlops_home, cfg.models_path, cfg.deployments_path):
            Path(folder).mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(get_engine, cfg.db_url)
        self.initialized = True
        return await self.get_service_status()

    async def get_service_status(self) -> dict[str, Any]:
        """Registered models (versions, champion), active deployments and the backends in use."""
        return await asyncio.to_thread(self._status)

    def _status(self) -> dict[str, Any]:
        from nfl_mlops.events import prefect_api_url
        from nfl_mlops.registry.hub import queued_count
        from nfl_mlops.rollout import state as rollouts

        cfg = self.settings
        models: dict[str, dict[str, Any]] = {}
        for v in self.registry.list_versions():
            m = models.setdefault(v.model_name, {"versions": 0, "champion": None, "challenger": None})
            m["versions"] += 1
            for alias in v.aliases:
                if alias in ("champion", "challenger"):
                    m[alias] = v.version
        active = [r for r in rollouts.list_rollouts(None, cfg.db_url, 200) if r.status == "active"]
        return {
            "initialized": self.initialized,
            "models": models,
            "deployments": [
                {
                    "deployment_id": r.id,
                    "model_id": r.model_name,
                    "environment": r.environment,
                    "strategy": r.strategy,
                    "version": r.version,
                    "arms": r.arms,
                }
                for r in active
            ],
            "services": {
                **cfg.backends(),
                "hub_pushes_queued": queued_count(cfg.db_url),
                "prefect_api": bool(prefect_api_url()),
            },
        }

    # Models
    async def register_model(
        self,
        model_name: str,
        model_path: str | Path,
        model_type: ModelType | str = ModelType.SENTIMENT_ANALYSIS,
        metrics: dict[str, Any] | None = None,
        description: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> ModelMetadata:
        """Copy a Hugging Face folder into the registry as the next version of `model_name` (atomic, with
        a model card), and mirror it to the Hub when `HUGGINGFACE_TOKEN` is set (a failed push waits in
        the queue for `nfl-mlops registry sync`).

        Raises:
            InvalidModelFolder: not a safetensors sequence-classification folder with this project's labels.
        """
        from nfl_mlops.registry.card import write_model_card
        from nfl_mlops.registry.hub import HubMirror
        from nfl_mlops.registry.store import check_model_folder

        path = Path(model_path)
        check_model_folder(path)
        info = await asyncio.to_thread(
            self.registry.register,
            model_name,
            path,
            metrics=metrics,
            params=params,
            lineage={"source": "sdk.register_model", "source_path": str(path.resolve())},
            description=description,
            model_type=str(ModelType(model_type)),
            write_card=write_model_card,
        )
        mirror = HubMirror(self.settings)
        if mirror.enabled:
            await asyncio.to_thread(mirror.mirror, info.model_name, info.version, info.path)
        return info

    async def list_models(self, model_name: str | None = None) -> list[ModelMetadata]:
        return await asyncio.to_thread(self.registry.list_versions, model_name)

    async def deploy_model(
        self,
        model_id: str,
        model_version: int | str,
        environment: str = "production",
        strategy: DeploymentStrategy | str = DeploymentStrategy.BLUE_GREEN,
        params: dict[str, Any] | None = None,
        reason: str | None = None,
        smoke_test: bool = True,
    ) -> dict[str, Any]:
        """Roll a registered version out with a strategy; returns the deployment (as `GET /deployments/{id}`).

        The version is loaded and smoke-tested here first (unless `smoke_test=False`). blue_green switches
        at once and moves `champion`; canary, shadow and ab_test start at their first step and the API
        replicas advance them as their gates decide. `params` are the strategy's settings
        (e.g. `{"steps": [10, 50, 100]}` for a canary).

        Raises:
            NotFoundError: unknown model or version. RolloutError: the version is not servable, failed
            its smoke test, or another rollout of the model is still in progress.
        """
        from nfl_mlops.rollout import actions
        from nfl_mlops.rollout import state as rollouts
        from nfl_mlops.rollout.records import deployment_out
        from nfl_mlops.rollout.strategies import params_for

        strategy = str(DeploymentStrategy(strategy))
        info = await asyncio.to_thread(self._servable, model_id, model_version, smoke_test)
        typed = params_for(strategy, params)
        r = await asyncio.to_thread(
            actions.deploy,
            self.registry,
            info.model_name,
            info.version,
            strategy,
            environment,
            params=typed,
            reason=reason or "sdk.deploy_model",
            driver="api",
            db_url=self.settings.db_url,
        )
        r = await asyncio.to_thread(rollouts.get_rollout, r.id, self.settings.db_url)
        return deployment_out(r).model_dump(mode="json")

    def _servable(self, model_id: str, version: int | str, smoke_test: bool) -> Any:
        from nfl_mlops.rollout import actions

        if smoke_test:
            return actions.check_servable(self.registry, model_id, version)[0]
        info = self.registry.get(model_id, version)
        if info.status != "ready":
            raise actions.NotServable(
                f"{info.model_name} v{info.version} is {info.status}; only a ready version can be deployed"
            )
        return info

    async def rollback(self, deployment_id: str, reason: str = "manual rollback") -> dict[str, Any]:
        """Send all traffic back to the version that served before `deployment_id` (`rollout.actions.rollback`)."""
        from nfl_mlops.rollout import actions
        from nfl_mlops.rollout.records import deployment_out

        r = await asyncio.to_thread(
            actions.rollback, self.registry, deployment_id, reason, self.settings.db_url
        )
        return deployment_out(r).model_dump(mode="json")

    # Experiments
    async def start_experiment(
        self, experiment_name: str, config: dict[str, Any] | None = None, tags: list[str] | None = None
    ) -> str:
        """Open a tracked run (W&B, offline without `WANDB_API_KEY`, plus a state-DB row the API lists);
        returns the experiment id. A run still open from an earlier call is finished first."""
        from nfl_mlops.tracking.experiments import ExperimentTracker

        if self._tracker is not None:
            await self.finish_experiment({}, status="superseded")
        tracker = ExperimentTracker(self.settings)
        experiment_id = await asyncio.to_thread(tracker.start, experiment_name, config or {}, tags or [])
        self._tracker = tracker
        return experiment_id

    async def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log scalar metrics to the open run (e.g. per epoch)."""
        tracker = self._open_tracker()
        await asyncio.to_thread(tracker.log, metrics, step)

    async def finish_experiment(
        self, final_metrics: dict[str, Any] | None = None, status: str = "finished"
    ) -> str:
        """Close the open run with its final metrics; returns its experiment id."""
        tracker = self._open_tracker()
        self._tracker = None
        await asyncio.to_thread(tracker.finish, final_metrics or {}, status)
        return tracker.experiment_id

    def _open_tracker(self) -> Any:
        if self._tracker is None:
            raise ExperimentNotRunning("no experiment is open: call start_experiment first")
        return self._tracker

    # A/B tests
    async def create_ab_test(
        self,
        test_name: str,
        model_a_id: str,
        model_a_version: int | str,
        model_b_id: str,
        model_b_version: int | str,
        traffic_split: float | None = None,
        duration_days: float | None = None,
        environment: str = "production",
        **params: Any,
    ) -> str:
        """Split traffic between two versions of one model (percent on B = `traffic_split`), sticky per
        request key; returns the test id (`GET /mlops/ab-tests/{id}` shows statistics and verdict).

        Raises:
            ValueError: A and B name different models or the same version. RolloutError: a test of
            that name is running, or another rollout is in progress.
        """
        from nfl_mlops.rollout import abtest, actions
        from nfl_mlops.rollout.state import RolloutError
        from nfl_mlops.rollout.strategies import ABTestParams

        abtest.check_pair(model_a_id, model_b_id)
        a = await asyncio.to_thread(self._servable, model_a_id, model_a_version, False)
        b = await asyncio.to_thread(self._servable, model_b_id, model_b_version, True)
        abtest.check_pair(a.model_name, b.model_name, a.version, b.version)
        db_url = self.settings.db_url
        given = {"traffic_split": traffic_split, "duration_days": duration_days}
        typed = ABTestParams(**{k: v for k, v in given.items() if v is not None}, **params)  # defaults: once
        r = await asyncio.to_thread(
            actions.deploy,
            self.registry,
            b.model_name,
            b.version,
            "ab_test",
            environment,
            params=typed,
            reason=f"A/B test {test_name}",
            driver="api",
            test_name=test_name,
            version_a=a.version,
            db_url=db_url,
        )
        test = await asyncio.to_thread(abtest.ab_test_for_rollout, r.id, db_url)
        if test is None:  # start_rollout makes the record with the rollout
            raise RolloutError(f"deployment {r.id} has no A/B test record")
        return test.id

    async def get_ab_test(self, test_id: str) -> dict[str, Any]:
        from nfl_mlops.rollout import abtest
        from nfl_mlops.rollout.records import ab_out

        db_url = self.settings.db_url
        test = await asyncio.to_thread(abtest.get_ab_test, test_id, db_url)
        return (await asyncio.to_thread(ab_out, test, db_url)).model_dump(mode="json")

    # Monitoring
    async def monitor_model_performance(
        self, model_id: str, model_version: int | str, performance_metrics: ModelPerformanceMetrics
    ) -> PerformanceVerdict:
        """Judge performance measured elsewhere against what the version was registered with.

        Degraded = accuracy or macro-F1 more than PERFORMANCE_MAX_DROP below the registered test metrics,
        or an error rate above the rollout gate's. The verdict is recorded as a monitoring run (so
        `check_retraining_triggers` and `GET /retraining/triggers` see it) and, when degraded and a
        Prefect API is configured, emitted as `nfl-mlops.performance.degraded`, the event whose
        automation starts retraining.
        """
        return await asyncio.to_thread(self._monitor, model_id, model_version, performance_metrics)

    def _monitor(
        self, model_id: str, model_version: int | str, reported: ModelPerformanceMetrics
    ) -> PerformanceVerdict:
        from nfl_mlops import events
        from nfl_mlops.monitoring.performance import judge_reported
        from nfl_mlops.monitoring.thresholds import PERFORMANCE_MAX_DROP
        from nfl_mlops.monitoring.triggers import record_verdict
        from nfl_mlops.rollout.gates import GateParams

        info = self.registry.get(model_id, model_version)
        reference = _reference_metrics(info.metrics)
        reasons = judge_reported(
            reported.model_dump(), reference, PERFORMANCE_MAX_DROP, GateParams().max_error_rate
        )
        degraded = bool(reasons)
        values = reported.model_dump(mode="json")
        summary = {
            "source": "sdk.monitor_model_performance",
            "performance_degraded": degraded,
            "reasons": reasons,
            "reported": values,
            "reference": reference,
            "events": ["performance.degraded"] if degraded else [],
        }
        run_id = record_verdict(
            info.model_name,
            info.version,
            summary,
            n_predictions=int(reported.prediction_count or 0),
            db_url=self.settings.db_url,
        )
        verdict = PerformanceVerdict(
            info.model_name, info.version, degraded, reasons, reference, values, run_id
        )
        if degraded:
            payload = {
                "model_name": info.model_name,
                "model_version": info.version,
                "reason": "performance degraded: " + "; ".join(reasons),
                "drift_share": 0.0,
                "monitoring_run_id": run_id,
                "source": "sdk",
            }
            verdict.event_emitted = (
                events.emit(events.PERFORMANCE_DEGRADED, info.model_name, payload) is not None
            )
        return verdict

    # Retraining
    async def trigger_retraining(
        self,
        model_name: str,
        reason: str = "manual",
        config: dict[str, Any] | None = None,
        strategy: DeploymentStrategy | str | None = None,
    ) -> str:
        """Start the `retraining/retraining` Prefect deployment (not waiting for it); returns its flow-run id.

        `config` overrides the champion's training recipe field by field (e.g. `{"epochs": 5}`).

        Raises:
            LookupError: no such model. RetrainingNotStarted: Prefect is not configured or not reachable
            (the job is recorded as failed, with the reason).
        """
        from nfl_mlops import retraining as rt

        job = await rt.request_retraining(
            self.registry,
            model_name,
            reason,
            config,
            str(DeploymentStrategy(strategy)) if strategy else None,
            "sdk",
            self.settings.db_url,
        )
        if job.flow_run_id is None:  # request_retraining raises when Prefect did not create the run
            raise rt.RetrainingNotStarted(job.job_id, f"retraining job {job.job_id} has no flow run")
        return job.flow_run_id

    async def lineage(self, prediction_id: str) -> dict[str, Any]:
        """From a logged prediction to model version, datasets, feature group, tracker run and flow runs."""
        from nfl_mlops.lineage import lineage_of_prediction

        return await asyncio.to_thread(lineage_of_prediction, prediction_id, self.settings.db_url)

    # Labelling
    async def labeling_queue(
        self,
        model_name: str | None = None,
        episode_id: str | None = None,
        status: str = "pending",
        offset: int = 0,
        limit: int = 50,
    ) -> dict[str, Any]:
        """A page of the labelling queue monitoring filled for drift/degradation episodes (most informative
        first), with counts; the same as `GET /mlops/labeling/queue`."""
        from nfl_mlops.monitoring.labeling import read_queue

        name = model_name or self.settings.model_name
        page = await asyncio.to_thread(
            read_queue, name, episode_id, status, offset, limit, self.settings.db_url
        )
        return {
            "model_name": name,
            "episode_id": episode_id,
            "total": page.total,
            "pending": page.pending,
            "labelled": page.labelled,
            "items": [item.as_dict() for item in page.items],
        }

    async def import_labels(
        self, tasks: list[dict[str, Any]], model_name: str | None = None
    ) -> dict[str, Any]:
        """Record a Label Studio JSON export as feedback (all or nothing; `LabelImportError` on a bad file)."""
        from nfl_mlops.monitoring.labeling import import_label_studio

        name = model_name or self.settings.model_name
        result = await asyncio.to_thread(import_label_studio, tasks, name, self.settings.db_url)
        return result.as_dict()


mlops_service = MLOpsService()
