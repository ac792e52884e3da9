"""One monitoring check of a prediction-log window against a version's reference profile (plain Python).

The stages (each a function, each a Prefect task in `tasks/drift.py`, each timed by `bench/monitoring.py`):

1. `window_descriptors`: text descriptors + prediction columns of the window (vectorised, ~1 s per 100k);
2. `descriptor_drift`: Evidently `ValueDrift` per descriptor and prediction column (`drift.detect_drift`);
3. `window_embedding_drift`: base-encoder embeddings of a seeded window sample vs. the reference sample
   (`embeddings.embedding_drift`);
4. `window_performance`: observed metrics from feedback labels, the label-free estimate otherwise
   (`performance.assess_performance`);
5. `MonitoringResult.combine`: per-signal verdicts, the drift share over all signals (embedding
   included), the payload, the markdown summary and which event to emit (`alerts`).

`monitor_window` runs 1-5 in order and returns the stage timings as well.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nfl_mlops.monitoring.drift import DriftConfig, DriftResult, detect_drift
from nfl_mlops.monitoring.embeddings import (
    EMBEDDING_COLUMN,
    EmbeddingDrift,
    embedding_drift,
    get_encoder,
    sample_indices,
)
from nfl_mlops.monitoring.performance import (
    ESTIMATE_MAX_SEPARABILITY,
    PERFORMANCE_ESTIMATOR,
    PerformanceResult,
    assess_performance,
)
from nfl_mlops.monitoring.reference import (
    CATEGORICAL,
    DESCRIPTORS,
    NUMERICAL,
    PREDICTIONS,
    ReferenceProfile,
    monitoring_frame,
    prediction_summary,
)
from nfl_mlops.monitoring.thresholds import (
    DRIFT_CAT_METHOD,
    DRIFT_COLUMN_METHODS,
    DRIFT_COLUMN_THRESHOLD,
    DRIFT_COLUMN_THRESHOLDS,
    DRIFT_NUM_METHOD,
    DRIFT_SHARE_THRESHOLD,
    EMBEDDING_AUC_THRESHOLD,
    EMBEDDING_SAMPLE_SIZE,
    MIN_LABELLED,
    PERFORMANCE_JUDGE_LEVEL,
    PERFORMANCE_MAX_DROP,
    PERFORMANCE_METRICS,
    SIGNAL_GROUPS,
)

DRIFT_EVENT = "drift.detected"
DEGRADED_EVENT = "performance.degraded"
FAMILIES = {
    **{c: "text" for c in DESCRIPTORS},
    **{c: "prediction" for c in PREDICTIONS},
    EMBEDDING_COLUMN: "embedding",
}
"""Which family each signal belongs to (text descriptors, predictions, embeddings)."""


@dataclass(frozen=True)
class MonitoringConfig:
    """Thresholds and sample sizes of one check (defaults from `thresholds.py`)."""

    share_threshold: float = DRIFT_SHARE_THRESHOLD
    num_method: str | None = DRIFT_NUM_METHOD
    cat_method: str | None = DRIFT_CAT_METHOD
    column_threshold: float | None = DRIFT_COLUMN_THRESHOLD
    column_methods: Mapping[str, str] = field(default_factory=lambda: dict(DRIFT_COLUMN_METHODS), hash=False)
    column_thresholds: Mapping[str, float] = field(
        default_factory=lambda: dict(DRIFT_COLUMN_THRESHOLDS), hash=False
    )
    embedding_sample: int = EMBEDDING_SAMPLE_SIZE
    embedding_threshold: float = EMBEDDING_AUC_THRESHOLD
    metrics: tuple[str, ...] = PERFORMANCE_METRICS
    max_drop: float = PERFORMANCE_MAX_DROP
    judge_level: float = PERFORMANCE_JUDGE_LEVEL
    min_labelled: int = MIN_LABELLED
    estimator: str = PERFORMANCE_ESTIMATOR
    """The label-free estimate that decides without enough feedback labels (the other is reported beside it)."""
    max_separability: float = ESTIMATE_MAX_SEPARABILITY
    """At or above this embedding-drift AUC the estimate is not trusted to decide degradation alone."""
    seed: int = 0
    groups: Mapping[str, str] = field(default_factory=lambda: dict(SIGNAL_GROUPS), hash=False)
    exclude: tuple[str, ...] = ()
    """Signals left out (e.g. the keyword-rule ones, `topic` and `n_nfl_entities`, or `embedding`)."""

    @property
    def drift(self) -> DriftConfig:
        return DriftConfig(
            share_threshold=self.share_threshold,
            num_method=self.num_method,
            cat_method=self.cat_method,
            per_column_threshold=self.column_threshold,
            seed=self.seed,
            column_methods=dict(self.column_methods),
            groups=dict(self.groups),
            column_thresholds=dict(self.column_thresholds),
        )


def window_descriptors(window: pd.DataFrame, reference: ReferenceProfile) -> pd.DataFrame:
    """The window's descriptor and prediction columns (the reference vocabulary gives the OOV share)."""
    return monitoring_frame(window["text"], window["label"], window["confidence"], reference.vocabulary)


def descriptor_drift(
    reference: ReferenceProfile,
    current: pd.DataFrame,
    config: MonitoringConfig = MonitoringConfig(),
    report_dir: Path | None = None,
    name: str = "drift",
    timestamp: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
) -> DriftResult:
    """Evidently drift of every descriptor and prediction column (HTML + JSON report in `report_dir`)."""
    from nfl_mlops.monitoring.workspace import DRIFT_TAG

    numerical = [c for c in NUMERICAL if c not in config.exclude]
    categorical = [c for c in CATEGORICAL if c not in config.exclude]
    return detect_drift(
        reference.frame,
        current,
        numerical,
        categorical,
        config.drift,
        report_dir=report_dir,
        name=name,
        timestamp=timestamp,
        tags=[DRIFT_TAG],
        metadata=dict(metadata or {}),
    )


def window_embedding_drift(
    reference: ReferenceProfile,
    texts: Sequence[str],
    config: MonitoringConfig = MonitoringConfig(),
    encoder: Any = None,
) -> EmbeddingDrift | None:
    """Embedding drift of a seeded sample of the window's texts; None when the reference has no embeddings."""
    if (
        reference.embeddings is None
        or len(reference.embeddings) < 30
        or len(texts) < 30
        or EMBEDDING_COLUMN in config.exclude
    ):
        return None
    if encoder is None and not reference.encoder:
        return None  # embeddings of an unknown encoder cannot be compared with anything
    enc = encoder or get_encoder(reference.encoder)
    texts = list(texts)
    idx = sample_indices(len(texts), config.embedding_sample, config.seed)
    current = enc.encode([texts[i] for i in idx])
    return embedding_drift(
        reference.embeddings,
        current,
        threshold=config.embedding_threshold,
        encoder=reference.encoder or enc.name,
    )


def window_performance(
    reference: ReferenceProfile,
    test_metrics: Mapping[str, Any] | None,
    window: pd.DataFrame,
    config: MonitoringConfig = MonitoringConfig(),
    embedding: EmbeddingDrift | None = None,
) -> PerformanceResult:
    """Observed (feedback) and estimated (label-free) performance of the window vs. the test metrics.

    The embedding-drift domain classifier's AUC (`embedding`) says whether the estimate can be trusted: a
    window it tells apart from the reference almost perfectly gets `trusted: false`.
    """
    true = window["true_label"].tolist() if "true_label" in window.columns else None
    return assess_performance(
        reference.frame,
        test_metrics,
        window["label"].tolist(),
        window["confidence"].tolist(),
        true,
        metrics=config.metrics,
        max_drop=config.max_drop,
        min_labelled=config.min_labelled,
        judge_level=config.judge_level,
        seed=config.seed,
        estimator=config.estimator,
        separability=embedding.score if embedding is not None else None,
        max_separability=config.max_separability,
    )


def alerts(drift_detected: bool, degraded: bool) -> list[str]:
    """The event a check emits: one per check, so that one episode starts one retraining.

    Drift takes precedence (its payload carries the performance verdict too); a degradation without
    drift (e.g. a label shift that only feedback shows) emits `performance.degraded`.
    """
    if drift_detected:
        return [DRIFT_EVENT]
    if degraded:
        return [DEGRADED_EVENT]
    return []


@dataclass(frozen=True)
class MonitoringResult:
    """Everything one check found; `drift` counts the embedding signal in its share and verdict."""

    drift: DriftResult
    embedding: EmbeddingDrift | None
    performance: PerformanceResult
    signals: dict[str, dict[str, Any]]  # per signal: family, reference/window summary numbers
    predictions: dict[str, Any]  # window vs. reference prediction distributions
    n_window: int
    notes: tuple[str, ...] = field(default=())

    @classmethod
    def combine(
        cls,
        reference: ReferenceProfile,
        current: pd.DataFrame,
        drift: DriftResult,
        embedding: EmbeddingDrift | None,
        performance: PerformanceResult,
    ) -> MonitoringResult:
        notes = []
        if embedding is not None:
            drift = drift.with_signal(embedding.as_column())
        else:
            notes.append(
                "no embedding drift: the reference profile has no embeddings (or the window is too small)"
            )
        return cls(
            drift=drift,
            embedding=embedding,
            performance=performance,
            signals=signal_summaries(reference.frame, current, embedding),
            predictions={
                "reference": prediction_summary(
                    reference.frame["predicted_label"], reference.frame["confidence"]
                ),
                "window": prediction_summary(current["predicted_label"], current["confidence"]),
            },
            n_window=len(current),
            notes=tuple(notes),
        )

    @property
    def events(self) -> list[str]:
        return alerts(self.drift.dataset_drift, self.performance.degraded)

    @property
    def alarm(self) -> bool:
        """Drift or degradation in this check (an episode opens only when the rule says so)."""
        return bool(self.drift.dataset_drift or self.performance.degraded)

    def payload(self) -> dict[str, Any]:
        """JSON-serialisable: the drift payload (per signal), embedding and performance details."""
        perf = self.performance.to_payload()
        out = {
            **self.drift.to_payload(),
            "embedding": self.embedding.to_payload() if self.embedding else None,
            "performance": perf,
            "performance_degraded": self.performance.degraded,
            "alarm": self.alarm,
            "predictions": self.predictions,
            "signals": self.signals,
            "reason": reason_for(self.drift, self.performance),
        }
        return out

    def event_payload(self) -> dict[str, Any]:
        """The payload of the emitted event: verdicts and numbers per signal, the performance headline.

        The full payload (signal summaries, prediction distributions, calibration) stays in the
        MonitoringRun row and the flow's return value; an event carries what an automation or a
        notification needs.
        """
        full = self.payload()
        perf = full["performance"]
        keep = (
            "performance_degraded",
            "source",
            "metric",
            "degraded_metrics",
            "value",
            "lower",
            "upper",
            "baseline",
            "reference_value",
            "drop",
            "drops",
            "max_drop",
            "n_window",
            "n_labelled",
            "estimator",
            "trusted",
            "trust_reason",
        )
        out = {k: v for k, v in full.items() if k not in ("signals", "predictions", "performance")}
        out["performance"] = {k: perf[k] for k in keep}
        return out

    def summary_values(self) -> dict[str, float | None]:
        """The headline numbers (the Evidently summary snapshot plots them over time)."""
        p = self.performance
        obs, est = p.observed or {}, p.estimated or {}
        return {
            "drift_share": self.drift.drift_share,
            "n_drifted": float(len(self.drift.drifted_columns)),
            "embedding_auc": self.embedding.score if self.embedding else None,
            "observed_accuracy": obs["accuracy"].value if "accuracy" in obs else None,
            "observed_macro_f1": obs["macro_f1"].value if "macro_f1" in obs else None,
            "estimated_accuracy": est["accuracy"].value if "accuracy" in est else None,
            "estimated_macro_f1": est["macro_f1"].value if "macro_f1" in est else None,
            "test_accuracy": p.reference.get("accuracy"),
            "test_macro_f1": p.reference.get("macro_f1"),
            "n_predictions": float(self.n_window),
            "n_labelled": float(p.n_labelled),
        }

    def to_markdown(self, title: str = "") -> str:
        """The run summary: verdicts, the per-signal table with numbers, performance, events."""
        d = self.drift
        verdict = "**Drift detected**" if d.dataset_drift else "No drift"
        lines = [
            f"## {title}" if title else "",
            f"{verdict}: {len(d.drifted_columns)} of {len(d.columns)} signals drifted, "
            f"{len(d.drifted_groups)} of {len(d.group_drift)} signal groups (share "
            f"{d.drift_share:.2f}, threshold {d.share_threshold:.2f}); window {self.n_window} predictions "
            f"(descriptor tests on {d.n_current}), reference {d.n_reference} test rows.",
            "",
            "| family | signal | reference | window | method | score | threshold | drifted |",
            "|---|---|---|---|---|---:|---:|---|",
        ]
        for c in d.columns:
            s = self.signals.get(c.column, {})
            lines.append(
                f"| {FAMILIES.get(c.column, '-')} | {c.column} | {s.get('reference', '-')} | "
                f"{s.get('window', '-')} | {c.method} | {c.score:.4g} | {c.threshold:.4g} | "
                f"{'**yes**' if c.drifted else 'no'} |"
            )
        lines += [
            "",
            "p-value tests (ks, chisquare, z) drift when score < threshold; distances (wasserstein, "
            "jensenshannon) when score >= threshold; the embedding domain classifier when its ROC AUC "
            "> threshold.",
        ]
        if self.embedding:
            e = self.embedding
            lines.append(
                f"Embedding drift: AUC {e.score:.3f} on {e.n_current} sampled window texts vs. "
                f"{e.n_reference} reference texts ({e.encoder}); sampling error under no drift "
                f"+-{e.null_se:.3f} (1 SE), i.e. {e.z:.1f} SE above chance."
            )
        if d.skipped_columns:
            lines.append(f"Skipped (no values on one side): {', '.join(d.skipped_columns)}")
        lines += ["", "### Performance", "", self.performance.to_markdown()]
        events = self.events
        lines += [
            "### Alerts",
            "",
            (
                f"Alarm `nfl-mlops.{events[0]}` (emitted when it opens a drift episode, "
                "see the episode section)."
                if events
                else "No alarm."
            ),
        ]
        lines += [f"- {n}" for n in self.notes]
        if d.html_path:
            lines += ["", f"Evidently report: `{d.html_path}`"]
        return "\n".join(lines).lstrip("\n") + "\n"


def reason_for(drift: DriftResult, performance: PerformanceResult) -> str:
    """One line for the event payload (the retraining flow records it as its reason)."""
    parts = []
    if drift.dataset_drift:
        parts.append(
            f"drift: {len(drift.drifted_columns)}/{len(drift.columns)} signals "
            f"({', '.join(drift.drifted_columns)})"
        )
    if performance.degraded:
        parts.append(f"performance degraded: {performance.reason}")
    return "; ".join(parts) or "no drift"


def signal_summaries(
    reference: pd.DataFrame, current: pd.DataFrame, embedding: EmbeddingDrift | None = None
) -> dict[str, dict[str, Any]]:
    """Per signal, a short reference vs. window description: means of numeric, top value of categorical."""
    out: dict[str, dict[str, Any]] = {}
    for col in NUMERICAL:
        out[col] = {
            "family": FAMILIES[col],
            "reference": f"mean {_mean(reference[col])}",
            "window": f"mean {_mean(current[col])}",
        }
    for col in CATEGORICAL:
        out[col] = {"family": FAMILIES[col], "reference": _top(reference[col]), "window": _top(current[col])}
    if embedding is not None:
        out[EMBEDDING_COLUMN] = {
            "family": "embedding",
            "reference": f"{embedding.n_reference} texts",
            "window": f"{embedding.n_current} sampled",
        }
    return out


def monitor_window(
    window: pd.DataFrame,
    reference: ReferenceProfile,
    test_metrics: Mapping[str, Any] | None = None,
    config: MonitoringConfig = MonitoringConfig(),
    report_dir: Path | None = None,
    name: str = "drift",
    timestamp: datetime | None = None,
    encoder: Any = None,
) -> tuple[MonitoringResult, dict[str, float]]:
    """Run stages 1-5 on a window (columns text, label, confidence[, true_label]); returns the timings too."""
    timings: dict[str, float] = {}

    def timed(stage: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[stage] = time.perf_counter() - start
        return out

    current = timed("descriptors", window_descriptors, window, reference)
    drift = timed(
        "evidently_drift", descriptor_drift, reference, current, config, report_dir, name, timestamp
    )
    emb = timed("embeddings", window_embedding_drift, reference, window["text"].tolist(), config, encoder)
    perf = timed("performance", window_performance, reference, test_metrics, window, config, emb)
    result = timed("combine", MonitoringResult.combine, reference, current, drift, emb, perf)
    return result, timings


def _mean(values: pd.Series) -> str:
    v = pd.to_numeric(values, errors="coerce")
    return "-" if v.isna().all() else f"{float(np.nanmean(v)):.3g}"


def _top(values: pd.Series) -> str:
    shares = values.dropna().astype(str).value_counts(normalize=True)
    if shares.empty:
        return "-"
    return ", ".join(f"{k} {v:.2f}" for k, v in shares.head(2).items())
