"""The prediction service behind the API: follows the active rollout, routes, predicts, logs.

Plain Python with asyncio; FastAPI routes in `app.py` stay thin.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nfl_mlops.db import utcnow
from nfl_mlops.registry.store import Registry
from nfl_mlops.rollout.state import RolloutInfo, active_rollout, choose_arm
from nfl_mlops.serving.predlog import PredictionLogWriter

log = logging.getLogger(__name__)


class NoModelDeployed(RuntimeError):
    """No rollout is active, so there is nothing to serve yet."""


@dataclass(frozen=True)
class Served:
    id: str
    request_id: str
    label: str
    confidence: float
    scores: dict[str, float]
    model_version: int
    arm: str
    latency_ms: float


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PredictionService:
    """Loads versions on demand, keeps the previous one warm, and serves the active rollout."""

    def __init__(self, settings: Any, registry: Registry | None = None) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        self.environment = "production"
        self.registry = registry or Registry.from_settings(settings)
        self.logger = PredictionLogWriter(settings.db_url)
        self.rollout: RolloutInfo | None = None
        self._models: dict[int, Any] = {}
        self._load_lock = threading.Lock()
        self._infer_lock = threading.Lock()
        self._poll_task: asyncio.Task | None = None
        self.started_at = time.time()
        self.counts: dict[str, int] = {"requests": 0, "predictions": 0}
        self.last_refresh_error: str | None = None

    # Lifecycle
    async def start(self) -> None:
        self.logger.start()
        try:
            await self.refresh()
        except Exception as exc:  # the API must come up even when the DB has no rollout yet
            self.last_refresh_error = str(exc)
            log.warning("initial rollout refresh failed: %s", exc)
        self._poll_task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            try:
                await self._poll_task
            except asyncio.CancelledError:
                pass
        await asyncio.to_thread(self.logger.close)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.rollout_poll_seconds)
            try:
                await self.refresh()
                self.last_refresh_error = None
            except Exception as exc:
                self.last_refresh_error = str(exc)
                log.warning("rollout refresh failed: %s", exc)

    async def refresh(self) -> RolloutInfo | None:
        """Re-read the active rollout; load and warm any new version before switching to it."""
        rollout = await asyncio.to_thread(active_rollout, self.model_name, self.environment, self.settings.db_url)
        if rollout is not None:
            for arm in rollout.arms.values():
                await asyncio.to_thread(self.ensure_loaded, int(arm["version"]))
            # keep the versions of the new rollout and the previous stable one warm, drop the rest
            keep = {int(a["version"]) for a in rollout.arms.values()}
            if rollout.previous_version is not None:
                keep.add(rollout.previous_version)
            for version in list(self._models):
                if version not in keep:
                    self._models.pop(version, None)
        self.rollout = rollout
        return rollout

    def ensure_loaded(self, version: int) -> Any:
        """The loaded, warmed model of `version` (loaded once)."""
        model = self._models.get(version)
        if model is not None:
            return model
        with self._load_lock:
            model = self._models.get(version)
            if model is None:
                from nfl_mlops.modeling.predictor import SentimentModel

                info = self.registry.get(self.model_name, version)
                started = time.perf_counter()
                model = SentimentModel.load(info.path, name=f"{self.model_name}-v{version}")
                model.warmup()
                log.info("loaded and warmed %s v%s in %.1fs", self.model_name, version, time.perf_counter() - started)
                self._models[version] = model
        return model

    @property
    def loaded_versions(self) -> list[int]:
        return sorted(self._models)

    # Serving
    async def predict(self, texts: Sequence[str], key: str | None = None, request_id: str | None = None) -> list[Served]:
        """Predict `texts` with the arm the rollout assigns to this request, and log each answer."""
        rollout = self.rollout
        if rollout is None:
            raise NoModelDeployed("no model is deployed yet: run the deployment flow or POST /mlops/deployments")
        request_id = request_id or uuid.uuid4().hex
        arm = choose_arm(rollout.arms, key, request_id)
        version = int(rollout.arms[arm]["version"])
        model = self.ensure_loaded(version)
        started = time.perf_counter()
        preds = await asyncio.to_thread(self._infer, model, list(texts))
        latency_ms = (time.perf_counter() - started) * 1000.0 / max(1, len(texts)) if len(texts) > 1 else (
            time.perf_counter() - started) * 1000.0
        now = utcnow()
        served, rows = [], []
        for text, p in zip(texts, preds, strict=True):
            pid = uuid.uuid4().hex[:16]
            served.append(Served(pid, request_id, p.label, p.confidence, p.scores, version, arm, latency_ms))
            rows.append(dict(
                id=pid, request_id=request_id, created_at=now, model_name=self.model_name, model_version=version,
                rollout_id=rollout.id, arm=arm, served=True, text=text, text_hash=text_hash(text), label=p.label,
                confidence=p.confidence, latency_ms=latency_ms,
            ))
        self.logger.put_many(rows)
        self.counts["requests"] += 1
        self.counts["predictions"] += len(texts)
        return served

    def _infer(self, model: Any, texts: list[str]) -> list[Any]:
        with self._infer_lock:
            return model.predict(texts)
