"""The prediction service behind the API: follows the active rollout, routes, batches, caches, logs.

Plain Python with asyncio; FastAPI routes in `app.py` stay thin. Per request:
route (sticky arm) -> cache lookup by (version, text hash) -> dynamic batcher for the misses ->
answer -> prediction-log rows queued (written in batches off the request path). Shadow arms get
a copy of the texts in the background; their answers are logged with `served=False`, never
returned. A failing non-stable arm is recorded (rows with `error`) and the request is answered
by the stable arm, so a broken canary shows up in the gates, not in users' responses.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from nfl_mlops.db import utcnow
from nfl_mlops.registry.store import Registry
from nfl_mlops.rollout.state import RolloutInfo, active_rollout, choose_arm
from nfl_mlops.serving.batcher import DynamicBatcher, prefer_passive_openmp
from nfl_mlops.serving.cache import make_cache
from nfl_mlops.serving.metrics import ServingMetrics
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


def _check_answers(answers: Sequence[dict[str, Any]]) -> None:
    """Raise on answers no client may see (NaN/out-of-range confidences: corrupted weights)."""
    for a in answers:
        c = a["confidence"]
        if not (isinstance(c, float | int) and 0.0 <= c <= 1.0):  # False for NaN
            raise ValueError(f"invalid model output: confidence {c!r} for label {a['label']!r}")


def _as_dict(p: Any) -> dict[str, Any]:
    return {"label": p.label, "confidence": p.confidence, "scores": p.scores}


class PredictionService:
    """Loads versions on demand, keeps the previous one warm, and serves the active rollout."""

    def __init__(self, settings: Any, registry: Registry | None = None) -> None:
        prefer_passive_openmp()  # before the first model load imports torch (see its docstring)
        self.settings = settings
        self.model_name = settings.model_name
        self.environment = "production"
        self.registry = registry or Registry.from_settings(settings)
        self.logger = PredictionLogWriter(settings.db_url)
        self.metrics = ServingMetrics()
        # answers are cached per model name: replicas of one model share them, other models never see them
        self.cache = make_cache(settings.redis_url, namespace=self.model_name)
        self.rollout: RolloutInfo | None = None
        self._models: dict[int, Any] = {}
        self._batchers: dict[int, DynamicBatcher] = {}
        # one inference thread for all versions: two forwards at once only fight over the cores
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._load_lock = threading.Lock()
        self._poll_task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self.started_at = time.time()
        self.counts: dict[str, int] = {"requests": 0, "predictions": 0, "shadow": 0, "arm_errors": 0}
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
        if self._background:  # shadow predictions still running: let them finish and log
            await asyncio.gather(*self._background, return_exceptions=True)
        for batcher in self._batchers.values():
            await batcher.close()
        await asyncio.to_thread(self.logger.close)
        self._executor.shutdown(wait=False)
        close_cache = getattr(self.cache, "close", None)
        if close_cache is not None:
            close_cache()

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
                    batcher = self._batchers.pop(version, None)
                    if batcher is not None:
                        await batcher.close()
            stable = rollout.arms.get("stable", {}).get("version", rollout.version)
            self.metrics.serving_version.set(int(stable))
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

    def _batcher(self, version: int) -> DynamicBatcher:
        batcher = self._batchers.get(version)
        if batcher is None:
            model = self.ensure_loaded(version)
            batcher = DynamicBatcher(
                functools.partial(model.predict, batch_size=self.settings.max_batch_size),
                max_batch_size=self.settings.max_batch_size,
                max_wait_ms=self.settings.max_wait_ms,
                on_batch=self._on_batch,
                executor=self._executor,
            )
            self._batchers[version] = batcher
        return batcher

    def _on_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.batch_seconds.observe(seconds)

    @property
    def loaded_versions(self) -> list[int]:
        return sorted(self._models)

    # Serving
    async def _predict_version(self, version: int, texts: list[str], hashes: list[str]) -> list[dict[str, Any]]:
        """Answers of one version: cached ones, and the rest through the dynamic batcher."""
        if version not in self._models:
            await asyncio.to_thread(self.ensure_loaded, version)
        cached = self.cache.get_many(version, hashes)
        missing = [i for i, c in enumerate(cached) if c is None]
        self.metrics.cache_hits.inc(len(texts) - len(missing))
        self.metrics.cache_misses.inc(len(missing))
        if missing:
            fresh = await self._batcher(version).submit([texts[i] for i in missing])
            fresh_dicts = [_as_dict(p) for p in fresh]
            self.cache.put_many(version, [(hashes[i], d) for i, d in zip(missing, fresh_dicts, strict=True)])
            for i, d in zip(missing, fresh_dicts, strict=True):
                cached[i] = d
        return cached  # type: ignore[return-value]

    def _rows(self, rollout: RolloutInfo, request_id: str, arm: str, version: int, texts: list[str],
              hashes: list[str], answers: list[dict[str, Any]] | None, latency_ms: float, served: bool,
              error: str | None = None) -> list[dict[str, Any]]:
        now = utcnow()
        rows = []
        for i, (text, h) in enumerate(zip(texts, hashes, strict=True)):
            a = answers[i] if answers else {"label": "", "confidence": 0.0}
            rows.append(dict(
                id=uuid.uuid4().hex[:16], request_id=request_id, created_at=now, model_name=self.model_name,
                model_version=version, rollout_id=rollout.id, arm=arm, served=served, text=text, text_hash=h,
                label=a["label"], confidence=a["confidence"], latency_ms=latency_ms, error=error,
            ))
        return rows

    async def predict(self, texts: Sequence[str], key: str | None = None, request_id: str | None = None) -> list[Served]:
        """Predict `texts` with the arm the rollout assigns to this request, and log each answer."""
        rollout = self.rollout
        if rollout is None:
            raise NoModelDeployed("no model is deployed yet: run the deployment flow or POST /mlops/deployments")
        texts = list(texts)
        request_id = request_id or uuid.uuid4().hex
        hashes = [text_hash(t) for t in texts]
        arm = choose_arm(rollout.arms, key, request_id)
        version = int(rollout.arms[arm]["version"])
        # the control arm answers when another arm fails: `stable`, or `a` of an A/B test
        control = "stable" if "stable" in rollout.arms else ("a" if "a" in rollout.arms else None)
        started = time.perf_counter()
        try:
            answers = await self._predict_version(version, texts, hashes)
            if arm != control:
                _check_answers(answers)
        except Exception as exc:
            if arm == control or control is None:
                raise
            # a broken candidate: record it for the gates, answer from the control version
            self.counts["arm_errors"] += 1
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("arm %s (v%s) failed, falling back to %s: %s", arm, version, control, error)
            self.logger.put_many(self._rows(rollout, request_id, arm, version, texts, hashes, None,
                                            (time.perf_counter() - started) * 1000.0, served=False, error=error))
            arm, version = control, int(rollout.arms[control]["version"])
            answers = await self._predict_version(version, texts, hashes)
        latency_ms = (time.perf_counter() - started) * 1000.0
        rows = self._rows(rollout, request_id, arm, version, texts, hashes, answers, latency_ms, served=True)
        self.logger.put_many(rows)
        for name, spec in rollout.arms.items():
            if spec.get("shadow"):
                task = asyncio.create_task(self._shadow(rollout, request_id, name, int(spec["version"]), texts, hashes))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        self.counts["requests"] += 1
        self.counts["predictions"] += len(texts)
        for a in answers:
            self.metrics.predictions.labels(str(version), arm, a["label"]).inc()
        self.metrics.log_queue.set(self.logger.queued)
        return [Served(r["id"], request_id, a["label"], a["confidence"], a["scores"], version, arm, latency_ms)
                for r, a in zip(rows, answers, strict=True)]

    async def _shadow(self, rollout: RolloutInfo, request_id: str, arm: str, version: int, texts: list[str],
                      hashes: list[str]) -> None:
        """The shadow version's answers, logged with served=False (errors logged too)."""
        started = time.perf_counter()
        try:
            answers = await self._predict_version(version, texts, hashes)
            error = None
        except Exception as exc:
            answers, error = None, f"{type(exc).__name__}: {exc}"[:500]
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.logger.put_many(self._rows(rollout, request_id, arm, version, texts, hashes, answers, latency_ms,
                                        served=False, error=error))
        self.counts["shadow"] += len(texts)
        self.metrics.shadow_predictions.labels(str(version)).inc(len(texts))
