"""One monitoring check end to end on small synthetic windows (Evidently real, the encoder a stand-in)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nfl_mlops import LABELS
from nfl_mlops.monitoring.drift import ColumnDrift, DriftResult
from nfl_mlops.monitoring.monitor import (
    DEGRADED_EVENT,
    DRIFT_EVENT,
    FAMILIES,
    MonitoringConfig,
    alerts,
    monitor_window,
)
from nfl_mlops.monitoring.reference import CATEGORICAL, NUMERICAL, build_reference
from tests.unit.test_monitoring_reference import HashEncoder

AIRLINE = [
    "@united flight {i} delayed again and no one at the gate",
    "@delta thanks for the quick rebooking {i}, great crew",
    "@jetblue lost my bag on flight {i}, customer service is useless",
    "@americanair seat {i} was fine, on time arrival",
    "@usairways on hold for {i} minutes, worst airline",
]
NFL = [
    "Brady and the Patriots deflated balls {i} #DeflateGate #SB49",
    "Seahawks fans ready for the Super Bowl {i} #GoHawks",
    "Belichick press conference {i} about the footballs, NFL investigating",
]


def texts(templates, n, seed):
    r = np.random.default_rng(seed)
    return [templates[r.integers(len(templates))].format(i=r.integers(10_000)) for _ in range(n)]


def window(text_list, seed, conf=(0.55, 1.0), labels=None, p=(0.6, 0.2, 0.2)):
    r = np.random.default_rng(seed)
    n = len(text_list)
    pred = r.choice(LABELS, n, p=list(p))
    return pd.DataFrame(
        {
            "text": text_list,
            "label": pred,
            "confidence": r.uniform(*conf, n),
            "true_label": labels if labels is not None else [None] * n,
        }
    )


@pytest.fixture(scope="module")
def reference():
    r = np.random.default_rng(0)
    test_texts = texts(AIRLINE, 300, 1)
    proba = r.dirichlet([4, 1, 1], 300)
    pred = proba.argmax(axis=1)
    # the test labels agree with the prediction about as often as its confidence says
    agree = r.uniform(size=300) < proba.max(axis=1)
    truth = [LABELS[p] if a else LABELS[(p + 1) % 3] for p, a in zip(pred, agree, strict=True)]
    return build_reference(
        texts(AIRLINE, 600, 2), test_texts, proba, truth, encoder=HashEncoder(), embedding_sample=200
    )


TEST_METRICS = {"accuracy": 0.72, "macro_f1": 0.6}


def test_in_distribution_window_is_calm(reference):
    result, timings = monitor_window(
        window(texts(AIRLINE, 400, 3), 3, conf=(0.5, 1.0), p=(0.7, 0.15, 0.15)),
        reference,
        TEST_METRICS,
        encoder=HashEncoder(),
    )
    assert len(result.drift.columns) == len(NUMERICAL) + len(CATEGORICAL) + 1  # + the embedding signal
    assert result.embedding is not None and not result.embedding.drifted
    assert not result.drift.dataset_drift
    assert result.events == []
    assert set(timings) == {"descriptors", "evidently_drift", "embeddings", "performance", "combine"}


def test_topic_drift_is_seen_by_descriptors_and_embeddings(reference, tmp_path):
    result, _ = monitor_window(
        window(texts(NFL, 400, 4), 4),
        reference,
        TEST_METRICS,
        encoder=HashEncoder(),
        report_dir=tmp_path,
        name="nfl",
    )
    drifted = set(result.drift.drifted_columns)
    assert {"topic", "n_nfl_entities", "n_hashtags", "oov_share", "embedding"} <= drifted
    assert result.drift.dataset_drift and result.events == [DRIFT_EVENT]
    methods = {c.column: c.method for c in result.drift.columns}
    # the monitoring defaults (thresholds.py), read back from Evidently's results
    assert methods["n_chars"] == "wasserstein" and methods["topic"] == "jensenshannon"
    assert methods["n_nfl_entities"] == "jensenshannon"
    assert (tmp_path / "nfl.html").exists()

    payload = json.loads(json.dumps(result.payload()))
    assert payload["dataset_drift"] and payload["embedding"]["drifted"]
    assert payload["columns"]["embedding"]["kind"] == "emb"
    assert payload["signals"]["topic"]["window"].startswith("nfl")
    assert payload["reason"].startswith("drift: ")
    assert payload["performance"]["source"] == "estimated"

    event = json.loads(json.dumps(result.event_payload()))
    assert event["drift_share"] == payload["drift_share"] and event["reason"] == payload["reason"]
    assert "signals" not in event and event["performance"]["source"] == "estimated"
    assert len(json.dumps(event)) < len(json.dumps(payload))

    md = result.to_markdown("nfl window")
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| family")]
    signal_rows = [r for r in rows if r.split("|")[1].strip() in {"text", "prediction", "embedding"}]
    assert len(signal_rows) == len(result.drift.columns)
    assert "| embedding | embedding |" in md and "SE above chance" in md
    assert "Alarm `nfl-mlops.drift.detected`" in md


def test_feedback_labels_give_observed_performance(reference):
    w = window(texts(AIRLINE, 300, 5), 5)
    w["true_label"] = [LABELS[(LABELS.index(p) + 1) % 3] for p in w["label"]]  # every prediction wrong
    result, _ = monitor_window(w, reference, TEST_METRICS, encoder=HashEncoder())
    perf = result.performance
    assert perf.source == "observed" and perf.observed["accuracy"].value == 0.0
    assert perf.degraded and result.payload()["performance_degraded"]
    values = result.summary_values()
    assert values["observed_accuracy"] == 0.0 and values["test_accuracy"] == 0.72
    assert values["n_labelled"] == 300.0


def test_without_reference_embeddings_the_signal_is_left_out(reference):
    from dataclasses import replace

    bare = replace(reference, embeddings=None)
    result, _ = monitor_window(window(texts(AIRLINE, 200, 6), 6), bare, TEST_METRICS)
    assert result.embedding is None
    assert "embedding" not in {c.column for c in result.drift.columns}
    assert any("no embedding drift" in n for n in result.notes)


def test_config_thresholds_reach_the_tests(reference):
    config = MonitoringConfig(
        share_threshold=0.05, embedding_threshold=0.99, column_methods={}, num_method="ks"
    )
    result, _ = monitor_window(
        window(texts(AIRLINE, 200, 7), 7), reference, TEST_METRICS, config=config, encoder=HashEncoder()
    )
    assert result.drift.share_threshold == 0.05
    assert result.embedding.threshold == 0.99  # above the sampling-error floor, so the configured one
    assert {c.method for c in result.drift.columns if c.kind == "num"} == {"ks"}


@pytest.mark.parametrize(
    ("drift", "degraded", "expected"),
    [
        (False, False, []),
        (True, False, [DRIFT_EVENT]),
        (False, True, [DEGRADED_EVENT]),
        (True, True, [DRIFT_EVENT]),
    ],
)
def test_one_event_per_check(drift, degraded, expected):
    assert alerts(drift, degraded) == expected


def test_with_signal_recounts_the_share():
    cols = [ColumnDrift(f"c{i}", "num", "wasserstein", 0.2 if i < 2 else 0.0, 0.1, i < 2) for i in range(9)]
    base = DriftResult.from_columns(cols, share_threshold=0.3, n_reference=100, n_current=100)
    assert not base.dataset_drift and base.drift_share == pytest.approx(2 / 9)
    more = base.with_signal(ColumnDrift("embedding", "emb", "domain_classifier_auc", 0.9, 0.55, True))
    assert more.drift_share == pytest.approx(3 / 10) and more.dataset_drift
    assert more.drifted_columns[-1] == "embedding"
    with pytest.raises(ValueError, match="already"):
        more.with_signal(ColumnDrift("embedding", "emb", "x", 0.9, 0.55, True))


def test_every_signal_has_a_family():
    assert set(FAMILIES) == set(NUMERICAL) | set(CATEGORICAL) | {"embedding"}
