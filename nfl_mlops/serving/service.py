"""The prediction service behind the API: follows the active rollout, routes, batches, caches, logs.

Plain Python with asyncio; FastAPI routes in `app.py` stay thin. Per request:
route (sticky arm) -> cache lookup by (version, text hash) -> dynamic batcher for the misses ->
answer -> prediction-log rows queued (written in batches off the request path). Shadow arms get
a copy of the texts in the background; their answers are logged with `served=False`, never
returned. A failing non-stable arm is recorded (rows with `error`) and the request is answered
by the stable arm, so a broken canary shows up in the gates, not in users' responses.

Following the rollout: every `rollout_poll_seconds` the service re-reads the active rollout, loads and
warms the versions of its arms and only then switches to it; a version that does not load keeps the
previous traffic and is reported. Each poll upserts this replica's heartbeat (`rollout.replicas`): what it
serves, what it has loaded, what it could not load; the rollout's driver counts a step as done only when
every live replica serves it. Shutdown marks the heartbeat `stopping`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from nfl_mlops.db import utcnow
from nfl_mlops.registry.store import Registry
from nfl_mlops.rollout import replicas
from nfl_mlops.rollout.state import RolloutInfo, active_rollout, choose_arm
from nfl_mlops.serving.batcher import DynamicBatcher, Overloaded, prefer_passive_openmp
from nfl_mlops.serving.cache import make_cache
from nfl_mlops.serving.metrics import ServingMetrics
from nfl_mlops.serving.predlog import PredictionLogWriter

T = TypeVar("T")


log = logging.getLogger(__name__)

LOAD_RETRY_S = 30.0
"""A version that failed to load is tried again after this long (while its rollout is still active)."""


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


SHUTDOWN_BATCHES_S = 10.0
"""Shutdown: longest the batchers take to answer what is queued (then the rest gets an error)."""
SHUTDOWN_LOG_S = 5.0
"""Shutdown: longest the prediction log tries the DB when a spool holds the rows (they stay there)."""
SHUTDOWN_LOG_NO_SPOOL_S = 15.0
"""...and without a spool (rows only in memory). Together well inside Kubernetes' 30 s grace period."""


class PredictionService:
    """Loads versions on demand, keeps the previous one warm, and serves the active rollout."""

    def __init__(self, settings: Any, registry: Registry | None = None) -> None:
        prefer_passive_openmp()  # before the first model load imports torch (see its docstring)
        self.settings = settings
        self.model_name = settings.model_name
        self.environment = "production"
        self.registry = registry or Registry.from_settings(settings)
        self.logger = PredictionLogWriter(
            settings.db_url, spool_dir=settings.spool_path if settings.durable_predictions else None
        )
        self.metrics = ServingMetrics()
        # answers are cached per model name: replicas of one model share them, other models never see them
        self.cache = make_cache(settings.redis_dsn, namespace=self.model_name)
        self.rollout: RolloutInfo | None = None  # the rollout this replica serves
        self.latest: RolloutInfo | None = None  # the newest active rollout read (it may not serve it yet)
        self.synced = False  # a refresh has completed (the state DB answered, the versions were tried)
        self.stopping = False
        self.replica_id = replicas.new_replica_id()
        self.load_errors: dict[int, str] = {}  # versions of `latest` that did not load
        self._failed_at: dict[int, float] = {}
        self._refresh_lock = asyncio.Lock()
        self._models: dict[int, Any] = {}
        self._batchers: dict[int, DynamicBatcher] = {}
        # one inference thread for all versions: two forwards at once only fight over the cores
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._load_lock = threading.Lock()
        self._poll_task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self.started_at = time.time()
        self.counts: dict[str, int] = {"requests": 0, "predictions": 0, "shadow": 0, "arm_errors": 0}
        self._shadow_texts = 0  # texts of shadow copies in flight (bounded: `_shadow_admitted`)
        self.last_refresh_error: str | None = None

    # Lifecycle
    async def start(self) -> None:
        """Start the prediction log and the rollout poll; the first refresh (loading the served versions)
        runs in the background, so liveness answers at once and readiness once they are loaded."""
        self.logger.start()
        try:
            await asyncio.to_thread(replicas.prune, replicas.PRUNE_AFTER_S, self.settings.db_url)
        except Exception as exc:  # noqa: BLE001 - housekeeping only
            log.debug("could not prune old replica heartbeats: %s", exc)
        self._poll_task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        self.stopping = True  # readiness answers 503 from now on
        if self._poll_task is not None:
            self._poll_task.cancel()
            try:
                await self._poll_task
            except asyncio.CancelledError:
                pass
        try:
            await asyncio.to_thread(replicas.mark_stopping, self.replica_id, self.settings.db_url)
        except Exception as exc:  # noqa: BLE001 - the row goes stale by itself
            log.warning("could not mark replica %s stopping: %s", self.replica_id, exc)
        if self._background:  # shadow predictions still running: let them finish and log
            await asyncio.gather(*self._background, return_exceptions=True)
        for batcher in self._batchers.values():  # queued requests are answered (each waits <= its deadline)
            await batcher.close(timeout=SHUTDOWN_BATCHES_S)
        # rows already in the spool are safe: the DB gets a short try, the next process writes the rest
        await asyncio.to_thread(
            self.logger.close, SHUTDOWN_LOG_S if self.logger.spool is not None else SHUTDOWN_LOG_NO_SPOOL_S
        )
        self._executor.shutdown(wait=False)
        close_cache = getattr(self.cache, "close", None)
        if close_cache is not None:
            close_cache()

    async def _poll(self) -> None:
        """Refresh every poll; one heartbeat per poll, also while a long model load is in progress."""
        every = self.settings.rollout_poll_seconds
        refreshing: asyncio.Task | None = None
        first = True
        while True:
            if not first:
                await asyncio.sleep(every)
            first = False
            if refreshing is None or refreshing.done():
                refreshing = asyncio.create_task(self._refresh_logged())
            done, _ = await asyncio.wait({refreshing}, timeout=every)
            if not done:  # still loading: say so, so the rollout's driver keeps waiting for this replica
                await self.heartbeat()

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
            self.last_refresh_error = None if not self.load_errors else self.last_refresh_error
        except Exception as exc:
            self.last_refresh_error = str(exc)
            log.warning("rollout refresh failed: %s", exc)

    @property
    def following(self) -> bool:
        """This replica serves the newest active rollout it has read, with its traffic."""
        if self.latest is None or self.rollout is None:
            return self.latest is None and self.rollout is None
        return self.rollout.id == self.latest.id and replicas.traffic(self.rollout.arms) == replicas.traffic(
            self.latest.arms
        )

    def readiness(self) -> tuple[bool, str]:
        """Whether this replica should get traffic (Kubernetes readiness), and why not.

        Ready once a refresh has completed and every version of the rollout it serves is loaded; with no
        active rollout it is ready too (nothing to serve: predictions answer 503 "no model is deployed", and
        the management API must stay reachable to deploy one). Not ready while stopping. While it loads a
        new rollout it stays ready on the previous one (else every replica would drop out at each deploy).
        """
        if self.stopping:
            return False, "shutting down"
        if not self.synced:
            if self.load_errors:
                return False, "; ".join(
                    f"v{v} does not load: {e}" for v, e in sorted(self.load_errors.items())
                )
            return False, self.last_refresh_error or "loading the versions of the active rollout"
        if self.rollout is None:
            return True, "no model deployed yet"
        missing = sorted(replicas.arm_versions(self.rollout.arms) - set(self._models))
        if missing:
            return False, f"versions {missing} are not loaded"
        return True, "serving"

    def heartbeat_info(self) -> replicas.ReplicaInfo:
        r = self.rollout
        return replicas.ReplicaInfo(
            replica_id=self.replica_id,
            model_name=self.model_name,
            environment=self.environment,
            host=socket.gethostname()[:255],
            pid=os.getpid(),
            started_at=datetime.fromtimestamp(self.started_at, UTC),
            rollout_id=r.id if r else None,
            arms=dict(r.arms) if r else {},
            target_rollout_id=self.latest.id if self.latest else None,
            loaded_versions=self.loaded_versions,
            load_errors={str(v): e for v, e in self.load_errors.items()},
            ready=self.readiness()[0],
            stopping=self.stopping,
        )

    async def heartbeat(self) -> None:
        """Upsert this replica's heartbeat row (never raises: a DB outage shows in readiness instead)."""
        if self.stopping:
            return
        try:
            await asyncio.to_thread(replicas.write_heartbeat, self.heartbeat_info(), self.settings.db_url)
        except Exception as exc:  # noqa: BLE001
            log.warning("heartbeat of replica %s failed: %s", self.replica_id, exc)

    async def refresh(self) -> RolloutInfo | None:
        """Re-read the active rollout; load and warm its versions, switch to it only when all of them load
        (else keep serving the previous traffic and report the load errors), then heartbeat."""
        async with self._refresh_lock:
            rollout = await asyncio.to_thread(
                active_rollout, self.model_name, self.environment, self.settings.db_url
            )
            errors: dict[int, str] = {}
            if rollout is not None:
                for version in sorted(replicas.arm_versions(rollout.arms)):
                    known = self.load_errors.get(version)
                    if (
                        known is not None
                        and self.latest is not None
                        and self.latest.id == rollout.id
                        and time.monotonic() - self._failed_at.get(version, 0.0) < LOAD_RETRY_S
                    ):
                        errors[version] = known  # failed moments ago for this rollout: not again yet
                        continue
                    try:
                        await asyncio.to_thread(self.ensure_loaded, version)
                        self._failed_at.pop(version, None)
                    except Exception as exc:  # noqa: BLE001 - reported in the heartbeat, the driver rolls back
                        errors[version] = f"{type(exc).__name__}: {exc}"[:500]
                        self._failed_at[version] = time.monotonic()
                        log.warning(
                            "cannot load %s v%s for deployment %s; still serving deployment %s: %s",
                            self.model_name,
                            version,
                            rollout.id,
                            self.rollout.id if self.rollout else None,
                            errors[version],
                        )
            self.latest = rollout
            self.load_errors = errors
            if errors:
                self.last_refresh_error = "; ".join(
                    f"v{v} does not load: {e}" for v, e in sorted(errors.items())
                )
            elif rollout is not None:
                # keep the versions of the new rollout and the previous stable one warm, drop the rest
                keep = replicas.arm_versions(rollout.arms)
                if rollout.previous_version is not None:
                    keep.add(rollout.previous_version)
                for version in list(self._models):
                    if version not in keep:
                        dropped = self._models.pop(version, None)
                        if dropped is not None:
                            self.metrics.backend.remove(str(version), getattr(dropped, "backend", "torch"))
                        batcher = self._batchers.pop(version, None)
                        if batcher is not None:
                            await batcher.close()
                stable = rollout.arms.get("stable", {}).get("version", rollout.version)
                self.metrics.serving_version.set(int(stable))
                self.metrics.set_arms(rollout.arms)
                self.rollout = rollout
            else:
                self.rollout = None
            self.synced = self.synced or not errors or self.rollout is not None
            await self.heartbeat()
            return self.rollout

    def ensure_loaded(self, version: int) -> Any:
        """The loaded, warmed model of `version` (loaded once)."""
        model = self._models.get(version)
        if model is not None:
            return model
        with self._load_lock:
            model = self._models.get(version)
            if model is None:
                from nfl_mlops.modeling.predictor import load_as_served
                from nfl_mlops.registry.artifacts import resolve_version

                info = self.registry.get(self.model_name, version)
                started = time.perf_counter()
                folder = resolve_version(info, self.settings)  # verified; fetched into the cache when remote
                model = load_as_served(
                    folder, name=f"{self.model_name}-v{version}", setting=self.settings.inference_backend
                )
                backend = model.backend
                model.warmup()
                log.info(
                    "loaded and warmed %s v%s (%s) in %.1fs",
                    self.model_name,
                    version,
                    backend,
                    time.perf_counter() - started,
                )
                self._models[version] = model
                self.metrics.backend.labels(str(version), backend).set(1)
        return model

    def batcher_for(self, version: int) -> DynamicBatcher:
        """The loaded version's batcher (loaded on first use): every forward pass of that version goes through it,
        on its runtime, bounded by the shared queue limits (predictions, shadow copies, explanations)."""
        batcher = self._batchers.get(version)
        if batcher is None:
            model = self.ensure_loaded(version)
            batcher = DynamicBatcher(
                functools.partial(model.predict, batch_size=self.settings.max_batch_size),
                max_batch_size=self.settings.max_batch_size,
                max_wait_ms=self.settings.max_wait_ms,
                on_batch=self._on_batch,
                executor=self._executor,
                max_queued=self.settings.max_queued_texts,
                max_queue_wait_s=self.settings.max_queue_wait_s,
            )
            self._batchers[version] = batcher
        return batcher

    def _on_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.batch_seconds.observe(seconds)

    @property
    def backends(self) -> dict[int, str]:
        """The runtime each loaded version serves with."""
        return {v: getattr(m, "backend", "torch") for v, m in sorted(self._models.items())}

    def cost(self) -> dict[int, dict[str, Any]]:
        """Per loaded version: its runtime, the admitted ones, and advice when a cheaper one is admitted."""
        from nfl_mlops.modeling.predictor import cuda_available
        from nfl_mlops.modeling.runtimes import cost_advice

        return {
            v: cost_advice(getattr(m, "backend", "torch"), m.path, cuda=cuda_available())
            for v, m in sorted(self._models.items())
            if getattr(m, "path", None) is not None
        }

    @property
    def loaded_versions(self) -> list[int]:
        return sorted(self._models)

    # Serving
    async def _off_loop(self, call: Callable[..., T], *args: Any) -> T:
        """A cache call: Redis (network, up to its socket timeout) in a thread, so a slow or unreachable
        Redis never stalls the event loop; the in-process LRU inline (microseconds)."""
        if getattr(self.cache, "remote", False):
            return await asyncio.to_thread(call, *args)
        return call(*args)

    async def _predict_version(
        self, version: int, texts: list[str], hashes: list[str]
    ) -> list[dict[str, Any]]:
        """Answers of one version: cached ones, and the rest through the dynamic batcher."""
        if version not in self._models:
            await asyncio.to_thread(self.ensure_loaded, version)
        cached = await self._off_loop(self.cache.get_many, version, hashes)
        missing = [i for i, c in enumerate(cached) if c is None]
        self.metrics.cache_hits.inc(len(texts) - len(missing))
        self.metrics.cache_misses.inc(len(missing))
        if missing:
            fresh = await self.batcher_for(version).submit([texts[i] for i in missing])
            fresh_dicts = [_as_dict(p) for p in fresh]
            await self._off_loop(
                self.cache.put_many,
                version,
                [(hashes[i], d) for i, d in zip(missing, fresh_dicts, strict=True)],
            )
            for i, d in zip(missing, fresh_dicts, strict=True):
                cached[i] = d
        return cached  # type: ignore[return-value]

    def _rows(
        self,
        rollout: RolloutInfo,
        request_id: str,
        arm: str,
        version: int,
        texts: list[str],
        hashes: list[str],
        answers: list[dict[str, Any]] | None,
        latency_ms: float,
        served: bool,
        error: str | None = None,
    ) -> list[dict[str, Any]]:
        now = utcnow()
        rows = []
        for i, (text, h) in enumerate(zip(texts, hashes, strict=True)):
            a = answers[i] if answers else {"label": "", "confidence": 0.0}
            rows.append(
                dict(
                    id=uuid.uuid4().hex[:16],
                    request_id=request_id,
                    created_at=now,
                    model_name=self.model_name,
                    model_version=version,
                    rollout_id=rollout.id,
                    arm=arm,
                    served=served,
                    text=text,
                    text_hash=h,
                    label=a["label"],
                    confidence=a["confidence"],
                    latency_ms=latency_ms,
                    error=error,
                )
            )
        return rows

    async def predict(
        self, texts: Sequence[str], key: str | None = None, request_id: str | None = None
    ) -> list[Served]:
        """Predict `texts` with the arm the rollout assigns to this request, and log each answer."""
        rollout = self.rollout
        if rollout is None:
            raise NoModelDeployed(
                "no model is deployed yet: run the deployment flow or POST /mlops/deployments"
            )
        backlog = self.logger.backlog
        if backlog >= self.settings.max_spooled_rows:  # the state DB has been away too long
            self.metrics.shed.labels("spool_full").inc(len(texts))
            raise Overloaded(
                f"overloaded: {backlog} prediction-log rows wait for the state DB (limit "
                f"{self.settings.max_spooled_rows}); retry in {Overloaded.retry_after_s} s",
                reason="spool_full",
            )
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
            if isinstance(exc, Overloaded):
                self.metrics.shed.labels(exc.reason).inc(len(texts))
            if arm == control or control is None or isinstance(exc, Overloaded):
                raise  # shed load is not the candidate's error
            # a broken candidate: record it for the gates, answer from the control version
            self.counts["arm_errors"] += 1
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("arm %s (v%s) failed, falling back to %s: %s", arm, version, control, error)
            self.logger.log(
                self._rows(
                    rollout,
                    request_id,
                    arm,
                    version,
                    texts,
                    hashes,
                    None,
                    (time.perf_counter() - started) * 1000.0,
                    served=False,
                    error=error,
                )
            )
            arm, version = control, int(rollout.arms[control]["version"])
            answers = await self._predict_version(version, texts, hashes)
        latency_ms = (time.perf_counter() - started) * 1000.0
        rows = self._rows(rollout, request_id, arm, version, texts, hashes, answers, latency_ms, served=True)
        await asyncio.wrap_future(self.logger.log(rows))  # answered only once its rows are durable
        for name, spec in rollout.arms.items():
            if spec.get("shadow"):
                if not self._shadow_admitted(len(texts)):
                    self.metrics.shed.labels("shadow").inc(len(texts))
                    continue
                task = asyncio.create_task(
                    self._shadow(rollout, request_id, name, int(spec["version"]), texts, hashes)
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        self.counts["requests"] += 1
        self.counts["predictions"] += len(texts)
        for a in answers:
            self.metrics.predictions.labels(str(version), arm, a["label"]).inc()
        self.metrics.log_queue.set(self.logger.queued)
        return [
            Served(r["id"], request_id, a["label"], a["confidence"], a["scores"], version, arm, latency_ms)
            for r, a in zip(rows, answers, strict=True)
        ]

    def _shadow_admitted(self, n: int) -> bool:
        """A shadow copy runs only while the texts waiting for the model (every version: they share one
        inference thread) plus the shadow texts in flight stay within half of MLOPS_MAX_QUEUED_TEXTS, so
        shadow work is dropped long before a served request is shed, and never takes more than half."""
        waiting = sum(b.waiting for b in self._batchers.values())
        return waiting + self._shadow_texts + n <= self.settings.max_queued_texts // 2

    async def _shadow(
        self,
        rollout: RolloutInfo,
        request_id: str,
        arm: str,
        version: int,
        texts: list[str],
        hashes: list[str],
    ) -> None:
        """The shadow version's answers, logged with served=False (errors logged too)."""
        started = time.perf_counter()
        self._shadow_texts += len(texts)
        try:
            answers = await self._predict_version(version, texts, hashes)
            error = None
        except Overloaded:  # shed on its way: not the shadow version's error, and nothing to log
            self.metrics.shed.labels("shadow").inc(len(texts))
            return
        except Exception as exc:
            answers, error = None, f"{type(exc).__name__}: {exc}"[:500]
        finally:
            self._shadow_texts -= len(texts)
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.logger.put_many(
            self._rows(
                rollout,
                request_id,
                arm,
                version,
                texts,
                hashes,
                answers,
                latency_ms,
                served=False,
                error=error,
            )
        )
        self.counts["shadow"] += len(texts)
        self.metrics.shadow_predictions.labels(str(version)).inc(len(texts))
