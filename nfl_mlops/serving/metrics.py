"""Prometheus metrics of the serving API (one registry per app, exposed at GET /metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class ServingMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "nfl_mlops_requests_total", "HTTP requests", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "nfl_mlops_request_latency_seconds",
            "HTTP request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "nfl_mlops_batch_size", "Texts per model forward pass", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "nfl_mlops_batch_seconds", "Model forward time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.predictions = Counter(
            "nfl_mlops_predictions_total",
            "Predictions answered",
            ["model_version", "arm", "label"],
            registry=r,
        )
        self.shadow_predictions = Counter(
            "nfl_mlops_shadow_predictions_total", "Shadow predictions logged", ["model_version"], registry=r
        )
        self.shed = Counter(
            "nfl_mlops_shed_total",
            "Work refused to stay inside the limits: requests answered 503 (reason queue_full, queue_wait, "
            "spool_full) and shadow copies dropped before any request is (reason shadow), in texts",
            ["reason"],
            registry=r,
        )
        self.backend = Gauge(
            "nfl_mlops_model_backend",
            "1 for the runtime each loaded version serves with (torch, onnx, onnx-int8)",
            ["model_version", "backend"],
            registry=r,
        )
        self.cache_hits = Counter("nfl_mlops_cache_hits_total", "Prediction cache hits", registry=r)
        self.cache_misses = Counter("nfl_mlops_cache_misses_total", "Prediction cache misses", registry=r)
        self.log_queue = Gauge(
            "nfl_mlops_prediction_log_queued", "Predictions waiting to be written", registry=r
        )
        self.serving_version = Gauge("nfl_mlops_serving_version", "Version of the stable arm", registry=r)
        self.arm_weight = Gauge(
            "nfl_mlops_arm_weight",
            "Percent of traffic on each arm of the rollout this replica serves (shadow arms: 0)",
            ["arm", "model_version"],
            registry=r,
        )
        self.rollout_actions = Counter(
            "nfl_mlops_rollout_actions_total",
            "Rollout decisions this replica's driver applied (promote, rollback, step, confirm, ...)",
            ["action"],
            registry=r,
        )

    def set_arms(self, arms: dict) -> None:
        """The served traffic split, replacing the previous one (arms that ended disappear)."""
        self.arm_weight.clear()
        for arm, spec in arms.items():
            self.arm_weight.labels(arm, str(spec.get("version"))).set(float(spec.get("weight", 0.0) or 0.0))
